"""The marts: daily aggregates and rolling views of plays, computed by the engine and stored as Iceberg tables.

``daily_marts`` is one multi-asset (one step) for the six daily marts, and each rolling view is its own
(Dagster maps one window of upstream days per step). A run reads the plays of its days (and of the
windows reaching back from them) once, at one pinned snapshot, into DuckDB (or Spark, with
``SONIK_ENGINE=spark``), and computes every selected mart from that read; each mart keeps its own table,
metadata and checks, and can still be materialized or backfilled alone (``can_subset``), with the same rows.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from sonik_pipeline.assets.metadata import table_preview
from sonik_pipeline.assets.plays import PLAYS_KEY
from sonik_pipeline.lakehouse.marts.queries import DAILY_MARTS, ROLLING_MARTS, Mart
from sonik_pipeline.lakehouse.marts.run import PREVIEW_ROWS, MartDayReport, MartOptions, MartReport
from sonik_pipeline.partitions import day_of
from sonik_pipeline.resources import LakehouseCatalog, LakehouseDuckDB, LakehouseEngine
from sonik_pipeline.table_health import observe_health

# Follows plays without a click: any day of plays materialized (by hand, a schedule or a backfill, old
# days included) requests the marts over it once the daemon's automation sensor sees it. This is
# eager() for every partition, not only the latest; it waits while plays or the mart is in progress.
FOLLOW_PLAYS = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
# A rolling view also refreshes while days of its window are still missing (a young lakehouse has no
# 14 days for trending yet); its metadata says how many days of the window had plays.
FOLLOW_PLAYS_WINDOW = FOLLOW_PLAYS.without(~dg.AutomationCondition.any_deps_missing())


class MartConfig(dg.Config):
    top_n: int = Field(default=MartOptions.top_n, description="Rows kept by ranked marts (top tracks, top artists).")
    max_rows_per_read: int = Field(
        default=MartOptions.max_rows_per_read,
        description="Read plays in chunks of whole days of at most this many rows (a bigger day alone); the local "
        "engine's memory bound (Spark reads a run's days at once and spills what it cannot hold).",
    )
    materialize_plays: bool = Field(
        default=MartOptions.materialize_plays,
        description="Copy each chunk of plays into a DuckDB temporary table (one read of each file, spilled past "
        "the memory limit) instead of a view over the planned files that each mart query reads column by "
        "column; for storage where reading a file again is slow. On Spark: the read is persisted.",
    )


def _plays_dependency(mart: Mart) -> dg.AssetDep:
    if mart.window_days == 1:
        return dg.AssetDep(PLAYS_KEY)
    # A rolling view reads a window of days of plays, and is refreshed when any of them changes.
    return dg.AssetDep(
        PLAYS_KEY,
        partition_mapping=dg.TimeWindowPartitionMapping(
            start_offset=-(mart.window_days - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
        ),
    )


def _spec(mart: Mart) -> dg.AssetSpec:
    return dg.AssetSpec(
        mart.name,
        description=mart.description,
        deps=[_plays_dependency(mart)],
        automation_condition=FOLLOW_PLAYS if mart.window_days == 1 else FOLLOW_PLAYS_WINDOW,
        group_name="marts" if mart.window_days == 1 else "rolling",
        kinds={"iceberg", "duckdb"},
        metadata={"dagster/table_name": f"sonik.{mart.table.identifier}", "window_days": mart.window_days},
        tags={"sonik/table": mart.table.identifier},
    )


def _day_metadata(report: MartReport, day: MartDayReport) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "rows": dg.MetadataValue.int(day.rows),
        "plays_snapshot_id": dg.MetadataValue.text(str(report.plays.snapshot_id)),
        "dagster/row_count": dg.MetadataValue.int(day.rows),
    }
    if report.mart.window_days > 1:
        metadata["days_with_plays"] = f"{day.days_with_plays} of {report.mart.window_days}"
    if day.preview is not None:
        metadata["top_rows"] = table_preview(day.preview, PREVIEW_ROWS)
    return metadata


def _run_metadata(report: MartReport) -> dict[str, Any]:
    return {
        "snapshot_id": dg.MetadataValue.text(str(report.commit.snapshot_id)),
        "plays_snapshot_id": dg.MetadataValue.text(str(report.plays.snapshot_id)),
        "rows_in_run": dg.MetadataValue.int(report.rows),
        "plays_reads": dg.MetadataValue.int(report.plays_reads),  # reads of plays this step made for the run
        "data_files_added": dg.MetadataValue.int(report.commit.files_added),
        "bytes_added": dg.MetadataValue.int(report.commit.bytes_added),
        "query_seconds": dg.MetadataValue.float(round(report.query_seconds, 3)),
        "commit_seconds": dg.MetadataValue.float(round(report.commit_seconds, 3)),
        "days_in_run": dg.MetadataValue.int(len(report.days)),
    }


def build_marts_asset(name: str, marts: Sequence[Mart], partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    by_key = {dg.AssetKey(mart.name): mart for mart in marts}

    @dg.multi_asset(
        name=name,
        specs=[_spec(mart) for mart in marts],
        partitions_def=partitions,
        can_subset=True,
        # A range of days, even a year, is one run: plays is read once per chunk of days, not per day.
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def _marts(
        context: dg.AssetExecutionContext,
        config: MartConfig,
        lakehouse: LakehouseCatalog,
        duckdb: LakehouseDuckDB,
        engine: LakehouseEngine,
    ) -> Iterator[dg.MaterializeResult]:
        selected = [mart for key, mart in by_key.items() if key in context.selected_asset_keys]
        keys = {day_of(key): key for key in context.partition_keys}
        options = MartOptions(
            top_n=config.top_n,
            max_rows_per_read=config.max_rows_per_read,
            materialize_plays=config.materialize_plays,
            run_id=context.run.run_id,
        )
        reports = engine.engine().build_marts(
            lakehouse.load(), selected, list(keys), options, duckdb.get_connection, context.log.info
        )
        for report in reports:
            for day in report.days:
                context.add_asset_metadata(
                    _day_metadata(report, day), asset_key=report.mart.name, partition_key=keys[day.day]
                )
            yield dg.MaterializeResult(asset_key=report.mart.name, metadata=_run_metadata(report))
        catalog = lakehouse.load()  # each mart table after the run, plotted on its asset
        observe_health(context, [catalog.load_table(mart.table.identifier) for mart in selected])

    return _marts


def build_mart_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    # One step for the six daily marts; a rolling view each, as Dagster maps one upstream window per step.
    return [
        build_marts_asset("daily_marts", DAILY_MARTS, partitions),
        *(build_marts_asset(mart.name, [mart], partitions) for mart in ROLLING_MARTS),
    ]
