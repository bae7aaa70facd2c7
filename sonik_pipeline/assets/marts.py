"""The marts: daily aggregates and rolling views of plays, computed by DuckDB and stored as Iceberg tables.

``daily_marts`` is one multi-asset (one step) for the six daily marts, and each rolling view is its own
(Dagster maps one window of upstream days per step). A run reads the plays of its days (and of the
windows reaching back from them) once, at one pinned snapshot, into DuckDB, and computes every selected
mart from that read; each mart keeps its own table, metadata and checks, and can still be materialized
or backfilled alone (``can_subset``), with the same rows.
"""

import datetime as dt
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from sonik_pipeline.assets.metadata import table_preview
from sonik_pipeline.assets.plays import PLAYS_KEY
from sonik_pipeline.lakehouse.days import days_between
from sonik_pipeline.lakehouse.marts.queries import (
    DAILY_MARTS,
    DEFAULT_TOP_N,
    MART_COLUMNS,
    ROLLING_MARTS,
    Mart,
    mart_rows,
    replace_mart_days,
    window_start,
)
from sonik_pipeline.lakehouse.reads.plays_days import (
    DEFAULT_MAX_ROWS_PER_READ,
    PlaysSnapshot,
    chunk_days,
    load_plays_days,
    rows_per_day,
)
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.writes import FileStager
from sonik_pipeline.partitions import day_of
from sonik_pipeline.resources import LakehouseCatalog, LakehouseDuckDB

# Follows plays without a click: any day of plays materialized (by hand, a schedule or a backfill, old
# days included) requests the marts over it once the daemon's automation sensor sees it. This is
# eager() for every partition, not only the latest; it waits while plays or the mart is in progress.
FOLLOW_PLAYS = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
# A rolling view also refreshes while days of its window are still missing (a young lakehouse has no
# 14 days for trending yet); its metadata says how many days of the window had plays.
FOLLOW_PLAYS_WINDOW = FOLLOW_PLAYS.without(~dg.AutomationCondition.any_deps_missing())
PREVIEW_ROWS = 10


