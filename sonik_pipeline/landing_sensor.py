"""The landing sensor: a day whose landing files changed since its last ingest is ingested again.

Late plays (a phone that played offline uploads hours or days later) arrive as new files in an old
day's folder; the sensor requests a ``plays`` run for those days, and the marts follow the new plays
through their automation conditions (``marts_follow_plays``), rolling views included.

No ``run_key``: Dagster keeps run keys forever, so a key per day would stop the next late file of that
day from ever being ingested. What was requested, and when, lives in the cursor instead; a day is
requested again when its files change again, or after ``retry_minutes`` when its run failed.
Only complete days are partitions, so the still-open day is left to the daily schedule.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from sonik_pipeline.lakehouse.days import days_between
from sonik_pipeline.lakehouse.sources.ingested_files import recorded_days
from sonik_pipeline.lakehouse.sources.landing import LandingZone
from sonik_pipeline.lakehouse.sources.landing_changes import WatchCursor, plan_tick
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SOURCES
from sonik_pipeline.partitions import day_of
from sonik_pipeline.resources import LakehouseCatalog, LandingWatch, PlaySource

# Listing is bounded (the recent days each tick, every day at the sweep interval), so ticking often is cheap.
TICK_SECONDS = 30
TRIGGER_TAG = "sonik/trigger"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def now() -> dt.datetime:
    """The sensor's clock (UTC); tests fix it."""
    return dt.datetime.now(dt.UTC)


def _in_flight_days(instance: dg.DagsterInstance, job_name: str) -> set[dt.date]:
    """Days that a queued or running ingest this sensor requested already covers."""
    runs = instance.get_runs(dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT, tags={TRIGGER_TAG: "landing_sensor"}))
    days: set[dt.date] = set()
    for run in runs:
        first, last = run.tags.get(RANGE_START), run.tags.get(RANGE_END)
        if first and last:
            days.update(days_between(day_of(first), day_of(last)))
        elif key := run.tags.get("dagster/partition"):
            days.add(day_of(key))
    return days


def build_landing_sensor(
    plays_job: dg.UnresolvedAssetJobDefinition, partitions: dg.DailyPartitionsDefinition, running: bool
) -> dg.SensorDefinition:
    """The sensor; RUNNING by default when plays come from the landing zone, STOPPED for the synthetic source."""

    @dg.sensor(
        name="landing_sensor",
        job=plays_job,
        minimum_interval_seconds=TICK_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description="Ingest again every day whose landing files changed since its last ingest (late uploads).",
    )
    def landing_sensor(
        context: dg.SensorEvaluationContext,
        play_source: PlaySource,
        lakehouse: LakehouseCatalog,
        landing_watch: LandingWatch,
    ) -> dg.SensorResult | dg.SkipReason:
        if play_source.kind != "landing":
            return dg.SkipReason("plays come from the synthetic source (SONIK_SOURCE=synthetic): no landing zone")
        clock = now()
        keys = partitions.get_partition_keys(current_time=clock)
        if not keys:
            return dg.SkipReason("no complete day to ingest yet")
        catalog = lakehouse.load()

        def recorded(first: dt.date | None, last: dt.date | None):
            if not catalog.table_exists(PLAYS_SOURCES.identifier):
                return {}
            return recorded_days(catalog.load_table(PLAYS_SOURCES.identifier), first, last)

        plan = plan_tick(
            LandingZone.at(play_source.landing_dir, lakehouse.properties()),
            recorded,
            WatchCursor.parse(context.cursor),
            clock,
            day_of(keys[0]),
            day_of(keys[-1]),
            landing_watch.settings(),
            _in_flight_days(context.instance, plays_job.name),
        )
        listed = "every day" if plan.swept else "the recent days"
        context.log.info(
            f"listed {listed}: {len(plan.changed)} changed, {len(plan.settling)} settling, "
            f"requesting {len(plan.requested)} day(s) in {len(plan.ranges)} run(s)"
        )
        if plan.emptied:
            context.log.warning(
                "landing folders now empty for "
                + ", ".join(map(str, plan.emptied))
                + ": not re-ingested (an ingest never replaces a day with nothing)"
            )
        runs = [
            dg.RunRequest(
                tags={RANGE_START: str(first), RANGE_END: str(last), TRIGGER_TAG: "landing_sensor"},
                asset_selection=[dg.AssetKey("plays")],
            )
            for first, last in plan.ranges
        ]
        return dg.SensorResult(run_requests=runs, cursor=plan.cursor.dump())

    return landing_sensor
