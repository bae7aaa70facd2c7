"""The whole pipeline on real servers, run as a user runs it: the REST catalog, or the SQL catalog on PostgreSQL,
each with its warehouse and landing zone in SeaweedFS's S3.

One lakehouse per setup serves the module: three days landed in the bucket, found by the landing sensor and
run through ``daily_job`` once (``ingested``). Every other test works on days of its own, so each asserts
exactly what it did whatever ran before it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline import landing_sensor
from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import catalog_properties, open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS
from sonik_pipeline.maintenance.files import referenced_files
from sonik_pipeline.settings import CATALOG_NAME
from sonik_pipeline_tests.conftest import (
    SMALL_DAY_EVENTS,
    check_results,
    op_output_metadata,
    run_asset_job,
    sonik,
)
from sonik_pipeline_tests.real_servers.conftest import Lakehouse, module_lakehouse, set_environment, stored

NOW = dt.datetime(2026, 4, 21, 12, tzinfo=dt.UTC)  # the landing sensor's clock: the 20th is the last complete day
DAYS = ["2026-04-17", "2026-04-18", "2026-04-19"]  # landed and run by daily_job once, for every test
LATE_DAY = dt.date(2026, 4, 20)  # the late-file test's
SMALL_FILES_DAY = dt.date(2026, 4, 12)  # the maintenance test's
TIME_TRAVEL_DAY = dt.date(2026, 4, 13)  # the time-travel test's


def tick(defs: dg.Definitions, cursor: str | None = None) -> tuple[list[tuple[str, str]], str | None]:
    """One evaluation of the landing sensor: the day ranges it requests, and its cursor."""
    with dg.build_sensor_context(cursor=cursor, instance=dg.DagsterInstance.get(), resources=defs.resources) as ctx:
        result = defs.resolve_sensor_def("landing_sensor")(ctx)
    if isinstance(result, dg.SkipReason):
        return [], cursor
    ranges = [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in result.run_requests
    ]
    return ranges, result.cursor


@dataclass(frozen=True)
class Ingested:
    """The module's lakehouse after its three days went from the bucket through the sensor and daily_job."""

    lakehouse: Lakehouse
    requested: list[tuple[str, str]]
    quiet_after: list[tuple[str, str]]
    daily: dg.ExecuteInProcessResult


@pytest.fixture(scope="module", params=["rest", "postgres"])
def ingested(request: pytest.FixtureRequest, seaweedfs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingested]:
    folder = tmp_path_factory.mktemp(f"pipeline_{request.param}")
    with module_lakehouse(request.param, seaweedfs, folder) as lakehouse, pytest.MonkeyPatch.context() as patch:
        patch.setattr(landing_sensor, "now", lambda: NOW)
        # The app drops the days' events into the bucket; the sensor finds them; its request runs.
        code, _, err = sonik("landing", "--start", DAYS[0], "--end", DAYS[-1], "--events", str(SMALL_DAY_EVENTS))
        assert code == 0, err
        defs = build_definitions(lakehouse.settings)
        requested, _ = tick(defs)
        daily = run_asset_job(defs, "daily_job", DAYS[0], DAYS[-1])
        quiet_after, _ = tick(defs)
        yield Ingested(lakehouse, requested, quiet_after, daily)


@pytest.fixture
def lakehouse(ingested: Ingested, monkeypatch: pytest.MonkeyPatch) -> Lakehouse:
    """The module's lakehouse, its environment set again after the root conftest's isolation cleared it."""
    set_environment(monkeypatch, ingested.lakehouse.environment)
    monkeypatch.setattr(landing_sensor, "now", lambda: NOW)
    return ingested.lakehouse


@pytest.fixture
def catalog(lakehouse: Lakehouse) -> Catalog:
    return open_catalog(CATALOG_NAME, lakehouse.settings.catalog_uri, lakehouse.settings.warehouse)


def _rows_per_day(catalog: Catalog, days: list[str]) -> list[int]:
    plays = catalog.load_table(PLAYS.identifier)
    return [plays.scan(row_filter=played_at_filter(dt.date.fromisoformat(d))).count() for d in days]


