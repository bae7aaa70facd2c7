"""SONIK_ENGINE=spark: Iceberg's Spark procedures maintain a lakehouse the local engine wrote, through Dagster.

The Spark session runs in local mode with the Iceberg runtime from PyPI and Debian's JDBC drivers, on the
SQLite and the PostgreSQL catalog; then the local engine reads, ingests and time-travels on top.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import multiprocessing
import os
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.types import StringType

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS, copied_lakehouse, op_output_metadata, run_asset_job
from sonik_pipeline_tests.engines.spark_available import SPARK_TESTS

DAYS = [dt.date(2026, 4, 20), dt.date(2026, 4, 21), dt.date(2026, 4, 22)]
MANIFEST_SIZE = "commit.manifest.target-size-bytes"
THREE_DAYS_AGO = time.time() - 3 * 86400

pytestmark = SPARK_TESTS


def _spark(settings: Settings) -> Settings:
    return dataclasses.replace(settings, engine="spark", spark_master="local[2]")


def _day_fingerprints(catalog: Catalog, snapshot_id: int | None = None) -> dict[dt.date, tuple[int, int, str]]:
    """Per day: rows, total seconds played, and a digest of the sorted play ids."""
    table = catalog.load_table("music.plays")
    found = {}
    for day in DAYS:
        rows = table.scan(row_filter=played_at_filter(day), snapshot_id=snapshot_id).to_arrow()
        ids = sorted(rows.column("play_id").to_pylist())
        digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
        found[day] = (rows.num_rows, pc.sum(rows.column("duration_seconds")).as_py(), digest)
    return found


def _run(defs: dg.Definitions, job: str, op: str, config: dict, tags: dict | None = None) -> dg.ExecuteInProcessResult:
    return defs.resolve_job_def(job).execute_in_process(
        {"ops": {op: {"config": config}}}, instance=dg.DagsterInstance.get(), raise_on_error=False, tags=tags
    )


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.is_step_failure]
    return failure.event_specific_data.error.message


def test_spark_maintains_what_the_local_engine_wrote_and_the_local_engine_carries_on(
    settings: Settings, catalog: Catalog
) -> None:
    # Given three days ingested by the local engine, micro-batches on the first, a new column, and a tag
    local = build_definitions(settings)
    assert run_asset_job(local, "plays_job", str(DAYS[0]), str(DAYS[-1])).success
    table = catalog.load_table("music.plays")
    with table.update_schema() as update:
        update.add_column("campaign", StringType(), doc="a column added after the first days")
    table = catalog.load_table("music.plays")
    for batch in range(4):
        events = synthetic_batch(DAYS[0], 50, batch=100 + batch, seed=7)
        events = events.append_column("campaign", pa.nulls(events.num_rows, pa.string()))
        table.append(events.cast(table.schema().as_arrow()))
    table = catalog.load_table("music.plays")
    tagged = table.current_snapshot().snapshot_id
    table.manage_snapshots().create_tag(tagged, "before-spark").commit()
    before = _day_fingerprints(catalog)
    manifest_size = table.properties.get(MANIFEST_SIZE)
    files_before = len(catalog.load_table("music.plays").inspect.files())
    orphan = Path(table.location().removeprefix("file://")) / "data" / "left-by-a-crash.parquet"
    orphan.write_bytes(b"x" * 1000)
    os.utime(orphan, (THREE_DAYS_AGO, THREE_DAYS_AGO))
    spark = build_definitions(_spark(settings))

    # When Spark compacts, rewrites manifests, expires and removes orphans
    # (as scheduled in the night after DAYS[-1], whose partition it leaves alone: skip_recent_days=1)
    night = {"dagster/scheduled_execution_time": f"{DAYS[-1]}T03:00:00+00:00"}
    compaction = _run(spark, "compaction_job", "compact_tables", {"min_input_files": 2, "skip_recent_days": 1}, night)
    manifests = _run(spark, "manifests_job", "rewrite_table_manifests", {"target_size_mb": 1})
    expiry = _run(spark, "expiry_job", "expire_table_snapshots", {"retention_days": 0, "retain_last": 2})
    orphans = _run(spark, "orphans_job", "remove_orphans", {})

    # Then every job reports what Spark did
    assert [r.success for r in (compaction, manifests, expiry, orphans)] == [True] * 4
    compacted = op_output_metadata(compaction, "compact_tables")
    assert compacted["files_before"].value > compacted["files_after"].value >= 1
    assert compacted["rows_verified"].value == SMALL_DAY_EVENTS + 200
    assert op_output_metadata(manifests, "rewrite_table_manifests")["manifests_after"].value >= 1
    assert op_output_metadata(expiry, "expire_table_snapshots")["snapshots_expired"].value["music.plays"] > 0
    assert op_output_metadata(orphans, "remove_orphans")["orphans"].value["music.plays"] == [str(orphan)]
    assert not orphan.exists()
    # ... and each step observed the tables' health after Spark's work, as on the local engine
    health = [
        op_output_metadata(r, op)["health"].value["music.plays"]
        for r, op in (
            (compaction, "compact_tables"),
            (manifests, "rewrite_table_manifests"),
            (expiry, "expire_table_snapshots"),
            (orphans, "remove_orphans"),
        )
    ]
    assert health[0]["data_files"] == compacted["files_after"].value + len(DAYS) - 1  # the last day left alone
    assert health[2]["snapshots"] < health[1]["snapshots"]  # expiry
    assert health[3]["data_files"] == len(catalog.load_table("music.plays").inspect.files())

    # ... every day holds exactly its rows, in fewer files, and the tag and the retained snapshots still read
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    table = catalog.load_table("music.plays")
    assert _day_fingerprints(catalog) == before
    assert len(table.inspect.files()) < files_before
    assert table.metadata.refs["before-spark"].snapshot_id == tagged
    # ... and Spark's commits carry the Dagster run that made them, like every other commit of the lineage
    by_run = {s.summary.additional_properties.get("dagster.run-id"): s.summary for s in table.snapshots()}
    assert by_run[compaction.run_id]["sonik.operation"] == "compaction"
    assert by_run[manifests.run_id]["sonik.operation"] == "manifest-rewrite"
    assert table.properties.get(MANIFEST_SIZE) == manifest_size  # the rewrite's own size was set for it only
    assert _day_fingerprints(catalog, tagged) == before
    assert len(table.snapshots()) < 12
    previous = table.snapshot_by_id(table.current_snapshot().parent_snapshot_id)
    assert table.scan(snapshot_id=previous.snapshot_id).count() == sum(rows for rows, _, _ in before.values())

    # ... and the local engine re-ingests a day on top and rolls it back
    assert run_asset_job(local, "plays_job", str(DAYS[1])).success
    table = catalog.load_table("music.plays")
    assert table.scan(row_filter=played_at_filter(DAYS[1])).count() == SMALL_DAY_EVENTS
    rollback = local.resolve_job_def("rollback_job").execute_in_process(
        {"ops": {"rollback_table": {"config": {"table": "music.plays", "to_snapshot_id": previous.snapshot_id}}}},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )
    assert rollback.success
    assert catalog.load_table("music.plays").current_snapshot().snapshot_id == previous.snapshot_id


def test_spark_keeps_the_orphan_floor_and_refuses_a_copied_lakehouse(
    settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    # Given a day ingested by the local engine
    assert run_asset_job(build_definitions(settings), "plays_job", str(DAYS[0])).success

    # When orphans_job is asked for a window under Spark's 24 hours, then it fails in one line, deleting nothing
    spark = build_definitions(_spark(settings))
    short = _run(spark, "orphans_job", "remove_orphans", {"older_than_hours": 1, "i_know_no_writer_is_running": True})
    assert not short.success
    assert "Spark's remove_orphan_files refuses a window under 24 hours" in _failure(short)

    # When Spark's expiry and orphan removal run on a copy of the lakehouse, then both refuse before Spark is asked
    with copied_lakehouse(settings, catalog, tmp_path / "copy") as copy:
        copy_defs = build_definitions(_spark(copy))
        for job, op, config in (
            ("expiry_job", "expire_table_snapshots", {"retention_days": 0, "retain_last": 1}),
            ("orphans_job", "remove_orphans", {}),
        ):
            refused = _run(copy_defs, job, op, config)
            assert not refused.success
            assert "outside the configured warehouse" in _failure(refused)
    assert catalog.load_table("music.plays").scan(row_filter=played_at_filter(DAYS[0])).count() == SMALL_DAY_EVENTS


def _ingest_locally(settings: Settings, days: list[str], done) -> None:
    """Local-engine runs of plays_job, one per day, in their own process (as the run queue would start them)."""
    import dagster as dg

    from sonik_pipeline.definitions import build_definitions

    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        for day in days:
            result = defs.resolve_job_def("plays_job").execute_in_process(
                partition_key=day, instance=instance, raise_on_error=False
            )
            done.put((day, result.success))


def test_a_local_ingest_while_spark_compacts_loses_nothing(settings: Settings, catalog: Catalog) -> None:
    # Given a day of many small files for Spark to compact
    table, _ = ensure_table(catalog, PLAYS)
    for batch in range(8):
        table.append(synthetic_batch(DAYS[0], 100, batch=batch, seed=3).cast(table.schema().as_arrow()))
    new_days = [f"2026-05-{d:02d}" for d in range(1, 5)]

    # When the local engine ingests four other days while Spark compacts
    context = multiprocessing.get_context("spawn")
    done = context.Queue()
    writer = context.Process(target=_ingest_locally, args=(settings, new_days, done))
    writer.start()
    compaction = _run(
        build_definitions(_spark(settings)),
        "compaction_job",
        "compact_tables",
        {"min_input_files": 2, "skip_recent_days": 0},
    )
    ingested = [done.get(timeout=600) for _ in new_days]
    writer.join(60)

    # Then both succeeded, the compacted day holds its rows in one file, and every new day holds all of its rows
    assert compaction.success
    assert ingested == [(day, True) for day in new_days]
    table = catalog.load_table("music.plays")
    assert table.scan(row_filter=played_at_filter(DAYS[0])).count() == 800
    assert len(table.scan(row_filter=played_at_filter(DAYS[0])).plan_files()) == 1
    for day in new_days:
        assert table.scan(row_filter=played_at_filter(dt.date.fromisoformat(day))).count() == SMALL_DAY_EVENTS
