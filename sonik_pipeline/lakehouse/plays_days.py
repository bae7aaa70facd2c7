"""Reading days of music.plays at a pinned snapshot: once per run, in chunks that bound memory.

Marts and checks of a run over N days read plays once, not once per day and mart: the days are split
into chunks of at most ``max_rows`` rows (from the manifests' record counts, no data read), and each
chunk is one read of its days' data files into a DuckDB temporary table that every query of the run then
reads.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

import duckdb
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.catalog import table_name
from sonik_pipeline.lakehouse.days import ONE_DAY, day_bounds, days_between, partition_day
from sonik_pipeline.lakehouse.file_scan import native_select
from sonik_pipeline.lakehouse.sql import sql_string

# Rows of plays one read holds at most (a day is never split: a bigger day is a chunk of its own).
DEFAULT_MAX_ROWS_PER_READ = 20_000_000
PLAYS_DAYS = "plays_days"


@dataclass(frozen=True)
class PlaysSnapshot:
    """music.plays pinned at one snapshot: what a mart read, so its numbers can be reproduced.

    ``table`` (not part of its identity) lets a read of some days be planned by PyIceberg and read file
    by file (``file_scan``): a cost that follows the days read, not the table's age.
    """

    metadata_location: str
    snapshot_id: int
    table: Table | None = field(default=None, compare=False, repr=False)

    @classmethod
    def current(cls, table: Table) -> PlaysSnapshot:
        snapshot = table.current_snapshot()
        if snapshot is None:
            raise LookupError(f"{table_name(table)} has no snapshot yet: materialize plays first")
        return cls(table.metadata_location, snapshot.snapshot_id, table)

    def scan_sql(self) -> str:
        """The whole snapshot as DuckDB's ``iceberg_scan``."""
        return f"iceberg_scan({sql_string(self.metadata_location)}, snapshot_from_id={self.snapshot_id})"

    def days_sql(self, con: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date) -> str:
        """A relation holding at least the rows of days first..last (filter with ``played_between``).

        Only those days' data files, planned by PyIceberg, where ``file_scan`` can read them; else ``scan_sql``.
        """
        if self.table is not None:
            scan = self.table.scan(row_filter=day_range_filter(first, last), snapshot_id=self.snapshot_id)
            select = native_select(self.table, con, scan.plan_files())
            if select is not None:
                return f"({select})"
        return self.scan_sql()


def played_between(first: dt.date, last: dt.date) -> str:
    """SQL predicate on played_at for whole UTC days first..last (pruned to those days' partitions)."""
    start, end = day_bounds(first, last)
    return f"played_at >= TIMESTAMP '{start}' AND played_at < TIMESTAMP '{end}'"


def day_range_filter(first: dt.date, last: dt.date) -> str:
    """The same days as a PyIceberg row filter."""
    start, end = day_bounds(first, last)
    return f"played_at >= '{start.isoformat()}' AND played_at < '{end.isoformat()}'"


def rows_per_day(table: Table, snapshot_id: int, first: dt.date, last: dt.date) -> Counter[dt.date]:
    """Rows each day of first..last holds at ``snapshot_id``, from the manifests (no data file is read)."""
    counts: Counter[dt.date] = Counter()
    for task in table.scan(row_filter=day_range_filter(first, last), snapshot_id=snapshot_id).plan_files():
        data_file = task.file
        day = partition_day(table.specs()[data_file.spec_id], table.schema(), data_file.partition)
        if day is not None and first <= day <= last:
            counts[day] += data_file.record_count
    return counts


def chunk_days(
    per_day: Counter[dt.date], first: dt.date, last: dt.date, max_rows: int, lookback_days: int = 0
) -> list[tuple[dt.date, dt.date]]:
    """first..last as consecutive (first, last) chunks whose rows, with ``lookback_days`` before each, fit ``max_rows``.

    Whole days only: a day over ``max_rows`` is a chunk of its own.
    """
    chunks: list[tuple[dt.date, dt.date]] = []
    start = first
    for day in days_between(first, last):
        window = days_between(start - dt.timedelta(days=lookback_days), day)
        if day > start and sum(per_day.get(d, 0) for d in window) > max_rows:
            chunks.append((start, day - ONE_DAY))
            start = day
    chunks.append((start, last))
    return chunks


def load_plays_days(
    con: duckdb.DuckDBPyConnection,
    src: PlaysSnapshot,
    first: dt.date,
    last: dt.date,
    columns: tuple[str, ...],
    name: str = PLAYS_DAYS,
) -> int:
    """Read days first..last of plays at ``src`` into a DuckDB temporary table ``name`` with a ``day`` column.

    One read of the days' files for every query that follows; with a ``memory_limit``
    and a ``temp_directory`` DuckDB spills a big day to disk instead of failing. Returns the rows read.
    """
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {plays_days_sql(con, src, first, last, columns)}")
    return con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]


def plays_days_sql(
    con: duckdb.DuckDBPyConnection, src: PlaysSnapshot, first: dt.date, last: dt.date, columns: tuple[str, ...]
) -> str:
    """The SELECT that reads days first..last of plays at ``src``, pruned to those days' data files."""
    return (
        f"SELECT CAST(played_at AS DATE) AS day, {', '.join(columns)} "
        f"FROM {src.days_sql(con, first, last)} WHERE {played_between(first, last)}"
    )
