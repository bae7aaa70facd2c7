"""Data-quality measurements on what was committed: days of plays, and marts against plays.

Each reads a whole range of days at once, grouped by day, in chunks of days (see ``plays_days``), so
the checks of a run over a year cost a few queries rather than one per day.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import duckdb
from pyiceberg.conversions import from_bytes
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.days import day_bounds, days_between, partition_day
from sonik_pipeline.lakehouse.duckdb_io.file_scan import planned_select
from sonik_pipeline.lakehouse.ingest.validation import MAX_DURATION_SECONDS
from sonik_pipeline.lakehouse.reads.plays_days import (
    DEFAULT_MAX_ROWS_PER_READ,
    PlaysSnapshot,
    chunk_days,
    day_range_filter,
    played_between,
    rows_per_day,
)
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SCHEMA


@dataclass(frozen=True)
class PlaysDayQuality:
    """What the checks on one day of music.plays look at; all zeros but ``rows`` means healthy."""

    day: dt.date
    rows: int
    duplicate_play_ids: int
    null_required: int
    rows_outside_day: int
    durations_out_of_range: int


def _rows_outside_their_day(table: Table, src: PlaysSnapshot, first: dt.date, last: dt.date) -> Counter[dt.date]:
    """Per day, rows in data files of its partition whose recorded played_at bounds leave the day.

    Read from the manifests' column bounds: "inside the day" is checked on the day's data files themselves.
    """
    played_at = table.schema().find_field("played_at")
    outside: Counter[dt.date] = Counter()
    for task in table.scan(row_filter=day_range_filter(first, last), snapshot_id=src.snapshot_id).plan_files():
        data_file = task.file
        day = partition_day(table.specs()[data_file.spec_id], table.schema(), data_file.partition)
        if day is None or not first <= day <= last:
            continue
        start, end = day_bounds(day)
        lower = from_bytes(played_at.field_type, data_file.lower_bounds[played_at.field_id])
        upper = from_bytes(played_at.field_type, data_file.upper_bounds[played_at.field_id])
        epoch_us = dt.datetime(1970, 1, 1)
        low, high = (epoch_us + dt.timedelta(microseconds=v) for v in (lower, upper))
        if low < start or high >= end:
            outside[day] += data_file.record_count
    return outside


def plays_quality(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    src: PlaysSnapshot,
    first: dt.date,
    last: dt.date,
    max_rows: int = DEFAULT_MAX_ROWS_PER_READ,
) -> dict[dt.date, PlaysDayQuality]:
    """Measure every day of first..last of plays at ``src``: one grouped query per chunk of days."""
    required = [f.name for f in PLAYS_SCHEMA.fields if f.required]
    nulls = " OR ".join(f"{name} IS NULL" for name in required)
    outside = _rows_outside_their_day(table, src, first, last)
    measured: dict[dt.date, tuple[int, int, int, int]] = {}
    for chunk_first, chunk_last in chunk_days(rows_per_day(table, src.snapshot_id, first, last), first, last, max_rows):
        # One pass over the chunk's data files; distinct ids by their 64-bit hash (no strings
        # kept), so a day with no duplicate (the rule) is settled at once. A hash collision only looks like
        # a duplicate, so a day that seems to have one is counted again exactly.
        for day, rows, by_hash, null_required, bad_durations in con.execute(
            f"""SELECT CAST(played_at AS DATE), count(*), count(*) - count(DISTINCT hash(play_id)),
                       count(*) FILTER (WHERE {nulls}),
                       count(*) FILTER (WHERE duration_seconds < 0 OR duration_seconds > {MAX_DURATION_SECONDS})
                FROM {src.days_sql(con, chunk_first, chunk_last)} WHERE {played_between(chunk_first, chunk_last)}
                GROUP BY 1"""
        ).fetchall():
            duplicates = (
                by_hash
                and con.execute(
                    f"SELECT count(*) - count(DISTINCT play_id) FROM {src.days_sql(con, day, day)} "
                    f"WHERE {played_between(day, day)}"
                ).fetchone()[0]
            )
            measured[day] = (rows, duplicates, null_required, bad_durations)
    quality = {}
    for day in days_between(first, last):
        rows, duplicates, null_required, bad_durations = measured.get(day, (0, 0, 0, 0))
        quality[day] = PlaysDayQuality(day, rows, duplicates, null_required, outside[day], bad_durations)
    return quality


def plays_day_quality(
    con: duckdb.DuckDBPyConnection, table: Table, src: PlaysSnapshot, day: dt.date
) -> PlaysDayQuality:
    """Measure one day of plays at snapshot ``src``."""
    return plays_quality(con, table, src, day, day)[day]


@dataclass(frozen=True)
class DayTotals:
    plays: int
    seconds_played: int


def _totals(con: duckdb.DuckDBPyConnection, query: str) -> dict[dt.date, DayTotals]:
    return {day: DayTotals(int(plays), int(seconds)) for day, plays, seconds in con.execute(query).fetchall()}


def plays_totals_by_day(
    con: duckdb.DuckDBPyConnection, src: PlaysSnapshot, first: dt.date, last: dt.date
) -> dict[dt.date, DayTotals]:
    """Plays and seconds per day of first..last at ``src`` (unknown durations count 0), one query."""
    return _totals(
        con,
        f"""SELECT CAST(played_at AS DATE), count(*), coalesce(sum(duration_seconds), 0)
            FROM {src.days_sql(con, first, last)} WHERE {played_between(first, last)} GROUP BY 1""",
    )


def mart_totals_by_day(
    con: duckdb.DuckDBPyConnection, mart_table: Table, first: dt.date, last: dt.date
) -> dict[dt.date, DayTotals]:
    """Plays and seconds per day of first..last summed over a mart's rows, one query.

    It reads the files PyIceberg plans for those days (one partition a day), so its cost does not grow
    with the mart's history as ``iceberg_scan``'s bind does (see ``file_scan``).
    """
    days = And(GreaterThanOrEqual("day", first.isoformat()), LessThanOrEqual("day", last.isoformat()))
    return _totals(
        con,
        f"""SELECT day, coalesce(sum(plays), 0), coalesce(sum(seconds_played), 0)
            FROM ({planned_select(mart_table, con, days)})
            WHERE day BETWEEN DATE '{first}' AND DATE '{last}' GROUP BY day""",
    )


def plays_totals(con: duckdb.DuckDBPyConnection, src: PlaysSnapshot, day: dt.date) -> DayTotals:
    return plays_totals_by_day(con, src, day, day).get(day, DayTotals(0, 0))


def mart_totals(con: duckdb.DuckDBPyConnection, mart_table: Table, day: dt.date) -> DayTotals:
    return mart_totals_by_day(con, mart_table, day, day).get(day, DayTotals(0, 0))
