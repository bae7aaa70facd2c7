"""Benchmark: compacting a week of hourly micro-batches in ``music.plays``, and what it does for queries.

Setup, in a fresh temporary directory (SQLite catalog, local warehouse): ``music.plays`` holding
``--days`` days (default 7, the last one ``LAST_DAY``), each written as 24 hourly appends of
``--events-per-hour`` synthetic events (default 4,000), i.e. one commit and one small file per hour:
168 files for a week.

What it measures:

* **Query**: the tutorial's DuckDB query, the top 10 artists over the last 3 days, against
  ``iceberg_scan(table.metadata_location)``, with ``current_timestamp`` replaced by the fixed end of the
  last day so the result never depends on today. Median of ``--repeat`` runs after one warm-up, each on a
  fresh DuckDB connection (iceberg loaded before timing), so nothing is cached between runs but the OS
  page cache. "Files read" is DuckDB's own ``Total Files Read`` from ``EXPLAIN ANALYZE``.
* **Compaction**: ``compact_table(table, CompactionOptions(sort_by=("artist", "track_id")))``, the real
  maintenance code path (read, sort, write, read-back verification, one commit), timed once.
* **After**: the same query measurement on the reloaded, compacted table; this is the same-run baseline.

Targets: the query reads >= 24x fewer files after compaction (72 -> 3 for 3 days of 24 hourly files),
and it gets faster (median before / median after > 1).

The exit code is 0 whether or not the targets are met (this is a report); it is non-zero if the build,
the compaction or a query fails, if the table loses or gains rows, or if the query result after
compaction differs from the one before.

Usage: ``.venv/bin/python benchmarks/compaction.py [--events-per-hour N] [--days 7] [--repeat R]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.sources.synthetic import catalogue, synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.maintenance.compaction import CompactionOptions, CompactionReport, compact_table

LAST_DAY = dt.date(2026, 4, 20)
HOURS_PER_DAY = 24
QUERY_DAYS = 3
DEFAULT_EVENTS_PER_HOUR = 4_000
DEFAULT_DAYS = 7
DEFAULT_REPEAT = 7
FILES_READ_CUT_TARGET = 24.0
SPEEDUP_TARGET = 1.0
SORT_BY = ("artist", "track_id")
# The tutorial's query, with current_timestamp pinned to the end of LAST_DAY.
NOW_LITERAL = f"TIMESTAMP '{LAST_DAY + dt.timedelta(days=1)} 00:00:00'"
QUERY = (
    "SELECT artist, COUNT(*) AS plays FROM iceberg_scan('{metadata}') "
    f"WHERE played_at > {NOW_LITERAL} - INTERVAL {QUERY_DAYS} DAY "
    "GROUP BY artist ORDER BY plays DESC LIMIT 10"
)
FILES_READ_RE = re.compile(r"Total Files Read:\s*([\d,]+)")

Rows = list[tuple[object, ...]]


@dataclass(frozen=True)
class QueryRun:
    """The query measured against one table state."""

    metadata_location: str
    seconds: list[float]
    files_read: int
    rows: Rows

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass(frozen=True)
class TableShape:
    rows: int
    files: int
    bytes: int


# ---------------------------------------------------------------------------------------------
# Setup: a week of hourly micro-batches
# ---------------------------------------------------------------------------------------------


def bench_days(days: int) -> list[dt.date]:
    return [LAST_DAY - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def build_table(catalog: Catalog, days: int, events_per_hour: int) -> Table:
    """``days`` days of ``music.plays``, 24 appends (commits, small files) per day."""
    table, _ = ensure_table(catalog, PLAYS)
    schema = table.schema().as_arrow()
    for day in bench_days(days):
        for hour in range(HOURS_PER_DAY):
            table.append(synthetic_batch(day, events_per_hour, batch=hour).cast(schema))
    return table


def table_shape(table: Table) -> TableShape:
    files = [task.file for task in table.scan().plan_files()]
    return TableShape(
        rows=sum(f.record_count for f in files),
        files=len(files),
        bytes=sum(f.file_size_in_bytes for f in files),
    )


# ---------------------------------------------------------------------------------------------
# Query measurement
# ---------------------------------------------------------------------------------------------


def fresh_connection() -> duckdb.DuckDBPyConnection:
    """A new in-memory DuckDB database with iceberg loaded: no state shared with earlier runs."""
    return load_iceberg(duckdb.connect())


def run_query(sql: str) -> tuple[float, Rows]:
    con = fresh_connection()
    try:
        started = time.perf_counter()
        rows = con.execute(sql).fetchall()
        return time.perf_counter() - started, rows
    finally:
        con.close()


def files_read(sql: str) -> int:
    """DuckDB's ``Total Files Read`` for the query, summed over its scans, from ``EXPLAIN ANALYZE``."""
    con = fresh_connection()
    try:
        plan = "\n".join(str(cell) for row in con.execute(f"EXPLAIN ANALYZE {sql}").fetchall() for cell in row)
    finally:
        con.close()
    counts = [int(m.replace(",", "")) for m in FILES_READ_RE.findall(plan)]
    if not counts:
        raise RuntimeError(f"no 'Total Files Read' in EXPLAIN ANALYZE output:\n{plan}")
    return sum(counts)