class MartConfig(dg.Config):
    top_n: int = Field(default=DEFAULT_TOP_N, description="Rows kept by ranked marts (top tracks, top artists).")
    max_rows_per_read: int = Field(
        default=DEFAULT_MAX_ROWS_PER_READ,
        description="Read plays in chunks of whole days of at most this many rows (a bigger day alone).",
    )
    materialize_plays: bool = Field(
        default=False,
        description="Copy each chunk of plays into a DuckDB temporary table (one read of each file, spilled past "
        "the memory limit) instead of a view over the planned files that each mart query reads column by "
        "column; for storage where reading a file again is slow.",
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


@contextmanager
def _discard_on_error(stagers: Sequence[FileStager]) -> Iterator[None]:
    """Staged files of a failed run are never committed: delete them rather than leave orphans."""
    try:
        yield
    except BaseException:
        for stager in stagers:
            stager.discard()
        raise


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
        context: dg.AssetExecutionContext, config: MartConfig, lakehouse: LakehouseCatalog, duckdb: LakehouseDuckDB
    ) -> Iterator[dg.MaterializeResult]:
        selected = [mart for key, mart in by_key.items() if key in context.selected_asset_keys]
        catalog = lakehouse.load()
        plays = catalog.load_table(PLAYS.identifier)
        # Every day and mart of this run reads the same pinned snapshot of plays.
        src = PlaysSnapshot.current(plays)
        days = [day_of(key) for key in context.partition_keys]
        first, last = days[0], days[-1]
        lookback = dt.timedelta(days=max(mart.window_days for mart in selected) - 1)  # rolling views reach back
        per_day = rows_per_day(plays, src.snapshot_id, first - lookback, last)
        tables = {mart.name: ensure_table(catalog, mart.table)[0] for mart in selected}
        stagers = {mart.name: FileStager(tables[mart.name]) for mart in selected}
        rows_by_day: dict[str, dict] = {mart.name: {} for mart in selected}
        previews = {}
        query_seconds = dict.fromkeys(rows_by_day, 0.0)
        chunks = chunk_days(per_day, first, last, config.max_rows_per_read, lookback.days)
        uncommitted = list(stagers.values())  # discarded on any error, so a failed run leaves no staged file
        with duckdb.get_connection() as con, _discard_on_error(uncommitted):
            for chunk_first, chunk_last in chunks:
                started = time.monotonic()
                read = load_plays_days(
                    con, src, chunk_first - lookback, chunk_last, MART_COLUMNS, materialize=config.materialize_plays
                )
                how = "copied into DuckDB" if config.materialize_plays else "planned"
                context.log.info(
                    f"{chunk_first}..{chunk_last}: {read:,} plays at snapshot {src.snapshot_id}, {how} in "
                    f"{time.monotonic() - started:.1f}s"
                )
                for mart in selected:
                    started = time.monotonic()
                    rows = mart_rows(con, mart, chunk_first, chunk_last, config.top_n)
                    query_seconds[mart.name] += time.monotonic() - started
                    stagers[mart.name].add(rows)
                    for day, count in _count_by_day(rows).items():
                        rows_by_day[mart.name][day] = count
                    if chunk_last == last:
                        previews[mart.name] = rows.filter(pc.equal(rows.column("day"), pa.scalar(last, pa.date32())))
        for mart in selected:
            started = time.monotonic()
            with _discard_on_error(uncommitted):
                files = stagers[mart.name].finish()
                uncommitted.remove(stagers[mart.name])  # from here its commit deletes them if it does not land
                report = replace_mart_days(
                    tables[mart.name], first, last, files, src, {"dagster.run-id": context.run.run_id}
                )
            context.log.info(f"{mart.name} {first}..{last}: committed snapshot {report.snapshot_id}")
            for day, key in zip(days, context.partition_keys, strict=True):
                day_rows = rows_by_day[mart.name].get(day, 0)
                metadata = {
                    "rows": dg.MetadataValue.int(day_rows),
                    "plays_snapshot_id": dg.MetadataValue.text(str(src.snapshot_id)),
                    "dagster/row_count": dg.MetadataValue.int(day_rows),
                }
                if mart.window_days > 1:
                    window = days_between(window_start(mart, day), day)
                    metadata["days_with_plays"] = f"{sum(1 for d in window if per_day.get(d))} of {mart.window_days}"
                if day == last and mart.name in previews:
                    metadata["top_rows"] = table_preview(previews[mart.name], PREVIEW_ROWS)
                context.add_asset_metadata(metadata, asset_key=mart.name, partition_key=key)
            yield dg.MaterializeResult(
                asset_key=mart.name,
                metadata={
                    "snapshot_id": dg.MetadataValue.text(str(report.snapshot_id)),
                    "plays_snapshot_id": dg.MetadataValue.text(str(src.snapshot_id)),
                    "rows_in_run": dg.MetadataValue.int(sum(rows_by_day[mart.name].values())),
                    "plays_reads": dg.MetadataValue.int(len(chunks)),  # reads of plays this step made for the run
                    "data_files_added": dg.MetadataValue.int(report.files_added),
                    "bytes_added": dg.MetadataValue.int(report.bytes_added),
                    "query_seconds": dg.MetadataValue.float(round(query_seconds[mart.name], 3)),
                    "commit_seconds": dg.MetadataValue.float(round(time.monotonic() - started, 3)),
                    "days_in_run": dg.MetadataValue.int(len(days)),
                },
            )

    return _marts


def _count_by_day(rows: pa.Table) -> dict[dt.date, int]:
    if not len(rows):
        return {}
    counts = rows.group_by("day").aggregate([("day", "count")])
    return dict(zip(counts.column("day").to_pylist(), counts.column("day_count").to_pylist(), strict=True))


def build_mart_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    # One step for the six daily marts; a rolling view each, as Dagster maps one upstream window per step.
    return [
        build_marts_asset("daily_marts", DAILY_MARTS, partitions),
        *(build_marts_asset(mart.name, [mart], partitions) for mart in ROLLING_MARTS),
    ]
