"""Data-quality measurements on what was committed: plays per day, and marts against plays."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.days import day_bounds
from sonik_pipeline.lakehouse.marts import PlaysSnapshot, played_between
from sonik_pipeline.lakehouse.sql import sql_string
from sonik_pipeline.lakehouse.tables import PLAYS_SCHEMA
from sonik_pipeline.lakehouse.validation import MAX_DURATION_SECONDS


@dataclass(frozen=True)
class PlaysDayQuality:
    """What the checks on one day of music.plays look at; all zeros but ``rows`` means healthy."""

    day: dt.date
    rows: int
    duplicate_play_ids: int
    null_required: int
    rows_outside_day: int
    durations_out_of_range: int


def plays_day_quality(
    con: duckdb.DuckDBPyConnection, table: Table, src: PlaysSnapshot, day: dt.date
) -> PlaysDayQuality:
    """Measure one day of plays at snapshot ``src``.

    "Inside the day" is checked on the day's data files themselves: the ``played_at`` bounds that
    Iceberg recorded for every file in the ``played_day`` partition must lie within the day.
    """
    required = [f.name for f in PLAYS_SCHEMA.fields if f.required]
    nulls = " OR ".join(f"{name} IS NULL" for name in required)
    rows, duplicates, null_required, bad_durations = con.execute(
        f"""SELECT count(*), count(*) - count(DISTINCT play_id), count(*) FILTER (WHERE {nulls}),
                   count(*) FILTER (WHERE duration_seconds < 0 OR duration_seconds > {MAX_DURATION_SECONDS})
            FROM {src.scan_sql()} WHERE {played_between(day, day)}"""
    ).fetchone()
    start, end = day_bounds(day)
    outside = 0
    files = table.inspect.files(snapshot_id=src.snapshot_id).to_pylist()
    for data_file in files:
        if data_file["partition"].get("played_day") != day:
            continue
        bounds = data_file["readable_metrics"]["played_at"]
        if bounds["lower_bound"] < start or bounds["upper_bound"] >= end:
            outside += data_file["record_count"]
    return PlaysDayQuality(day, rows, duplicates, null_required, outside, bad_durations)


@dataclass(frozen=True)
class DayTotals:
    plays: int
    seconds_played: int


def plays_totals(con: duckdb.DuckDBPyConnection, src: PlaysSnapshot, day: dt.date) -> DayTotals:
    plays, seconds = con.execute(
        f"SELECT count(*), coalesce(sum(duration_seconds), 0) FROM {src.scan_sql()} WHERE {played_between(day, day)}"
    ).fetchone()
    return DayTotals(plays, seconds)


def mart_totals(con: duckdb.DuckDBPyConnection, mart_table: Table, day: dt.date) -> DayTotals:
    plays, seconds = con.execute(
        f"""SELECT coalesce(sum(plays), 0), coalesce(sum(seconds_played), 0)
            FROM iceberg_scan({sql_string(mart_table.metadata_location)}) WHERE day = DATE '{day}'"""
    ).fetchone()
    return DayTotals(plays, seconds)
