"""The daily ``plays`` asset: one UTC day of play events into ``music.plays``."""

from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from sonik_pipeline.assets.metadata import table_preview
from sonik_pipeline.lakehouse.ingest.run import (
    DEFAULT_DAYS_PER_COMMIT,
    DEFAULT_MAX_REJECT_SHARE,
    DEFAULT_MAX_SHRINK_SHARE,
    DayIngestResult,
    IngestError,
    IngestOptions,
)
from sonik_pipeline.lakehouse.tables.attachment import TableLocationTaken
from sonik_pipeline.lakehouse.tables.definitions import PLAYS
from sonik_pipeline.partitions import day_of
from sonik_pipeline.resources import LakehouseCatalog, LakehouseEngine, PlaySource
from sonik_pipeline.table_health import observe_health

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
    days_per_commit: int = Field(
        default=DEFAULT_DAYS_PER_COMMIT,
        ge=1,
        description="A run of many days commits them in groups of this many (each group one atomic snapshot), "
        "so a year's backfill makes 12 commits rather than 365.",
    )
    skip_unreadable_files: bool = Field(
        default=False,
        description="Ingest a day even when some of its landing files cannot be read (cut short, corrupt); "
        "they are quarantined and named in the metadata. Off: such a day fails and plays is unchanged.",
    )


def _day_metadata(result: DayIngestResult) -> dict[str, Any]:
    totals, report = result.totals, result.plays
    return {
        "rows_written": dg.MetadataValue.int(result.rows_written),
        "rows_before": dg.MetadataValue.int(result.rows_before),
        "rows_rejected": dg.MetadataValue.int(totals.invalid),
        "rejected_by_reason": dg.MetadataValue.json(dict(totals.rejected_by_reason)),
        "duplicates_dropped": dg.MetadataValue.int(totals.duplicates),
        "events_read": dg.MetadataValue.int(totals.seen),
        "unreadable_files_skipped": dg.MetadataValue.json(list(result.unreadable_files_skipped)),
        "landing_files_read": dg.MetadataValue.int(result.files_read),
        # Files (new, grown or rewritten) first read after the day's first ingest, and their events.
        "late_files": dg.MetadataValue.int(result.late.files),
        "late_events": dg.MetadataValue.int(result.late.events),
        "late_data": dg.MetadataValue.text(result.late.describe()),
        "snapshot_id": dg.MetadataValue.text(str(report.snapshot_id)),
        "operation": dg.MetadataValue.text(report.operation),
        "data_files_added": dg.MetadataValue.int(result.data_files_added),
        "bytes_added": dg.MetadataValue.int(result.bytes_added),
        "rows_replaced": dg.MetadataValue.int(result.rows_before),
        "table_rows": dg.MetadataValue.int(report.table_rows),
        "schema_evolved": dg.MetadataValue.text(result.schema_changes.describe()),
        "duration_seconds": dg.MetadataValue.float(round(result.seconds, 3)),
        "preview": table_preview(result.preview),
        "dagster/row_count": dg.MetadataValue.int(result.rows_written),
    }


def build_plays_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name="plays",
        partitions_def=partitions,
        # A range of days runs as one run (and `dagster asset materialize --partition-range` needs this);
        # it commits up to days_per_commit days at a time, and holds one day in memory at a time.
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
        engine: LakehouseEngine,
        play_source: PlaySource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization]:
        """Play events for one UTC day, validated and written to the Iceberg table music.plays.

        Each day is replaced atomically (a re-run never doubles rows); a run of many days commits them in
        groups. Events that fail validation go to music.plays_rejected with their reason and raw payload.
        """
        catalog = lakehouse.load()
        done: list[str] = []
        metadata: dict[str, dict[str, Any]] = {}
        rows = 0
        days = [day_of(key) for key in context.partition_keys]
        options = IngestOptions(
            run_id=context.run.run_id,
            max_reject_share=config.max_reject_share,
            max_shrink_share=config.max_shrink_share,
            skip_unreadable_files=config.skip_unreadable_files,
        )
        results = engine.engine().ingest_days(
            catalog, play_source.days(), days, options, config.days_per_commit, context.log.info
        )
        try:
            for result in results:
                key = str(result.day)
                metadata[key] = _day_metadata(result)
                context.add_asset_metadata(metadata[key], partition_key=key)
                context.log.info(
                    f"{key}: wrote {result.rows_written:,} rows in snapshot {result.plays.snapshot_id} "
                    f"({result.totals.rejected:,} rejected, {result.seconds:.1f}s)"
                    + (f"; {result.late.describe()}" if result.late.files else "")
                )
                done.append(key)
                rows += result.rows_written
        except (IngestError, FileNotFoundError, TableLocationTaken) as exc:
            # Days committed before the failing one did land: record them, then fail with the reason.
            for committed in done:  # yielded, not logged: events logged by a step that then fails are dropped
                yield dg.AssetMaterialization(asset_key=PLAYS_KEY, partition=committed, metadata=metadata[committed])
            failed = next((k for k in context.partition_keys if k not in done), None)
            raise dg.Failure(description=str(exc), metadata={"failed_day": failed, "days_committed": done}) from exc
        if done:  # music.plays after the run, plotted on the asset (its Plots tab, "Events")
            observe_health(context, [catalog.load_table(PLAYS.identifier)])
        yield dg.MaterializeResult(
            metadata={"source": play_source.describe(), "days_in_run": len(done), "rows_in_run": rows}
        )

    return plays
