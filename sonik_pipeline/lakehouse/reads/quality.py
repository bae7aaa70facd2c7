"""Data-quality measurements on what was committed: days of plays, and marts against plays.

Each reads a whole range of days at once, grouped by day, in chunks of days (see ``plays_days``), so
the checks of a run over a year cost a few queries rather than one per day. Days of plays are measured
by the rules ingest validates with (``ingest/rules.py``), not by a copy of them.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import ManifestContent, ManifestFile
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.days import (
    as_day,
    date_filter,
    date_sql,
    days_between,
    is_day_field,
    partition_day,
    played_at_filter,
    played_at_sql,
)
from sonik_pipeline.lakehouse.duckdb_io.file_scan import planned_select
from sonik_pipeline.lakehouse.ingest.rules import CHECKED_RULES, PLAYED_AT_IN_DAY, REQUIRED_FIELDS, UNIQUE_PLAY_ID
from sonik_pipeline.lakehouse.reads.plays_days import (
    DEFAULT_MAX_ROWS_PER_READ,
    PlaysSnapshot,
    chunk_days,
    rows_per_day,
)
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SCHEMA


@dataclass(frozen=True)
class PlaysDayQuality:
    """What the checks on one day of music.plays look at; all zeros but ``rows`` means healthy.

    Each count but ``rows`` is a checked rule's ``figure``: rows of the day that break it.
    """

    day: dt.date
    rows: int
    duplicate_play_ids: int
    null_required: int
    rows_outside_day: int
    durations_out_of_range: int


# The checked rules counted row by row in SQL; uniqueness is counted by count(DISTINCT), a time outside the
# day from the data files' bounds, and required fields from the files' null counts where those settle it.
_COUNTED_RULES = tuple(rule for rule in CHECKED_RULES if rule not in (UNIQUE_PLAY_ID, PLAYED_AT_IN_DAY))


@dataclass(frozen=True)
class _FromMetadata:
    """What the manifests alone say of days of plays, with no data file read."""

    rows_outside_day: Counter[dt.date]  # rows in files whose played_at bounds leave their day
    required_nulls_unknown: set[dt.date]  # days with a file not recording 0 nulls for each required field


def _from_metadata(table: Table, src: PlaysSnapshot, first: dt.date, last: dt.date) -> _FromMetadata:
    """Per day, the checks the data files' statistics in the manifests answer exactly.

    "Inside the day" is the rule's own test on each data file's lower and upper played_at bounds. A file
    whose null count is 0 for every required field holds no row breaking ``REQUIRED_FIELDS``; a file with
    a count missing or above 0 leaves its day to the row-by-row count, which says how many rows.
    """
    schema = table.schema()
    test = PLAYED_AT_IN_DAY.test
    played_at = schema.find_field(test.column)
    required = [f.field_id for f in schema.fields if f.required]
    outside: Counter[dt.date] = Counter()
    unknown: set[dt.date] = set()
    for task in table.scan(row_filter=played_at_filter(first, last), snapshot_id=src.snapshot_id).plan_files():
        data_file = task.file
        day = partition_day(table.specs()[data_file.spec_id], schema, data_file.partition)
        if day is None or not first <= day <= last:
            continue
        bounds = [
            from_bytes(played_at.field_type, data_file.lower_bounds[played_at.field_id]),
            from_bytes(played_at.field_type, data_file.upper_bounds[played_at.field_id]),
        ]  # microseconds since the epoch
        if pc.any(test.mask(pa.array(bounds, pa.timestamp("us")), day)).as_py():
            outside[day] += data_file.record_count
        nulls = data_file.null_value_counts or {}
        if any(nulls.get(field_id) != 0 for field_id in required):
            unknown.add(day)
    return _FromMetadata(outside, unknown)


def plays_quality(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    src: PlaysSnapshot,
    first: dt.date,
    last: dt.date,
    max_rows: int = DEFAULT_MAX_ROWS_PER_READ,
) -> dict[dt.date, PlaysDayQuality]:
    """Measure every day of first..last of plays at ``src``: one query per chunk of days (grouped by day
    when it has several), counting only what the manifests do not settle (``_from_metadata``)."""
    play_id = UNIQUE_PLAY_ID.test.column
    known = _from_metadata(table, src, first, last)
    measured: dict[dt.date, dict[str, int]] = {}
    for chunk_first, chunk_last in chunk_days(rows_per_day(table, src.snapshot_id, first, last), first, last, max_rows):
        chunk = days_between(chunk_first, chunk_last)
        counted = [
            rule
            for rule in _COUNTED_RULES
            if not (rule is REQUIRED_FIELDS and known.required_nulls_unknown.isdisjoint(chunk))
        ]
        breaking = "".join(f", count(*) FILTER (WHERE {rule.test.sql(PLAYS_SCHEMA.fields)})" for rule in counted)
        # One pass over the chunk's data files; distinct ids by their 64-bit hash (no strings kept), so a day
        # with no duplicate (the rule) is settled at once. A hash collision only looks like a duplicate, so a
        # day that seems to have one is counted again exactly. A day alone needs no grouping (0.15 s at 10M).
        grouped = len(chunk) > 1
        for day, rows, by_hash, *counts in con.execute(
            f"""SELECT {"CAST(played_at AS DATE)" if grouped else f"DATE '{chunk_first}'"}, count(*),
                    count(*) - count(DISTINCT hash({play_id})){breaking}
                FROM {src.days_sql(con, chunk_first, chunk_last)} WHERE {played_at_sql(chunk_first, chunk_last)}
                {"GROUP BY 1" if grouped else ""}"""
        ).fetchall():
            if not rows:  # a day alone, and empty: ungrouped, the counts still make one row
                continue
            duplicates = (
                by_hash
                and con.execute(
                    f"SELECT count(*) - count(DISTINCT {play_id}) FROM {src.days_sql(con, day, day)} "
                    f"WHERE {played_at_sql(day)}"
                ).fetchone()[0]
            )
            measured[day] = {
                "rows": rows,
                UNIQUE_PLAY_ID.figure: duplicates,
                **{rule.figure: n for rule, n in zip(counted, counts, strict=True)},
            }
    empty = {"rows": 0, **{rule.figure: 0 for rule in CHECKED_RULES}}
    return {
        day: PlaysDayQuality(
            day, **{**empty, **measured.get(day, {}), PLAYED_AT_IN_DAY.figure: known.rows_outside_day[day]}
        )
        for day in days_between(first, last)
    }


def _newest_day_bound(manifest: ManifestFile, spec: PartitionSpec, schema: Schema) -> dt.date | None:
    """The newest day a manifest's partition summary allows (deleted entries included); None: not known."""
    for position, pfield in enumerate(spec.fields):
        if is_day_field(pfield, schema):
            summary = manifest.partitions[position] if manifest.partitions else None
            if summary is None or summary.upper_bound is None:
                return None
            day_type = pfield.transform.result_type(schema.find_field(pfield.source_id).field_type)
            return as_day(from_bytes(day_type, summary.upper_bound))
    return None


