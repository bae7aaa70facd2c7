"""Schedules: the lakehouse fills and tends itself while the Dagster daemon runs.

All start RUNNING with `dagster dev` (the daemon comes with it); turn any off in the UI. Maintenance
runs one job at a time (the ``sonik/maintenance`` tag limit), so a slow step delays the next one
rather than overlapping it.
"""

import dagster as dg

from sonik_pipeline.jobs import compaction_job, expiry_job, manifests_job, orphans_job

RUNNING = dg.DefaultScheduleStatus.RUNNING


def _nightly(name: str, job: dg.JobDefinition, hour: int, minute: int = 0) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        cron_schedule=f"{minute} {hour} * * *",
        execution_timezone="UTC",
        default_status=RUNNING,
    )


def build_schedules(daily_job) -> list[dg.ScheduleDefinition]:
    return [
        # 00:30 UTC every day, for the day that just ended (the newest daily partition).
        dg.build_schedule_from_partitioned_job(
            daily_job, name="daily_schedule", hour_of_day=0, minute_of_hour=30, default_status=RUNNING
        ),
        # 02:00 UTC, after the day's ingest: merge yesterday's and older small files.
        _nightly("compaction_schedule", compaction_job, hour=2),
        # 02:30 UTC, after compaction (which adds a manifest per table): cluster and merge the manifests.
        _nightly("manifests_schedule", manifests_job, hour=2, minute=30),
        # 03:00 UTC: expire snapshots past retention and delete the files only they reached.
        _nightly("expiry_schedule", expiry_job, hour=3),
        # 03:30 UTC: delete what crashed writers left behind, older than the safety window.
        _nightly("orphans_schedule", orphans_job, hour=3, minute=30),
    ]