def test_plays_every_mart_and_check_from_the_landing_bucket(
    ingested: Ingested, lakehouse: Lakehouse, catalog: Catalog
) -> None:
    # Given three days the app dropped into the bucket, When the sensor's request ran daily_job (the fixture)
    daily = ingested.daily

    # Then the sensor asked for exactly those days, and nothing once they were ingested
    assert ingested.requested == [(DAYS[0], DAYS[-1])]
    assert ingested.quiet_after == []
    # every asset of daily_job was materialized for every day, and every check of the job ran and passed
    assert daily.success
    job = daily.job_def
    wanted_assets = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    materialized = {e.asset_key.to_user_string() for e in daily.get_asset_materialization_events()}
    assert materialized == wanted_assets
    checks = check_results(daily)
    wanted_checks = {(k.asset_key.to_user_string(), k.name) for k in job.asset_layer.asset_graph.asset_check_keys}
    assert set(checks) == wanted_checks and all(checks.values()), checks
    [source] = {m.metadata["source"].value for m in daily.asset_materializations_for_node("plays")}
    assert source == f"landing zone {lakehouse.settings.landing_dir}"
    # each day holds its events once, read back from the bucket; the marts add up to them
    assert _rows_per_day(catalog, DAYS) == [SMALL_DAY_EVENTS] * len(DAYS)
    code, out, err = sonik(
        "sql", "SELECT day::VARCHAR AS day, sum(plays)::BIGINT AS plays FROM music_marts.daily_device_mix "
        "GROUP BY 1 ORDER BY 1", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == [{"day": d, "plays": SMALL_DAY_EVENTS} for d in DAYS]
    # every table lies in the warehouse, its files in the bucket and none on local disk
    s3 = lakehouse.server.filesystem()
    for name in catalog.list_namespaces():
        for identifier in catalog.list_tables(name):
            table = catalog.load_table(identifier)
            assert table.location().startswith(f"{lakehouse.settings.warehouse}/"), table.location()
            assert table.metadata_location.removeprefix("s3://") in stored(s3, table.location())
    assert not list(lakehouse.settings.home.rglob("*.parquet")), "nothing of the warehouse may land on local disk"


def test_a_late_file_in_the_bucket_is_ingested_again(lakehouse: Lakehouse, catalog: Catalog) -> None:
    # Given a landing day ingested from the bucket
    settings, defs = lakehouse.settings, build_definitions(lakehouse.settings)
    properties = catalog_properties(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    write_landing_day(settings.landing_dir, LATE_DAY, synthetic_batch(LATE_DAY, 60), files=2, properties=properties)
    assert tick(defs)[0] == [(str(LATE_DAY), str(LATE_DAY))]
    assert run_asset_job(defs, "plays_job", str(LATE_DAY)).success

    # When a phone's late upload lands in the day's prefix (with an upload still in progress beside it)
    s3, landing = lakehouse.server.filesystem(), settings.landing_dir.removeprefix("s3://")
    staged = write_landing_day(
        f"{settings.landing_dir}/staging",
        LATE_DAY,
        synthetic_batch(LATE_DAY, 9, seed=11),
        files=1,
        properties=properties,
    )
    s3.move(staged[0].removeprefix("s3://"), f"{landing}/plays/{LATE_DAY}/late-upload.jsonl")
    with s3.open_output_stream(f"{landing}/plays/{LATE_DAY}/next.jsonl.tmp") as partial:
        partial.write(b"{")
    ranges, cursor = tick(defs)

    # Then the sensor asks for that day once, and its run adds exactly the late plays
    assert ranges == [(str(LATE_DAY), str(LATE_DAY))]
    assert tick(defs, cursor)[0] == []
    run = run_asset_job(defs, "plays_job", str(LATE_DAY))
    assert run.success
    [metadata] = [m.metadata for m in run.asset_materializations_for_node("plays") if m.partition]
    assert (metadata["late_files"].value, metadata["late_events"].value) == (1, 9)
    assert _rows_per_day(catalog, [str(LATE_DAY)]) == [69]
    assert tick(defs, cursor)[0] == []


def test_every_maintenance_job_leaves_only_referenced_files_in_the_bucket(
    lakehouse: Lakehouse, catalog: Catalog
) -> None:
    # Given late micro-batches (small files) and a crashed writer's file in the table's data folder
    defs, s3 = build_definitions(lakehouse.settings), lakehouse.server.filesystem()
    plays = catalog.load_table(PLAYS.identifier)
    for i in range(6):
        batch = synthetic_batch(SMALL_FILES_DAY, 50, batch=100 + i, seed=7)
        plays.append(batch.cast(plays.schema().as_arrow()))
    rows = catalog.load_table(PLAYS.identifier).scan().count()
    stray = f"{plays.location().removeprefix('s3://')}/data/left-by-a-crash.parquet"
    with s3.open_output_stream(stray) as out:
        out.write(b"x" * 1_000)

    # When every maintenance job runs, as their schedules would, with the windows at zero
    compaction = defs.resolve_job_def("compaction_job").execute_in_process(
        run_config={"ops": {"compact_tables": {"config": {"skip_recent_days": 0}}}}, instance=dg.DagsterInstance.get()
    )
    manifests = defs.resolve_job_def("manifests_job").execute_in_process(instance=dg.DagsterInstance.get())
    before_expiry = stored(s3, plays.location())
    expiry = defs.resolve_job_def("expiry_job").execute_in_process(
        run_config={"ops": {"expire_table_snapshots": {"config": {"retention_days": 0, "retain_last": 1}}}},
        instance=dg.DagsterInstance.get(),
    )
    orphans = defs.resolve_job_def("orphans_job").execute_in_process(
        run_config={
            "ops": {"remove_orphans": {"config": {"older_than_hours": 0, "i_know_no_writer_is_running": True}}}
        },
        instance=dg.DagsterInstance.get(),
    )

    # Then each did its work, no row changed, and the bucket holds exactly what the one snapshot left references
    assert compaction.success and manifests.success and expiry.success and orphans.success
    compacted = op_output_metadata(compaction, "compact_tables")
    assert compacted["files_before"].value > compacted["files_after"].value
    rewritten = op_output_metadata(manifests, "rewrite_table_manifests")["tables"].value["music.plays"]
    assert rewritten["manifests_before"] > rewritten["manifests_after"]
    assert op_output_metadata(expiry, "expire_table_snapshots")["total_bytes_deleted"].value > 0
    plays = catalog.load_table(PLAYS.identifier)
    assert len(plays.snapshots()) == 1 and plays.scan().count() == rows
    after = stored(s3, plays.location())
    assert stray in before_expiry and stray not in after
    assert sum(after.values()) < sum(before_expiry.values())
    assert {k for k in after if "/data/" in k} == {
        k.removeprefix("s3://") for k, kind in referenced_files(plays).items() if kind == "data_files"
    }
    for identifier in [t for ns in catalog.list_namespaces() for t in catalog.list_tables(ns)]:
        table = catalog.load_table(identifier)
        assert len(table.snapshots()) <= 1, identifier
        data = {k for k in stored(s3, table.location()) if "/data/" in k}
        assert data == {k.removeprefix("s3://") for k, kind in referenced_files(table).items() if kind == "data_files"}


def test_time_travel_rollback_and_sonik_sql(lakehouse: Lakehouse, catalog: Catalog) -> None:
    # Given a day ingested, then re-ingested with other events
    def day_rows() -> int:
        code, out, err = sonik("sql", f"SELECT count(*) AS n FROM music.plays WHERE played_at::DATE = '{day}'",
                               "--format", "csv")  # fmt: skip
        assert code == 0, err
        return int(out.splitlines()[1])

    day = TIME_TRAVEL_DAY
    ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 300, seed=1), "first")])
    good = catalog.load_table(PLAYS.identifier).current_snapshot()
    ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 20, seed=2), "bad upstream")], max_shrink_share=1.0)
    assert day_rows() == 20

    # When the day is read as of the good snapshot, and plays is rolled back to it
    code, out, err = sonik(
        "sql", f"SELECT count(*) AS n FROM music.plays WHERE played_at::DATE = '{day}'",
        "--as-of", dt.datetime.fromtimestamp(good.timestamp_ms / 1000, dt.UTC).isoformat(), "--format", "csv",
    )  # fmt: skip
    assert code == 0, err
    as_of = int(out.splitlines()[1])
    defs = build_definitions(lakehouse.settings)
    rollback = defs.resolve_job_def("rollback_job").execute_in_process(
        run_config={
            "ops": {"rollback_table": {"config": {"table": "music.plays", "to_snapshot_id": good.snapshot_id}}}
        },
        instance=dg.DagsterInstance.get(),
    )

    # Then the old rows were there to read, and after the rollback they are current again
    assert as_of == 300
    assert rollback.success
    meta = op_output_metadata(rollback, "rollback_table")
    assert meta["snapshot_after"].value == str(good.snapshot_id)
    assert catalog.load_table(PLAYS.identifier).current_snapshot().snapshot_id == good.snapshot_id
    assert day_rows() == 300
    code, out, err = sonik("snapshots", "music.plays", "--format", "json")
    assert code == 0, err
    assert str(good.snapshot_id) in out
