"""The code location: one Definitions, built from settings when Dagster loads it (never at import)."""

from __future__ import annotations

import os
import warnings

import dagster as dg

from sonik_pipeline.assets.checks import build_mart_checks, build_plays_checks
from sonik_pipeline.assets.marts import build_mart_assets
from sonik_pipeline.assets.plays import build_plays_asset
from sonik_pipeline.partitions import build_daily_partitions
from sonik_pipeline.resources import LakehouseCatalog, LakehouseDuckDB, PlaySource
from sonik_pipeline.settings import CATALOG_NAME, Settings

# Deliberate uses of beta APIs (backfill policies, partition mappings over missing days); said once here.
warnings.filterwarnings("ignore", category=dg.BetaWarning)


def _secret_or(name: str, default: str) -> str | dg.EnvVar:
    """Pass a set variable as an EnvVar, so a URI carrying a password is never shown in the UI."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_definitions(settings: Settings) -> dg.Definitions:
    partitions = build_daily_partitions(settings.start_date)
    plays = build_plays_asset(partitions)
    marts = build_mart_assets(partitions)
    plays_job = dg.define_asset_job(
        "plays_job",
        selection=[plays],
        partitions_def=partitions,
        description="Ingest play events into music.plays for the chosen days.",
    )
    daily_job = dg.define_asset_job(
        "daily_job",
        selection=dg.AssetSelection.assets(plays).downstream(),
        partitions_def=partitions,
        description="A day of plays and every mart over it, with their checks, in dependency order.",
    )
    return dg.Definitions(
        assets=[plays, *marts],
        asset_checks=[build_plays_checks(), *build_mart_checks()],
        jobs=[plays_job, daily_job],
        resources={
            "duckdb": LakehouseDuckDB(database=":memory:"),
            "lakehouse": LakehouseCatalog(
                catalog_name=CATALOG_NAME,
                catalog_uri=_secret_or("SONIK_CATALOG_URI", settings.catalog_uri),
                warehouse=settings.warehouse,
            ),
            "play_source": PlaySource(
                kind=settings.source,
                events_per_day=settings.events_per_day,
                landing_dir=str(settings.landing_dir),
            ),
        },
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