def measure_query(metadata_location: str, repeat: int) -> QueryRun:
    sql = QUERY.format(metadata=metadata_location)
    _, rows = run_query(sql)  # warm-up
    seconds = [run_query(sql)[0] for _ in range(repeat)]
    return QueryRun(metadata_location, seconds, files_read(sql), rows)


def timed_compaction(table: Table) -> tuple[float, CompactionReport]:
    started = time.perf_counter()
    report = compact_table(table, CompactionOptions(sort_by=SORT_BY))
    return time.perf_counter() - started, report


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _ratio(before: float, after: float) -> float:
    return before / after if after > 0 else float("inf")


def _mib(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v * 1000:.0f}" for v in values)


def print_report(
    args: argparse.Namespace,
    build_seconds: float,
    shapes: tuple[TableShape, TableShape],
    compaction: tuple[float, CompactionReport],
    queries: tuple[QueryRun, QueryRun],
) -> None:
    (shape_before, shape_after), (compact_seconds, report), (before, after) = shapes, compaction, queries
    speedup = _ratio(before.median, after.median)
    cut = _ratio(before.files_read, after.files_read)
    days = bench_days(args.days)

    print(
        f"sonik_pipeline compaction benchmark: {args.days} day(s) {days[0]}..{days[-1]} x {HOURS_PER_DAY} hourly "
        f"appends x {args.events_per_hour:,} events, query median of {args.repeat} run(s)"
    )
    print(f"  rows in music.plays   {shape_before.rows:,} (built in {build_seconds:.1f} s)")
    print(
        f"  table files           {shape_before.files} -> {shape_after.files}   "
        f"({_mib(shape_before.bytes)} -> {_mib(shape_after.bytes)})"
    )
    print(
        f"  compaction            {compact_seconds:7.2f} s   {len(report.partitions)} partition(s) rewritten, "
        f"files {report.files_before} -> {report.files_after}, "
        f"bytes {report.bytes_before:,} -> {report.bytes_after:,}, sort_by={','.join(SORT_BY)}"
    )
    print(f"  query before          {before.median * 1000:7.1f} ms  runs (ms): {_runs(before.seconds)}")
    print(f"  query after           {after.median * 1000:7.1f} ms  runs (ms): {_runs(after.seconds)}")
    print(
        f"  query speed-up        {speedup:7.2f} x   target > {SPEEDUP_TARGET:g}x"
        f"{'':14}{_verdict(speedup > SPEEDUP_TARGET)}"
    )
    print(
        f"  files read by query   {before.files_read} -> {after.files_read}  ({cut:.1f}x fewer)   "
        f"target >= {FILES_READ_CUT_TARGET:g}x   {_verdict(cut >= FILES_READ_CUT_TARGET)}"
    )
    same = sorted(before.rows) == sorted(after.rows)
    print(
        f"  query result          {'identical' if same else 'DIFFERENT'} before and after "
        f"({len(before.rows)} -> {len(after.rows)} rows); top: {_top(after.rows)}"
    )


def _top(rows: Rows) -> str:
    return ", ".join(f"{artist} {plays:,}" for artist, plays in rows[:3])


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--events-per-hour", type=int, default=DEFAULT_EVENTS_PER_HOUR, help="events per hourly append (default 4,000)"
    )
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"days in the table (default {DEFAULT_DAYS})")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="query runs per timing; median reported")
    args = parser.parse_args(argv)
    if args.events_per_hour < 1 or args.days < 1 or args.repeat < 1:
        parser.error("--events-per-hour, --days and --repeat must be at least 1")
    return args


def check(before: QueryRun, after: QueryRun, shapes: tuple[TableShape, TableShape], expected_rows: int) -> list[str]:
    """What went wrong with the data (not the targets): rows lost or gained, a different query result."""
    errors = [
        f"music.plays holds {shape.rows:,} rows {when} compaction, expected {expected_rows:,}"
        for when, shape in zip(("before", "after"), shapes, strict=True)
        if shape.rows != expected_rows
    ]
    if sorted(before.rows) != sorted(after.rows):
        errors.append(f"query result changed by compaction:\n  before {before.rows}\n  after  {after.rows}")
    return errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    catalogue()  # cached one-time build, kept out of every timing
    with tempfile.TemporaryDirectory(prefix="sonik-bench-") as tmp:
        catalog = open_catalog("sonik", f"sqlite:///{tmp}/catalog.db", Path(tmp, "warehouse").as_uri())
        started = time.perf_counter()
        table = build_table(catalog, args.days, args.events_per_hour)
        build_seconds = time.perf_counter() - started
        shape_before = table_shape(table)
        before = measure_query(table.metadata_location, args.repeat)

        compaction = timed_compaction(catalog.load_table(PLAYS.identifier))

        table = catalog.load_table(PLAYS.identifier)
        if table.metadata_location == before.metadata_location:
            print("ERROR: compaction committed nothing; the table is unchanged", file=sys.stderr)
            return 1
        shape_after = table_shape(table)
        after = measure_query(table.metadata_location, args.repeat)

    shapes = (shape_before, shape_after)
    print_report(args, build_seconds, shapes, compaction, (before, after))
    errors = check(before, after, shapes, args.days * HOURS_PER_DAY * args.events_per_hour)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
