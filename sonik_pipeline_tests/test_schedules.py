"""Schedules, evaluated at fixed times: which job they run, when, and for which day."""

import datetime as dt

import dagster as dg


def _schedules(defs: dg.Definitions) -> dict[str, dg.ScheduleDefinition]:
    return {s.name: defs.resolve_schedule_def(s.name) for s in defs.schedules}


def test_schedules_and_sensors_are_on_by_default(defs: dg.Definitions) -> None:
    schedules = _schedules(defs)
    assert {name: (s.cron_schedule, s.execution_timezone) for name, s in schedules.items()} == {
        "daily_schedule": ("30 0 * * *", "UTC"),
        "compaction_schedule": ("0 2 * * *", "UTC"),
        "manifests_schedule": ("30 2 * * *", "UTC"),
        "expiry_schedule": ("0 3 * * *", "UTC"),
        "orphans_schedule": ("30 3 * * *", "UTC"),
    }
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules.values())
    # The landing sensor runs by default only for the landing source (test_landing_sensor); the rest always.
    assert {s.name: s.default_status for s in defs.sensors} == {
        "landing_sensor": dg.DefaultSensorStatus.STOPPED,
        "marts_follow_plays": dg.DefaultSensorStatus.RUNNING,
        "plays_freshness_sensor": dg.DefaultSensorStatus.RUNNING,
        "dead_run_sensor": dg.DefaultSensorStatus.RUNNING,
    }


def test_the_daily_schedule_asks_for_exactly_yesterday(defs: dg.Definitions) -> None:
    schedule = defs.resolve_schedule_def("daily_schedule")
    context = dg.build_schedule_context(
        instance=dg.DagsterInstance.get(), scheduled_execution_time=dt.datetime(2026, 4, 21, 0, 30, tzinfo=dt.UTC)
    )

    [request] = schedule.evaluate_tick(context).run_requests

    assert request.partition_key == "2026-04-20"
    assert schedule.job_name == "daily_job"


def test_each_maintenance_schedule_runs_its_job_at_night_one_after_another(defs: dg.Definitions) -> None:
    schedules = _schedules(defs)
    order = ["compaction_schedule", "manifests_schedule", "expiry_schedule", "orphans_schedule"]
    jobs = [schedules[name].job_name for name in order]
    assert jobs == ["compaction_job", "manifests_job", "expiry_job", "orphans_job"]
    hours = [tuple(int(x) for x in reversed(schedules[name].cron_schedule.split()[:2])) for name in order]
    assert hours == sorted(hours) and hours[0] > (0, 30)  # after the daily ingest, in sequence
