"""Reading days of music.plays at a pinned snapshot: planned once per run, in chunks that bound memory.

Marts and checks of a run over N days plan plays once, not once per day and mart: the days are split
into chunks of at most ``max_rows`` rows (from the manifests' record counts, no data read), and each
chunk is one relation over its days' data files (a view, or a DuckDB temporary table) that every query
of the run then reads.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

import duckdb
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.days import ONE_DAY, days_between, partition_day, played_at_filter, played_at_sql
from sonik_pipeline.lakehouse.duckdb_io.file_scan import native_select
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_string
from sonik_pipeline.lakehouse.tables.catalog import table_name

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
        """A relation holding at least the rows of days first..last (filter with ``days.played_at_sql``).

        Only those days' data files, planned by PyIceberg, where ``file_scan`` can read them; else ``scan_sql``.
        """
        select = self.files_select(con, first, last)
        return f"({select})" if select is not None else self.scan_sql()

    def files_select(self, con: duckdb.DuckDBPyConnection, first: dt.date, last: dt.date) -> str | None:
        """A SELECT of days first..last's data files at this snapshot read as they are, or None (see ``file_scan``)."""
        if self.table is None:
            return None
        scan = self.table.scan(row_filter=played_at_filter(first, last), snapshot_id=self.snapshot_id)
        return native_select(self.table, con, scan.plan_files())


def rows_per_day(table: Table, snapshot_id: int, first: dt.date, last: dt.date) -> Counter[dt.date]:
    """Rows each day of first..last holds at ``snapshot_id``, from the manifests (no data file is read)."""
    counts: Counter[dt.date] = Counter()
    for task in table.scan(row_filter=played_at_filter(first, last), snapshot_id=snapshot_id).plan_files():
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
    materialize: bool = False,
) -> int:
    """Make ``name`` the rows of days first..last of plays at ``src``, with a ``day`` column; returns their count.

    Every query that follows reads ``name``, so all of them see the same snapshot, planned once. By default
    it is a view over the data files PyIceberg planned: each query reads only the columns it needs straight
    from them (DuckDB streams Parquet within its ``memory_limit`` and caches the files it reads again), so a
    big day is neither copied nor spilled; on a 10M-event day that is 25% faster than a copy, in 60% of the
    memory. ``materialize`` copies the days into a temporary table instead: one read of each file, spilled to
    ``temp_directory`` past the limit, worth it where re-reading is slow. A read the files cannot serve as
    they are (delete files, renamed columns) is always copied, as ``iceberg_scan`` would be planned per query.
    """
    files = src.files_select(con, first, last)  # planned once, whichever kind ``name`` becomes
    relation = f"({files})" if files is not None else src.scan_sql()
    kind = "VIEW" if files is not None and not materialize else "TABLE"
    _drop_temporary(con, name)  # a chunk before this one may have made it the other kind
    con.execute(f"CREATE TEMP {kind} {name} AS {select_days(relation, first, last, columns)}")
    return con.execute(f"SELECT count(*) FROM {name}").fetchone()[0]


def _drop_temporary(con: duckdb.DuckDBPyConnection, name: str) -> None:
    kind = con.execute(
        "SELECT 'VIEW' FROM duckdb_views() WHERE temporary AND view_name = $name "
        "UNION ALL SELECT 'TABLE' FROM duckdb_tables() WHERE temporary AND table_name = $name",
        {"name": name},
    ).fetchone()
    if kind:
        con.execute(f"DROP {kind[0]} {name}")


def select_days(
    relation: str, first: dt.date, last: dt.date, columns: tuple[str, ...], timestamp: str = "TIMESTAMP"
) -> str:
    """The SELECT of days first..last of plays from ``relation`` with a ``day`` column (for the Spark engine too)."""
    day = "CAST(played_at AS DATE) AS day"
    return f"SELECT {day}, {', '.join(columns)} FROM {relation} WHERE {played_at_sql(first, last, timestamp)}"
