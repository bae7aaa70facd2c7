"""The marts: daily aggregates and rolling views of plays, computed by DuckDB and stored as Iceberg tables."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field

from sonik_pipeline.assets.metadata import table_preview
from sonik_pipeline.assets.plays import PLAYS_KEY
from sonik_pipeline.lakehouse.marts import (
    DAILY_MARTS,
    DEFAULT_TOP_N,
    ROLLING_MARTS,
    Mart,
    PlaysSnapshot,
    compute_mart,
    days_with_plays,
    replace_mart_days,
)
from sonik_pipeline.lakehouse.tables import PLAYS, ensure_table
from sonik_pipeline.lakehouse.writes import FileStager
from sonik_pipeline.partitions import day_of
from sonik_pipeline.resources import LakehouseCatalog, LakehouseDuckDB

# Follows plays without a click: any day of plays materialized (by hand, a schedule or a backfill, old
# days included) requests the marts over it once the daemon's automation sensor sees it. This is
# eager() for every partition, not only the latest; it waits while plays or the mart is in progress.
FOLLOW_PLAYS = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
# A rolling view also refreshes while days of its window are still missing (a young lakehouse has no
# 14 days for trending yet); its metadata says how many days of the window had plays.
FOLLOW_PLAYS_WINDOW = FOLLOW_PLAYS.without(~dg.AutomationCondition.any_deps_missing())


class MartConfig(dg.Config):
    top_n: int = Field(default=DEFAULT_TOP_N, description="Rows kept by ranked marts (top tracks, top artists).")


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


@contextmanager
def _discard_on_error(stager: FileStager) -> Iterator[None]:
    """Staged files of a failed run are never committed: delete them rather than leave orphans."""
    try:
        yield
    except BaseException:
        stager.discard()
        raise


def build_mart_asset(mart: Mart, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        name=mart.name,
        description=mart.description,
        partitions_def=partitions,
        deps=[_plays_dependency(mart)],
        backfill_policy=dg.BackfillPolicy.single_run(),
        automation_condition=FOLLOW_PLAYS if mart.window_days == 1 else FOLLOW_PLAYS_WINDOW,
        group_name="marts" if mart.window_days == 1 else "rolling",
        kinds={"iceberg", "duckdb"},
        metadata={"dagster/table_name": f"sonik.{mart.table.identifier}", "window_days": mart.window_days},
        tags={"sonik/table": mart.table.identifier},
    )
    def _mart(
        context: dg.AssetExecutionContext, config: MartConfig, lakehouse: LakehouseCatalog, duckdb: LakehouseDuckDB
    ) -> dg.MaterializeResult:
        catalog = lakehouse.load()
        # Every day in this run reads the same pinned snapshot of plays.
        src = PlaysSnapshot.current(catalog.load_table(PLAYS.identifier))
        table, _ = ensure_table(catalog, mart.table)
        stager = FileStager(table)
        with duckdb.get_connection() as con, _discard_on_error(stager):
            for key in context.partition_keys:
                started = time.monotonic()
                rows = compute_mart(con, mart, src, day_of(key), config.top_n)
                stager.add(rows)
                day_metadata = {
                    "rows": dg.MetadataValue.int(rows.num_rows),
                    "plays_snapshot_id": dg.MetadataValue.text(str(src.snapshot_id)),
                    "query_seconds": dg.MetadataValue.float(round(time.monotonic() - started, 3)),
                    "top_rows": table_preview(rows, 10),
                    "dagster/row_count": dg.MetadataValue.int(rows.num_rows),
                }
                if mart.window_days > 1:
                    covered = days_with_plays(con, src, day_of(key), mart.window_days)
                    day_metadata["days_with_plays"] = f"{covered} of {mart.window_days}"
                context.add_asset_metadata(day_metadata, partition_key=key)
                context.log.info(f"{mart.name} {key}: {rows.num_rows:,} rows from plays snapshot {src.snapshot_id}")
        first, last = day_of(context.partition_keys[0]), day_of(context.partition_keys[-1])
        started = time.monotonic()
        report = replace_mart_days(table, first, last, stager.finish(), src, {"dagster.run-id": context.run.run_id})
        context.log.info(f"{mart.name} {first}..{last}: committed snapshot {report.snapshot_id}")
        return dg.MaterializeResult(
            metadata={
                "snapshot_id": dg.MetadataValue.text(str(report.snapshot_id)),
                "plays_snapshot_id": dg.MetadataValue.text(str(src.snapshot_id)),
                "data_files_added": dg.MetadataValue.int(report.files_added),
                "bytes_added": dg.MetadataValue.int(report.bytes_added),
                "commit_seconds": dg.MetadataValue.float(round(time.monotonic() - started, 3)),
                "days_in_run": dg.MetadataValue.int(len(context.partition_keys)),
            }
        )

    return _mart


def build_mart_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    return [build_mart_asset(mart, partitions) for mart in (*DAILY_MARTS, *ROLLING_MARTS)]
