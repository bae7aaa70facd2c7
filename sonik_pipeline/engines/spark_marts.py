"""The marts on Spark: the local engine's queries run by Spark SQL, each mart's days replaced in one commit.

A run reads music.plays once, at the snapshot current when it starts (``VERSION AS OF``), as the view
``plays_days`` (persisted when ``materialize_plays`` asks, like the local engine's copy), and runs every
mart's query from ``queries.py`` in Spark's dialect over it. Each mart's rows are then written with one
Iceberg overwrite by a filter on its ``day`` column: the files of those days are removed and the new ones
added in one snapshot, so a day that now has no rows ends up empty, never left as it was (Spark's dynamic
``overwritePartitions`` would leave it). The commit carries the same summary properties as the local
engine's (``run.mart_commit_properties``), and the run reports what the local engine reports.

Iceberg's overwrite removes only files whose rows all match the filter. ``user_track_days`` is partitioned
by a bucket of users, and compaction merges a bucket's days into one file, so there the range is widened to
whole files and the rows of the widened days outside the run are written back (read at the snapshot the
write is validated from): the same copy-on-write the local engine's ``replace_days`` does.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.engines.spark_writes import SPARK_TYPES, overwrite
from sonik_pipeline.lakehouse.days import as_day, date_filter, format_days
from sonik_pipeline.lakehouse.marts.dialects import SPARK
from sonik_pipeline.lakehouse.marts.queries import MART_COLUMNS, Mart
from sonik_pipeline.lakehouse.marts.run import (
    PREVIEW_ROWS,
    MartOptions,
    MartReport,
    day_reports,
    lookback_days,
    mart_commit_properties,
    run_days,
)
from sonik_pipeline.lakehouse.reads.plays_days import PLAYS_DAYS, PlaysSnapshot, rows_per_day, select_days
from sonik_pipeline.lakehouse.tables.catalog import table_name
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.writes import CommitReport, commit_report, data_file_days

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession


def build_marts_on_spark(
    session: SparkSession,
    catalog_name: str,
    catalog: Catalog,
    marts: Sequence[Mart],
    days: Sequence[dt.date],
    options: MartOptions,
    progress: Callable[[str], None],
) -> Iterator[MartReport]:
    """Compute ``marts`` for the consecutive ``days`` from plays at its current snapshot; yields each once committed."""
    if not marts or not days:
        return
    first, last = run_days(days)
    # Every table exists before Spark opens the catalog: on SQLite, Iceberg's JDBC catalog keeps a read open from
    # its first use (see ``SparkEngine._fresh_session``) and would not see a table created after it.
    tables = {mart.name: ensure_table(catalog, mart.table)[0] for mart in marts}
    plays = catalog.load_table(PLAYS.identifier)
    src = PlaysSnapshot.current(plays)  # every mart of the run reads this snapshot
    start = first - dt.timedelta(days=lookback_days(marts))
    per_day = rows_per_day(plays, src.snapshot_id, start, last)
    read = session.sql(plays_days_sql(catalog_name, src, start, last))
    if options.materialize_plays:
        from pyspark import StorageLevel

        read = read.persist(StorageLevel.MEMORY_AND_DISK)
    read.createOrReplaceTempView(PLAYS_DAYS)
    how = "persisted by Spark" if options.materialize_plays else "planned by Spark"
    progress(f"{start}..{last}: {sum(per_day.values()):,} plays at snapshot {src.snapshot_id}, {how}")
    try:
        for mart in marts:
            yield _build_mart(session, catalog_name, tables[mart.name], mart, days, src, per_day, options, progress)
    finally:
        session.catalog.dropTempView(PLAYS_DAYS)
        if options.materialize_plays:
            read.unpersist()


def plays_days_sql(catalog_name: str, src: PlaysSnapshot, first: dt.date, last: dt.date) -> str:
    """Days first..last of plays at ``src`` with a ``day`` column, in Spark SQL: ``load_plays_days``' relation."""
    relation = f"{catalog_name}.{PLAYS.identifier} VERSION AS OF {src.snapshot_id}"
    return select_days(relation, first, last, MART_COLUMNS, SPARK.timestamp)


