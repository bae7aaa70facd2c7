"""What is particular to a REST catalog, on SeaweedFS's: its credential stays a secret, a server that is down or
refuses the credential is one line, and the tables are where the project expects them."""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from pyiceberg.table import Transaction

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import DAY, run_asset_job, sonik
from sonik_pipeline_tests.real_servers.conftest import (
    TABLE_BUCKET,
    Lakehouse,
    SeaweedFS,
    module_lakehouse,
    rest_environment,
    set_environment,
    stored,
)


@pytest.fixture(scope="module")
def rest_lakehouse(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lakehouse]:
    with module_lakehouse("rest", seaweedfs, tmp_path_factory.mktemp("rest")) as lakehouse:
        yield lakehouse


@pytest.fixture
def lakehouse(rest_lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch) -> Lakehouse:
    """The REST lakehouse, with synthetic plays (no landing zone needed here)."""
    set_environment(monkeypatch, {**rest_lakehouse.environment, "SONIK_SOURCE": "synthetic"})
    return rest_lakehouse


def test_the_credential_is_never_shown_in_the_ui_or_the_logs(
    lakehouse: Lakehouse, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the REST catalog's credential in the environment only
    secret = lakehouse.server.secret
    settings = Settings.from_env()
    defs = build_definitions(settings)

    # When a day of plays is materialized, logging everything
    with caplog.at_level(logging.DEBUG):
        result = run_asset_job(defs, "plays_job", str(DAY))

    # Then the run worked, and the secret is nowhere Dagster keeps or shows: the resources' config (the UI's
    # resource page and launchpad), the run's record and job snapshot, its event log and metadata, the logs
    assert result.success
    instance = dg.DagsterInstance.get()
    run = instance.get_run_by_id(result.run_id)
    kept = {
        "resources": [repr(r) for r in defs.resources.values()],
        "run": dg.serialize_value(run),
        "job snapshot": dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
        "event log": [dg.serialize_value(entry) for entry in instance.all_logs(result.run_id)],
        "python logs": caplog.text,
    }
    assert [where for where, text in kept.items() if secret in str(text)] == []
    assert all(secret not in str(m.metadata) for m in result.asset_materializations_for_node("plays"))
    assert "PYICEBERG_CATALOG__SONIK__CREDENTIAL" not in settings.__dict__.values()


def test_the_rest_catalog_puts_tables_in_the_warehouse_under_their_namespace(lakehouse: Lakehouse) -> None:
    # Given the lakehouse's tables, created by the project through the REST catalog
    run_asset_job(build_definitions(Settings.from_env()), "plays_job", str(DAY))
    catalog = open_catalog(CATALOG_NAME, lakehouse.settings.catalog_uri, lakehouse.settings.warehouse)

    # Then the server chose the locations the project's deletion rule expects: inside the warehouse, one
    # folder per namespace and table, so expiry and orphan removal may delete there
    plays = catalog.load_table(PLAYS.identifier)
    assert lakehouse.settings.warehouse == f"s3://{TABLE_BUCKET}"
    assert plays.location() == f"s3://{TABLE_BUCKET}/music/plays"
    assert plays.metadata_location.startswith(f"{plays.location()}/metadata/")


def test_this_rest_catalog_deletes_a_dropped_tables_files_even_without_purge(lakehouse: Lakehouse) -> None:
    # Given a table with its files in the bucket (docs/production.md warns about what this test pins)
    catalog = open_catalog(CATALOG_NAME, lakehouse.settings.catalog_uri, lakehouse.settings.warehouse)
    day = dt.date(2026, 4, 4)
    ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 10), "scratch")])
    table = catalog.create_table("music.scratch", catalog.load_table(PLAYS.identifier).schema())
    table.append(synthetic_batch(day, 10).cast(table.schema().as_arrow()))
    s3 = lakehouse.server.filesystem()
    assert stored(s3, table.location())

    # When the catalog is asked to drop the table, not to purge it (PyIceberg sends purgeRequested=false)
    catalog.drop_table("music.scratch")

    # Then SeaweedFS deletes its files anyway, as AWS S3 Tables does: on such a catalog, dropping a table
    # entry (as `sonik reattach --replace` does) loses what that entry pointed at
    assert stored(s3, table.location()) == {}


def test_reattach_replace_is_refused_on_a_rest_catalog_and_the_lost_tables_files_stay(lakehouse: Lakehouse) -> None:
    # Given the catalog's table, and another table's metadata the user would put in its place
    catalog = open_catalog(CATALOG_NAME, lakehouse.settings.catalog_uri, lakehouse.settings.warehouse)
    day = dt.date(2026, 4, 5)
    ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 10), "replace")])
    plays = catalog.load_table(PLAYS.identifier)
    other = catalog.create_table("music.replace_source", plays.schema())
    s3 = lakehouse.server.filesystem()
    before = stored(s3, plays.location())

    # When the user asks to put another metadata back in its place with --replace
    code, _, err = sonik("reattach", PLAYS.identifier, "--replace", "--metadata", other.metadata_location)

    # Then it is refused in one line (dropping the entry would delete the files at that location), and
    # nothing changed: the table, its current metadata and every file at its location
    assert code == 2
    [line] = err.splitlines()
    assert "--replace is refused on a REST catalog" in line and plays.location() in line
    assert catalog.load_table(PLAYS.identifier).metadata_location == plays.metadata_location
    assert stored(s3, plays.location()) == before