def newest_day(table: Table) -> dt.date | None:
    """The newest day the current snapshot of ``table`` (partitioned by day) holds a data file of; None: none.

    Read from the metadata, never the data: the manifest list bounds each manifest's days, but a bound
    counts the files an overwrite deleted too, so it may name a day no longer there. Manifests with live
    files are read newest bound first, and only until the newest day found is at least the next bound: a
    manifest or two, however many days the table holds.
    """
    snapshot = table.current_snapshot()
    if snapshot is None:
        return None
    schema, specs = table.schema(), table.specs()
    bounded = [
        (_newest_day_bound(m, specs[m.partition_spec_id], schema), m)
        for m in snapshot.manifests(table.io)
        if m.content == ManifestContent.DATA and (m.has_added_files() or m.has_existing_files())
    ]
    bounded.sort(key=lambda b: (b[0] is None, b[0] or dt.date.min), reverse=True)  # not known first
    newest: dt.date | None = None
    for bound, manifest in bounded:
        if newest is not None and bound is not None and bound <= newest:
            break
        spec = specs[manifest.partition_spec_id]
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            day = partition_day(spec, schema, entry.data_file.partition)
            if day is not None and (newest is None or day > newest):
                newest = day
    return newest


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
            FROM {src.days_sql(con, first, last)} WHERE {played_at_sql(first, last)} GROUP BY 1""",
    )


def mart_totals_by_day(
    con: duckdb.DuckDBPyConnection, mart_table: Table, first: dt.date, last: dt.date
) -> dict[dt.date, DayTotals]:
    """Plays and seconds per day of first..last summed over a mart's rows, one query.

    It reads the files PyIceberg plans for those days (one partition a day), so its cost does not grow
    with the mart's history as ``iceberg_scan``'s bind does (see ``file_scan``).
    """
    return _totals(
        con,
        f"""SELECT day, coalesce(sum(plays), 0), coalesce(sum(seconds_played), 0)
            FROM ({planned_select(mart_table, con, date_filter("day", first, last))})
            WHERE {date_sql("day", first, last)} GROUP BY day""",
    )
