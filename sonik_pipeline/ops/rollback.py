"""The rollback op: make an earlier snapshot of a table current again, as ``sonik rollback`` does."""

import dagster as dg
from pydantic import Field

from sonik_pipeline.lakehouse.reads import timetravel
from sonik_pipeline.resources import LakehouseCatalog


class RollbackConfig(dg.Config):
    table: str = Field(description="The table to roll back, e.g. music.plays.")
    to_snapshot_id: int | None = Field(default=None, description="The snapshot to make current again.")
    as_of: str | None = Field(default=None, description="Or: the snapshot current at this time (ISO-8601, UTC).")


# Rollback is what a user reaches for in an emergency, so it takes no maintenance pool or tag: a stuck
# or dead compaction or expiry never holds it up. It is safe beside them: it is one optimistic Iceberg
# commit that requires main to be where it found it, so it never overwrites a concurrent commit (it fails
# and can be run again); compaction validates that the files it replaces are still live and aborts
# without committing when a rollback moved the table meanwhile; expiry asserts every branch and tag it
# planned around and plans again, so it never expires the snapshot a rollback just made current.
@dg.op(tags={"kind": "iceberg"})
def rollback_table(context: dg.OpExecutionContext, config: RollbackConfig, lakehouse: LakehouseCatalog) -> None:
    """Make an earlier snapshot current again (undo a bad ingest); the history stays for time travel."""
    if (config.to_snapshot_id is None) == (config.as_of is None):
        raise dg.Failure("give exactly one of to_snapshot_id or as_of")
    try:
        table = timetravel.load(lakehouse.load(), config.table)
        target = (
            timetravel.snapshot_by_id(table, config.to_snapshot_id)
            if config.to_snapshot_id is not None
            else timetravel.snapshot_as_of(
                table,
                timetravel.parse_time(config.as_of),
                f": list the snapshots with `sonik snapshots {config.table}` and set to_snapshot_id",
            )
        )
    except timetravel.TimeTravelError as exc:
        raise dg.Failure(str(exc)) from None
    result = timetravel.rollback(table, target)
    context.log.info(f"rolled back {result.table}: snapshot {result.before} -> {result.after}")
    context.add_output_metadata(
        {
            "table": result.table,
            "snapshot_before": str(result.before),
            "snapshot_after": str(result.after),
            "rows_after": int(target.summary.get("total-records") or 0) if target.summary else 0,
        }
    )