@pytest.mark.parametrize(
    ("other_day", "retried_as"),
    [
        # PyIceberg sends the commit again on the new metadata
        (dt.date(2026, 4, 3), "Commit failed due to a concurrent update"),
        # the overwrite's validation fails on the new metadata; the project plans the replace again
        (dt.date(2026, 4, 2), "planning the replace again"),
    ],
    ids=["different days", "the same day"],
)
def test_a_commit_that_meets_another_writers_is_retried_and_nothing_is_lost_or_doubled(
    lakehouse: Lakehouse,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    other_day: dt.date,
    retried_as: str,
) -> None:
    # Given a writer of 2026-04-02 about to commit, when another writer (of other_day) commits first: the REST
    # server must refuse the first commit (its base is stale) rather than let it erase the other's
    catalog = open_catalog(CATALOG_NAME, lakehouse.settings.catalog_uri, lakehouse.settings.warehouse)
    day = dt.date(2026, 4, 2)
    ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 50, seed=5), "before")], max_shrink_share=1.0)
    real_commit, others = Transaction.commit_transaction, []

    def commit_after_another_writer(txn: Transaction):
        if txn.table_metadata.location.endswith("/music/plays") and not others:
            others.append(other_day)
            events = [ArrowRows(synthetic_batch(other_day, 70, seed=6), "the other writer")]
            ingest_day(catalog, other_day, events, max_shrink_share=1.0)
        return real_commit(txn)

    monkeypatch.setattr(Transaction, "commit_transaction", commit_after_another_writer)

    # When the first writer commits
    with caplog.at_level(logging.WARNING):
        ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 40, seed=7), "first writer")], max_shrink_share=1.0)

    # Then its commit was retried, and each day holds exactly what its last writer wrote, once
    assert others == [other_day]
    assert retried_as in caplog.text
    plays = catalog.load_table(PLAYS.identifier)
    expected = {other_day: 70, day: 40} if other_day != day else {day: 40}
    for which, rows in expected.items():
        ids = plays.scan(row_filter=played_at_filter(which)).to_arrow().column("play_id").to_pylist()
        assert (len(ids), len(set(ids))) == (rows, rows), which


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("case", ["down", "refused"])
def test_a_rest_catalog_that_is_down_or_refuses_the_credential_is_one_line(
    case: str, seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the REST settings, with the server gone or the credential wrong
    environment = rest_environment(seaweedfs, tmp_path / "lakehouse")
    wrong = "not-the-secret-4f1c"
    if case == "down":
        environment["SONIK_CATALOG_URI"] = f"http://127.0.0.1:{_closed_port()}"
        expected = "; check SONIK_CATALOG_URI and that the REST catalog is running"
    else:
        environment["PYICEBERG_CATALOG__SONIK__CREDENTIAL"] = f"{seaweedfs.key_id}:{wrong}"
        expected = (
            ": invalid_client: Invalid client credentials; check the REST catalog's credential "
            "(PYICEBERG_CATALOG__SONIK__CREDENTIAL, or PYICEBERG_CATALOG__SONIK__TOKEN) and its rights"
        )
    set_environment(monkeypatch, {**environment, "SONIK_SOURCE": "synthetic"})
    start = f"cannot open the Iceberg catalog {environment['SONIK_CATALOG_URI']}: "

    # When a user lists the tables, and when a run materializes a day
    code, out, err = sonik("tables")
    run = run_asset_job(build_definitions(Settings.from_env()), "plays_job", str(DAY))

    # Then both say the same one line: the catalog, what went wrong, what to do; never the credential
    assert code == 2 and out == ""
    [line] = err.splitlines()
    assert line.startswith(f"sonik: error: {start}") and line.endswith(expected), line
    assert not run.success
    [failure] = [e for e in run.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    shown = error.cause.message if error.cause else error.message
    assert (
        shown.strip()
        == f"sonik_pipeline.lakehouse.tables.catalog.CatalogUnavailable: {line.removeprefix('sonik: error: ')}"
    )
    assert wrong not in err + shown and seaweedfs.secret not in err + shown


@pytest.mark.slow  # as every Spark test
@pytest.mark.skipif(
    importlib.util.find_spec("pyspark") is None, reason="pyspark is not installed: pip install '.[spark]'"
)
def test_the_spark_engine_on_the_s3_warehouse_without_the_aws_bundle_is_one_line_and_deletes_nothing(
    lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the REST lakehouse's tables in the bucket, and the Spark engine with only the offline jars (no PyPI
    # wheel ships iceberg-aws-bundle, which Iceberg's S3FileIO needs)
    assert run_asset_job(build_definitions(Settings.from_env()), "plays_job", str(DAY)).success
    catalog = open_catalog(CATALOG_NAME, lakehouse.settings.catalog_uri, lakehouse.settings.warehouse)
    plays = catalog.load_table(PLAYS.identifier)
    before = stored(lakehouse.server.filesystem(), plays.location())
    monkeypatch.setenv("SONIK_ENGINE", "spark")
    monkeypatch.setenv("SONIK_SPARK_MASTER", "local[1]")

    # When the expiry job runs on Spark
    started = time.monotonic()
    result = (
        build_definitions(Settings.from_env())
        .resolve_job_def("expiry_job")
        .execute_in_process(
            run_config={"ops": {"expire_table_snapshots": {"config": {"retention_days": 0, "retain_last": 1}}}},
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
        )
    )

    # Then it fails at once (no JVM was started) naming the jar and how to get it, and nothing was deleted
    assert not result.success and time.monotonic() - started < 30
    [failure] = [e for e in result.all_events if e.is_step_failure]
    error = failure.event_specific_data.error
    message = error.cause.message if error.cause else error.message
    assert "SparkNotReady: an s3:// warehouse on the Spark engine needs Iceberg's AWS bundle " in message
    assert "iceberg-aws-bundle-1.10.2.jar" in message and "SONIK_SPARK_PACKAGES" in message
    assert catalog.load_table(PLAYS.identifier).metadata_location == plays.metadata_location
    assert stored(lakehouse.server.filesystem(), plays.location()) == before
