"""The code location: one Definitions, built from settings when Dagster loads it (never at import)."""

from __future__ import annotations

import os
import warnings

import click
import dagster as dg

from sonik_pipeline.assets.checks import build_mart_checks, build_plays_checks, build_plays_freshness_checks
from sonik_pipeline.assets.marts import build_mart_assets
from sonik_pipeline.assets.plays import build_plays_asset
from sonik_pipeline.jobs import MAINTENANCE_JOBS, build_asset_jobs, rollback_job
from sonik_pipeline.partitions import build_daily_partitions
from sonik_pipeline.resources import LakehouseCatalog, LakehouseDuckDB, LakehouseEngine, LandingWatch, PlaySource
from sonik_pipeline.schedules import build_schedules
from sonik_pipeline.sensors import build_sensors
from sonik_pipeline.settings import CATALOG_NAME, Settings, SettingsError

# Dagster features the project chose on purpose, each explained where it is used (single-run backfills,
# rolling windows over days not yet ingested, checks per partition, the freshness checks and their
# sensor): Dagster warns that they are in beta or preview, or superseded, every time the code location
# loads, in every run's output. Only these notices are silenced, and only while the definitions are
# built (``defs``); any other warning, or one of these raised elsewhere, still shows.
CHOSEN_FEATURE_WARNINGS = (
    (dg.BetaWarning, r"Parameter `backfill_policy` of function `asset`"),
    (dg.BetaWarning, r"Parameter `allow_nonexistent_upstream_partitions` of initializer `TimeWindowPartitionMapping"),
    (dg.PreviewWarning, r"Specifying a partitions_def on an AssetCheckSpec"),
    (dg.SupersessionWarning, r"Function `build_time_partition_freshness_checks`"),
    (dg.SupersessionWarning, r"Function `build_sensor_for_freshness_checks`"),
)


def _secret_or(name: str, default: str) -> str | dg.EnvVar:
    """Pass a set variable as an EnvVar, so a URI carrying a password is never shown in the UI."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = build_daily_partitions(settings.start_date)
    plays = build_plays_asset(partitions)
    marts = build_mart_assets(partitions)
    plays_freshness = build_plays_freshness_checks(plays)
    lakehouse = LakehouseCatalog(
        catalog_name=CATALOG_NAME,
        catalog_uri=_secret_or("SONIK_CATALOG_URI", settings.catalog_uri),
        warehouse=settings.warehouse,
    )
    plays_job, daily_job = build_asset_jobs(plays, plays_freshness)
    return dg.Definitions(
        assets=[plays, *marts],
        asset_checks=[build_plays_checks(partitions), *build_mart_checks(partitions), *plays_freshness],
        jobs=[plays_job, daily_job, *MAINTENANCE_JOBS, rollback_job],
        schedules=build_schedules(daily_job),
        sensors=build_sensors(plays_freshness, plays_job, partitions, watch_landing=settings.source == "landing"),
        # Every job is a short chain of mostly sequential steps over one lakehouse: a process per step
        # would cost seconds of start-up each (imports, resources, table loads) and buy nothing on a small
        # worker. Parallelism comes from runs (the queue starts several at once), not from steps.
        executor=dg.in_process_executor,
        resources={
            "duckdb": LakehouseDuckDB(
                database=":memory:", lakehouse=lakehouse, memory_limit=settings.duckdb_memory_limit
            ),
            "engine": LakehouseEngine(
                kind=settings.engine,
                lakehouse=lakehouse,
                spark_master=settings.spark_master,
                spark_remote=settings.spark_remote,
                spark_jars=list(settings.spark_jars),
                spark_packages=list(settings.spark_packages),
                spark_conf=dict(settings.spark_conf),
            ),
            "lakehouse": lakehouse,
            "landing_watch": LandingWatch(
                settle_seconds=settings.landing_settle_seconds,
                recent_days=settings.landing_recent_days,
                sweep_hours=settings.landing_sweep_hours,
            ),
            "play_source": PlaySource(
                kind=settings.source,
                events_per_day=settings.events_per_day,
                landing_dir=settings.landing_dir,
                lakehouse=lakehouse,
            ),
        },
    )


class InvalidSettings(SettingsError, click.ClickException):
    """A ``SettingsError`` raised while Dagster loads the code location, shown as its message alone.

    What Dagster 1.13 shows for a load error: ``dagster dev`` logs the exception's message first, then
    the user frames (its own hidden), and the UI's code location shows its generic "Error occurred
    during the loading of Dagster definitions" with this message as the cause right below;
    ``dagster definitions validate`` prints the message first, then the user frames; any chained
    cause follows in all of them, so ``from None`` keeps the chain out. The in-process commands
    (``dagster asset materialize``, ``dagster job execute``) do not catch the error: it reaches their
    click entry point, which prints a ``ClickException`` as the single line ``Error: <message>``, where
    any other exception is a full Python traceback. Being both keeps ``except SettingsError`` working.
    """

    def __init__(self, message: str) -> None:
        click.ClickException.__init__(self, message)


@dg.definitions
def defs() -> dg.Definitions:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        raise InvalidSettings(str(exc)) from None
    with warnings.catch_warnings():
        for category, message in CHOSEN_FEATURE_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        return build_definitions(settings)