def _build_mart(
    session: SparkSession,
    catalog_name: str,
    table: Table,
    mart: Mart,
    days: Sequence[dt.date],
    src: PlaysSnapshot,
    per_day: dict[dt.date, int],
    options: MartOptions,
    progress: Callable[[str], None],
) -> MartReport:
    first, last = days[0], days[-1]
    started = time.monotonic()
    columns = ", ".join(
        f"CAST({f.name} AS {SPARK_TYPES[type(f.field_type)]}) AS {f.name}" for f in mart.table.schema.fields
    )
    query = mart.sql(PLAYS_DAYS, first, last, options.top_n, SPARK)
    rows, release = computed_once(session.sql(f"SELECT {columns} FROM ({query}) AS mart"))
    try:
        counts = {r["day"]: r["count"] for r in rows.groupBy("day").count().collect()}
        # The query's own order is kept by the persisted rows: the first rows of the last day, as the local engine
        last_rows = rows.where(rows["day"] == last).limit(PREVIEW_ROWS).collect()
        preview = pa.Table.from_pylist([r.asDict() for r in last_rows], schema=mart.table.schema.as_arrow())
        query_seconds = time.monotonic() - started
        started = time.monotonic()
        properties = mart_commit_properties(first, last, src, {"dagster.run-id": options.run_id or ""})
        commit = _replace_days(session, catalog_name, table, rows, first, last, properties, bool(counts))
    finally:
        release()
    progress(f"{mart.name} {format_days(first, last)}: committed snapshot {commit.snapshot_id} (Spark)")
    return MartReport(
        mart=mart,
        commit=commit,
        plays=src,
        days=day_reports(mart, days, counts, per_day, preview),
        # one read of plays for the run (the view), counted as the local engine counts a chunk's; each mart's
        # query scans its files again unless materialize_plays persists it
        plays_reads=1,
        query_seconds=query_seconds,
        commit_seconds=time.monotonic() - started,
    )


def computed_once(rows: DataFrame) -> tuple[DataFrame, Callable[[], None]]:
    """``rows`` computed now and kept (in memory, on local disk past it) with their plan cut, and what
    releases them: counting, previewing and writing a mart read the rows its query computed once.

    Persisting them was not enough: the Iceberg overwrites of four of the seven marts did not use Spark's
    cache and ran the query again, plays scan and all (daily_user_stats: 85 s of its 165 s on ``local[1]``,
    2026-12-07). A session without local checkpoints (Spark Connect before Spark 4) persists them instead.
    """
    from pyspark import StorageLevel

    try:
        kept = rows.localCheckpoint(eager=True)
    except (AttributeError, NotImplementedError):
        kept = rows.persist(StorageLevel.MEMORY_AND_DISK)
        return kept, kept.unpersist

    def release() -> None:
        # The checkpoint's blocks belong to the RDD under its plan; without this they would wait for the
        # JVM's garbage collector (ContextCleaner), a month's backfill of marts on the executors' disks.
        kept._jdf.queryExecution().analyzed().rdd().unpersist(False)

    return kept, release


def _replace_days(
    session: SparkSession,
    catalog_name: str,
    table: Table,
    rows: DataFrame,
    first: dt.date,
    last: dt.date,
    properties: dict[str, str],
    has_rows: bool,
) -> CommitReport:
    """Make ``rows`` the whole of days first..last of ``table`` in one Iceberg overwrite by a ``day`` filter."""
    from pyspark.sql import functions as F

    table.refresh()
    base = table.current_snapshot()
    lo, hi = days_to_rewrite(table, first, last)
    if not has_rows and not table.scan(row_filter=date_filter("day", lo, hi)).plan_files():
        # Nothing to add and nothing to remove: no commit, as on the local engine (``replace_partition``)
        return commit_report(table, base.snapshot_id if base else 0, committed=False)
    name = f"{catalog_name}.{table_name(table)}"
    write_options: dict[str, str] = {}
    if (lo, hi) != (first, last):  # write back the widened days' other rows, as they were at ``base``
        kept = session.sql(
            f"SELECT * FROM {name} VERSION AS OF {base.snapshot_id} "
            f"WHERE day BETWEEN DATE '{lo}' AND DATE '{hi}' AND NOT day BETWEEN DATE '{first}' AND DATE '{last}'"
        )
        rows = rows.unionByName(kept)
        # ... and refuse the commit if another writer changed those days since: the rows written back are stale then
        write_options |= {"validate-from-snapshot-id": str(base.snapshot_id), "isolation-level": "serializable"}
    days = (F.col("day") >= F.lit(lo)) & (F.col("day") <= F.lit(hi))
    return overwrite(table, name, rows, days, write_options, properties)


def days_to_rewrite(table: Table, first: dt.date, last: dt.date) -> tuple[dt.date, dt.date]:
    """first..last widened until no data file holds days both inside and outside it (Iceberg's overwrite by a
    filter removes whole files only): the range itself for a table partitioned by day."""
    field_id = table.schema().find_field("day").field_id
    lo, hi = first, last
    while True:
        files = table.scan(row_filter=date_filter("day", lo, hi)).plan_files()
        bounds = [data_file_days(task.file, field_id) for task in files]
        if any(b is None for b in bounds):
            raise RuntimeError(f"{table_name(table)}: a data file keeps no bounds of day; its days cannot be replaced")
        wider = (min([lo, *(as_day(b[0]) for b in bounds)]), max([hi, *(as_day(b[1]) for b in bounds)]))
        if wider == (lo, hi):
            return lo, hi
        lo, hi = wider
