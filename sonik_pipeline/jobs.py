"""Jobs: the asset jobs over the daily partitions, the table-maintenance jobs and the rollback job."""

import dagster as dg

from sonik_pipeline.maintenance_executor import pool_waiting_executor
from sonik_pipeline.ops.maintenance import (
    MAINTENANCE_POOL,
    MAINTENANCE_TAG,
    compact_tables,
    expire_table_snapshots,
    remove_orphans,
    rewrite_table_manifests,
)
from sonik_pipeline.ops.rollback import rollback_table

__all__ = ["MAINTENANCE_POOL", "MAINTENANCE_TAG"]

ROLLBACK_PRIORITY = 10
MAINTENANCE_EXECUTOR = pool_waiting_executor(MAINTENANCE_POOL)


def build_asset_jobs(plays: dg.AssetsDefinition, freshness_checks) -> tuple:
    """plays_job and daily_job; their partitions are the assets' own (daily, UTC)."""
    # Freshness is judged by its own sensor against the clock, not by the runs that backfill old days.
    not_freshness = dg.AssetSelection.all() - dg.AssetSelection.checks(*freshness_checks)
    plays_job = dg.define_asset_job(
        "plays_job",
        selection=dg.AssetSelection.assets(plays) & not_freshness,
        description="Ingest play events into music.plays for the chosen days.",
    )
    daily_job = dg.define_asset_job(
        "daily_job",
        selection=dg.AssetSelection.assets(plays).downstream() & not_freshness,
        description="A day of plays and every mart over it, with their checks, in dependency order.",
    )
    return plays_job, daily_job


def _maintenance_job(name: str, op: dg.OpDefinition, description: str) -> dg.JobDefinition:
    """A job of one maintenance op, tagged so the instance runs one maintenance job at a time."""

    @dg.job(
        name=f"{name}_job",
        tags={MAINTENANCE_TAG: name},
        description=description,
        executor_def=MAINTENANCE_EXECUTOR,  # waits for the pool slot itself, naming its holder, freeing a dead one's
    )
    def _job() -> None:
        op()

    return _job


compaction_job = _maintenance_job("compaction", compact_tables, "Compact small data files of the lakehouse tables.")
manifests_job = _maintenance_job(
    "manifests",
    rewrite_table_manifests,
    "Rewrite each table's manifests clustered by partition (one replace commit that changes no data).",
)
expiry_job = _maintenance_job(
    "expiry",
    expire_table_snapshots,
    "Expire snapshots past retention and delete the data and metadata files only they reached.",
)
orphans_job = _maintenance_job(
    "orphans",
    remove_orphans,
    "Delete files no metadata references (a crashed writer's leftovers), past the safety window.",
)
MAINTENANCE_JOBS = (compaction_job, manifests_job, expiry_job, orphans_job)


@dg.job(
    # Queued ahead of backfills and maintenance when the run queue is full: the higher priority goes first.
    tags={"dagster/priority": str(ROLLBACK_PRIORITY)},
    description="Roll a table back to an earlier snapshot (by id or time); the run records before and after.",
)
def rollback_job() -> None:
    rollback_table()
