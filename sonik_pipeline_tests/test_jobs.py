import datetime as dt

import dagster as dg
from pyiceberg.catalog import Catalog

from sonik_pipeline.jobs import MAINTENANCE_POOL, MAINTENANCE_TAG, compaction_job, expiry_job, rollback_job
from sonik_pipeline.lakehouse.events import synthetic_batch
from sonik_pipeline.lakehouse.tables import PLAYS, ensure_table
from sonik_pipeline_tests.conftest import op_output_metadata

DAY = dt.date(2026, 4, 20)


def _micro_batches(catalog: Catalog, batches: int):
    table, _ = ensure_table(catalog, PLAYS)
    for i in range(batches):
        table.append(synthetic_batch(DAY, 100, batch=i).cast(table.schema().as_arrow()))
    return catalog.load_table("music.plays")


def test_compaction_job_compacts_every_table_and_reports(defs: dg.Definitions, catalog: Catalog) -> None:
    _micro_batches(catalog, 12)
    job = defs.resolve_job_def("compaction_job")

    result = job.execute_in_process(
        run_config={"ops": {"compact_tables": {"config": {"skip_recent_days": 0}}}}, instance=dg.DagsterInstance.get()
    )

    assert result.success
    meta = op_output_metadata(result, "compact_tables")
    assert (meta["files_before"].value, meta["files_after"].value, meta["partitions_rewritten"].value) == (12, 1, 1)
    assert meta["tables"].value["music.plays"]["partitions"] == ["played_day=2026-04-20"]
    assert len(list(catalog.load_table("music.plays").scan().plan_files())) == 1
    assert job.tags[MAINTENANCE_TAG] == "compaction"


def test_compaction_job_defaults_compact_past_days(defs: dg.Definitions, catalog: Catalog) -> None:
    _micro_batches(catalog, 6)  # 2026-04-20 is before today, the default cut-off
    result = defs.resolve_job_def("compaction_job").execute_in_process(instance=dg.DagsterInstance.get())
    assert op_output_metadata(result, "compact_tables")["partitions_rewritten"].value == 1


def test_expiry_job_expires_and_removes_orphans(defs: dg.Definitions, catalog: Catalog) -> None:
    table = _micro_batches(catalog, 8)
    stray = table.location().removeprefix("file://") + "/data/left-by-a-crash.parquet"
    open(stray, "wb").write(b"x" * 1000)

    result = defs.resolve_job_def("expiry_job").execute_in_process(
        run_config={
            "ops": {
                "expire_table_snapshots": {"config": {"retention_days": 0, "retain_last": 2}},
                "remove_orphans": {"config": {"older_than_hours": 0}},
            }
        },
        instance=dg.DagsterInstance.get(),
    )

    assert result.success
    assert len(catalog.load_table("music.plays").snapshots()) == 2
    expiry = op_output_metadata(result, "expire_table_snapshots")
    assert expiry["snapshots_expired"].value == {"music.plays": 6}
    assert expiry["total_bytes_deleted"].value > 0
    orphans = op_output_metadata(result, "remove_orphans")
    assert orphans["orphans"].value == {"music.plays": [stray]}


def test_only_compaction_and_expiry_queue_behind_maintenance_and_rollback_goes_first() -> None:
    """A stuck maintenance run holds the maintenance queue place and pool; rollback needs neither."""
    pools = {job.name: {node.definition.pool for node in job.graph.nodes} for job in (compaction_job, expiry_job)}
    assert pools == {"compaction_job": {MAINTENANCE_POOL}, "expiry_job": {MAINTENANCE_POOL}}
    assert MAINTENANCE_TAG in compaction_job.tags and MAINTENANCE_TAG in expiry_job.tags
    assert MAINTENANCE_TAG not in rollback_job.tags
    assert [node.definition.pool for node in rollback_job.graph.nodes] == [None]
    assert int(rollback_job.tags["dagster/priority"]) > 0  # dequeued ahead of backfills when the queue is full


def test_schedules_and_sensors_are_on_by_default(defs: dg.Definitions) -> None:
    schedules = {s.name: s for s in defs.schedules}
    assert {name: (s.cron_schedule, s.execution_timezone) for name, s in schedules.items()} == {
        "daily_schedule": ("30 0 * * *", "UTC"),
        "compaction_schedule": ("0 2 * * *", "UTC"),
        "expiry_schedule": ("0 3 * * *", "UTC"),
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules.values())
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in defs.sensors)


def test_the_daily_schedule_asks_for_exactly_yesterday(defs: dg.Definitions) -> None:
    schedule = next(s for s in defs.schedules if s.name == "daily_schedule")
    context = dg.build_schedule_context(
        instance=dg.DagsterInstance.get(), scheduled_execution_time=dt.datetime(2026, 4, 21, 0, 30, tzinfo=dt.UTC)
    )

    [request] = schedule.evaluate_tick(context).run_requests

    assert request.partition_key == "2026-04-20"
    assert schedule.job_name == "daily_job"


def _freshness_at(defs: dg.Definitions, monkeypatch, when: dt.datetime) -> bool:
    from dagster._core.definitions.asset_checks.asset_check_factories.freshness_checks import time_partition

    monkeypatch.setattr(time_partition, "get_current_timestamp", lambda: when.timestamp())  # the clock, fixed
    check = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("plays"), "freshness_check"))
    job = dg.define_asset_job("freshness_now", selection=check)
    result = (
        dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
        .resolve_job_def("freshness_now")
        .execute_in_process(instance=dg.DagsterInstance.get())
    )
    [evaluation] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return evaluation.passed


def test_freshness_fails_when_the_day_that_ended_has_not_landed_by_six(defs: dg.Definitions, monkeypatch) -> None:
    plays = defs.resolve_job_def("plays_job")
    assert plays.execute_in_process(partition_key="2026-04-19", instance=dg.DagsterInstance.get()).success

    # Before 06:00 on the 21st only the 19th is due; after it, the 20th is, and it is missing.
    assert _freshness_at(defs, monkeypatch, dt.datetime(2026, 4, 21, 5, 0, tzinfo=dt.UTC)) is True
    assert _freshness_at(defs, monkeypatch, dt.datetime(2026, 4, 21, 7, 0, tzinfo=dt.UTC)) is False

    assert plays.execute_in_process(partition_key="2026-04-20", instance=dg.DagsterInstance.get()).success
    assert _freshness_at(defs, monkeypatch, dt.datetime(2026, 4, 21, 7, 0, tzinfo=dt.UTC)) is True
