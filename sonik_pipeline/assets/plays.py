"""The daily ``plays`` asset: one UTC day of play events into ``music.plays``."""

from typing import Any

import dagster as dg
from pydantic import Field

from sonik_pipeline.assets.metadata import table_preview
from sonik_pipeline.lakehouse.ingest import (
    DEFAULT_MAX_REJECT_SHARE,
    DEFAULT_MAX_SHRINK_SHARE,
    DayIngestResult,
    IngestError,
    ingest_day,
)
from sonik_pipeline.partitions import day_of
from sonik_pipeline.resources import LakehouseCatalog, PlaySource

PLAYS_KEY = dg.AssetKey("plays")


class PlaysConfig(dg.Config):
    max_reject_share: float = Field(
        default=DEFAULT_MAX_REJECT_SHARE,
        description="Fail the day when more than this share of its events fail validation (after quarantining).",
    )
    max_shrink_share: float = Field(
        default=DEFAULT_MAX_SHRINK_SHARE,
        ge=0.0,
        le=1.0,
        description="Fail a re-ingest that would leave a day with more than this share fewer rows than it holds "
        "(1.0: allow any shrink, e.g. after deleting bad events at the source).",
    )
    skip_unreadable_files: bool = Field(
        default=False,
        description="Ingest a day even when some of its landing files cannot be read (cut short, corrupt); "
        "they are quarantined and named in the metadata. Off: such a day fails and plays is unchanged.",
    )


def _day_metadata(result: DayIngestResult) -> dict[str, Any]:
    totals, report = result.totals, result.plays
    return {
        "rows_written": dg.MetadataValue.int(report.rows_added),
        "rows_before": dg.MetadataValue.int(result.rows_before),
        "rows_rejected": dg.MetadataValue.int(totals.invalid),
        "rejected_by_reason": dg.MetadataValue.json(dict(totals.rejected_by_reason)),
        "duplicates_dropped": dg.MetadataValue.int(totals.duplicates),
        "events_read": dg.MetadataValue.int(totals.seen),
        "unreadable_files_skipped": dg.MetadataValue.json(list(result.unreadable_files_skipped)),
        "snapshot_id": dg.MetadataValue.text(str(report.snapshot_id)),
        "operation": dg.MetadataValue.text(report.operation),
        "data_files_added": dg.MetadataValue.int(report.files_added),
        "bytes_added": dg.MetadataValue.int(report.bytes_added),
        "data_files_replaced": dg.MetadataValue.int(report.files_removed),
        "rows_replaced": dg.MetadataValue.int(report.rows_removed),
        "table_rows": dg.MetadataValue.int(report.table_rows),
        "schema_evolved": dg.MetadataValue.text(result.schema_changes.describe()),
        "duration_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "preview": table_preview(result.preview),
        "dagster/row_count": dg.MetadataValue.int(report.rows_added),
    }


def build_plays_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="plays",
        partitions_def=partitions,
        # A range of days runs as one run (and `dagster asset materialize --partition-range` needs this);
        # each day still commits on its own and only one day is in memory at a time.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name="ingest",
        kinds={"iceberg", "duckdb"},
        metadata={"dagster/table_name": "sonik.music.plays"},
        tags={"sonik/table": "music.plays"},
    )
    def plays(
        context: dg.AssetExecutionContext,
        config: PlaysConfig,
        lakehouse: LakehouseCatalog,
        play_source: PlaySource,
    ) -> dg.MaterializeResult:
        """Play events for one UTC day, validated and written to the Iceberg table music.plays.

        Each day is replaced in one atomic commit (a re-run never doubles rows); events that fail
        validation go to music.plays_rejected with their reason and raw payload.
        """
        catalog = lakehouse.load()
        done: list[str] = []
        rows = 0
        for key in context.partition_keys:
            try:
                result = ingest_day(
                    catalog,
                    day_of(key),
                    play_source.events(day_of(key)),
                    run_id=context.run.run_id,
                    max_reject_share=config.max_reject_share,
                    max_shrink_share=config.max_shrink_share,
                    skip_unreadable_files=config.skip_unreadable_files,
                    progress=context.log.info,
                )
            except (IngestError, FileNotFoundError) as exc:
                # Days committed before this one did land: record them, then fail with the reason.
                for committed in done:
                    context.log_event(dg.AssetMaterialization(asset_key=PLAYS_KEY, partition=committed))
                raise dg.Failure(description=str(exc), metadata={"failed_day": key, "days_committed": done}) from exc
            context.add_asset_metadata(_day_metadata(result), partition_key=key)
            context.log.info(
                f"{key}: wrote {result.plays.rows_added:,} rows in snapshot {result.plays.snapshot_id} "
                f"({result.totals.rejected:,} rejected, {result.seconds:.1f}s)"
            )
            done.append(key)
            rows += result.plays.rows_added
        return dg.MaterializeResult(
            metadata={"source": play_source.describe(), "days_in_run": len(done), "rows_in_run": rows}
        )

    return plays
