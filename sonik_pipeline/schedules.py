"""Schedules and sensors: the lakehouse fills and tends itself while the Dagster daemon runs.

All start RUNNING with `dagster dev` (the daemon comes with it); turn any off in the UI.
"""

import warnings

import dagster as dg

RUNNING = dg.DefaultScheduleStatus.RUNNING


def build_schedules(daily_job, compaction_job: dg.JobDefinition, expiry_job: dg.JobDefinition) -> list:
    # 00:30 UTC every day, for the day that just ended (the newest daily partition).
    daily_schedule = dg.build_schedule_from_partitioned_job(
        daily_job, name="daily_schedule", hour_of_day=0, minute_of_hour=30, default_status=RUNNING
    )
    return [
        daily_schedule,
        # 02:00 UTC, after the day's ingest: merge yesterday's and older small files.
        _nightly("compaction_schedule", compaction_job, hour=2),
        # 03:00 UTC, after compaction: expire snapshots past retention, then delete orphaned files.
        _nightly("expiry_schedule", expiry_job, hour=3),
    ]


def _nightly(name: str, job: dg.JobDefinition, hour: int) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name, job=job, cron_schedule=f"0 {hour} * * *", execution_timezone="UTC", default_status=RUNNING
    )


def build_sensors(freshness_checks) -> list:
    # Declarative automation (marts following plays) is evaluated by this sensor.
    automation = dg.AutomationConditionSensorDefinition(
        "marts_follow_plays", target=dg.AssetSelection.all(), default_status=dg.DefaultSensorStatus.RUNNING
    )
    with warnings.catch_warnings():  # superseded by FreshnessPolicy; kept with the time-partition checks above
        warnings.simplefilter("ignore", dg.SupersessionWarning)
        freshness = dg.build_sensor_for_freshness_checks(
            freshness_checks=freshness_checks,
            name="plays_freshness_sensor",
            default_status=dg.DefaultSensorStatus.RUNNING,
        )
    return [automation, freshness]
