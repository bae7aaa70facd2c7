"""A REST catalog given its warehouse by name (``PYICEBERG_CATALOG__SONIK__WAREHOUSE``), as Polaris, Lakekeeper,
Nessie and S3 Tables want, while ``SONIK_WAREHOUSE`` stays the storage root the deletion rule holds tables to.

SeaweedFS takes the table bucket's name (``lake``) as well as its location (``s3://lake``): its ``/v1/config``
answers the name with the bucket as the catalog's prefix.
"""

from __future__ import annotations

from collections.abc import Iterator

import dagster as dg
import pytest

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import STORAGE_ROOT, open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS
from sonik_pipeline.maintenance.files import referenced_files
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import DAY, SMALL_DAY_EVENTS, run_asset_job
from sonik_pipeline_tests.real_servers.conftest import (
    FILES_BUCKET,
    TABLE_BUCKET,
    Lakehouse,
    SeaweedFS,
    module_lakehouse,
    set_environment,
    stored,
)

NAMED = {"PYICEBERG_CATALOG__SONIK__WAREHOUSE": TABLE_BUCKET}  # the bucket's name, not s3://lake
NO_WINDOW = {"older_than_hours": 0, "i_know_no_writer_is_running": True}


@pytest.fixture(scope="module")
def rest_lakehouse(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lakehouse]:
    with module_lakehouse("rest", seaweedfs, tmp_path_factory.mktemp("named")) as lakehouse:
        yield lakehouse


@pytest.fixture
def lakehouse(rest_lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> Lakehouse:
    """The REST lakehouse with its warehouse named, synthetic plays (no landing zone needed here)."""
    set_environment(monkeypatch, {**rest_lakehouse.environment, **NAMED, "SONIK_SOURCE": "synthetic"})
    return rest_lakehouse


def _run(job: str, op: str, config: dict) -> dg.ExecuteInProcessResult:
    defs = build_definitions(Settings.from_env())
    return defs.resolve_job_def(job).execute_in_process(
        run_config={"ops": {op: {"config": config}}}, instance=dg.DagsterInstance.get(), raise_on_error=False
    )


def _data(keys: dict[str, int]) -> set[str]:
    return {k for k in keys if "/data/" in k}


def test_a_named_warehouse_keeps_tables_under_sonik_warehouse_and_maintenance_deletes_only_there(
    lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a day of plays ingested through the catalog opened with the warehouse's name
    settings, s3 = Settings.from_env(), lakehouse.server.filesystem()
    assert run_asset_job(build_definitions(settings), "plays_job", str(DAY)).success
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    plays = catalog.load_table(PLAYS.identifier)
    # the server took the name (it answers with the bucket as the catalog's prefix) and put the table in the
    # storage root
    assert (catalog.properties["warehouse"], catalog.properties["prefix"]) == (TABLE_BUCKET, TABLE_BUCKET)
    assert catalog.properties[STORAGE_ROOT] == settings.warehouse == f"s3://{TABLE_BUCKET}"
    assert plays.location() == f"{settings.warehouse}/music/plays"
    # then the day ingested again (its first files now unreferenced), late micro-batches, a crashed writer's file
    first_files = _data(stored(s3, plays.location()))
    assert run_asset_job(build_definitions(settings), "plays_job", str(DAY)).success
    plays = catalog.load_table(PLAYS.identifier)
    for i in range(3):
        plays.append(synthetic_batch(DAY, 20, batch=100 + i, seed=3).cast(plays.schema().as_arrow()))
    stray = f"{plays.location().removeprefix('s3://')}/data/left-by-a-crash.parquet"
    with s3.open_output_stream(stray) as out:
        out.write(b"x" * 1_000)
    before = stored(s3, plays.location())

    # When expiry runs on a lakehouse whose SONIK_WAREHOUSE is another root (as on a copied lakehouse)
    set_environment(monkeypatch, {**lakehouse.environment, **NAMED, "SONIK_WAREHOUSE": f"s3://{FILES_BUCKET}/copy"})
    refused = _run("expiry_job", "expire_table_snapshots", {"retention_days": 0, "retain_last": 1})

    # Then it refuses, the catalog's warehouse being a name notwithstanding, and nothing was deleted
    assert not refused.success
    [failure] = [e for e in refused.all_events if e.is_step_failure]
    assert f"outside the configured warehouse s3://{FILES_BUCKET}/copy" in failure.event_specific_data.error.message
    assert stored(s3, plays.location()) == before

    # When expiry and orphan removal run with SONIK_WAREHOUSE the bucket the tables are in
    set_environment(monkeypatch, {**lakehouse.environment, **NAMED, "SONIK_SOURCE": "synthetic"})
    expiry = _run("expiry_job", "expire_table_snapshots", {"retention_days": 0, "retain_last": 1})
    orphans = _run("orphans_job", "remove_orphans", NO_WINDOW)

    # Then the first ingest's files and the stray are gone from the bucket, what the one snapshot left
    # references is all that stays, and no row changed
    assert expiry.success and orphans.success
    plays = catalog.load_table(PLAYS.identifier)
    assert len(plays.snapshots()) == 1 and plays.scan().count() == SMALL_DAY_EVENTS + 60
    after = stored(s3, plays.location())
    assert first_files and first_files <= _data(before) and not first_files & _data(after)
    assert stray in before and stray not in after
    assert _data(after) == {
        k.removeprefix("s3://") for k, kind in referenced_files(plays).items() if kind == "data_files"
    }
