"""UTC days, the unit of partitioning: the one vocabulary for a day and a range of days.

A day is written as its ISO date (a Dagster partition key, ``2026-04-20``) and a range as
``first...last`` (a Dagster partition range, and a commit's ``dagster.partition``); as rows it is the
whole UTC day of ``played_at`` (an Iceberg row filter, or a SQL predicate) or a value of a date column.
Ingest, marts, reads, checks and maintenance all say it through these helpers, and count days from
PyIceberg's epoch.
"""

from __future__ import annotations

import datetime as dt

from pyiceberg.expressions import And, BooleanExpression, GreaterThanOrEqual, LessThan, LessThanOrEqual
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.typedef import Record
from pyiceberg.types import DateType
from pyiceberg.utils.datetime import EPOCH_DATE, datetime_to_millis, micros_to_timestamp

ONE_DAY = dt.timedelta(days=1)
# Day 0 of Iceberg's day transform and of its timestamps (PyIceberg's own, so the two never disagree).
EPOCH = EPOCH_DATE
RANGE = "..."  # between the first and the last day of a range, as Dagster writes a partition range
PLAYED_AT = "played_at"  # the timestamp a play's day is the UTC day of


def parse_day(text: str) -> dt.date:
    """A day written as its ISO date (a partition key such as ``2026-04-20``)."""
    return dt.date.fromisoformat(text)


def parse_days(text: str) -> tuple[dt.date, dt.date]:
    """``(first, last)`` of a day or a range ``first...last`` (a partition range, a commit's ``dagster.partition``)."""
    first, _, last = text.partition(RANGE)
    return parse_day(first), parse_day(last or first)


def format_days(first: dt.date, last: dt.date | None = None) -> str:
    """One day as its ISO date, several as ``first...last``: how a commit records the days it replaced."""
    return first.isoformat() if last is None or last == first else f"{first}{RANGE}{last}"


def day_bounds(first: dt.date, last: dt.date | None = None) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` of the whole UTC days ``first``..``last`` as naive UTC datetimes (how played_at is stored)."""
    start = dt.datetime.combine(first, dt.time())
    end = dt.datetime.combine(last or first, dt.time()) + ONE_DAY
    return start, end


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def played_at_filter(first: dt.date, last: dt.date | None = None) -> BooleanExpression:
    """The plays of the UTC days first..last as an Iceberg row filter: whole ``played_day`` partitions."""
    start, end = day_bounds(first, last)
    return And(GreaterThanOrEqual(PLAYED_AT, start.isoformat()), LessThan(PLAYED_AT, end.isoformat()))


def played_at_sql(first: dt.date, last: dt.date | None = None, timestamp: str = "TIMESTAMP") -> str:
    """The same days as a SQL predicate on played_at (DuckDB prunes the files of other days with it).

    ``timestamp`` is the SQL type of played_at's literals, a timestamp without time zone (Spark: TIMESTAMP_NTZ).
    """
    start, end = day_bounds(first, last)
    return f"{PLAYED_AT} >= {timestamp} '{start}' AND {PLAYED_AT} < {timestamp} '{end}'"


def date_filter(column: str, first: dt.date, last: dt.date | None = None) -> BooleanExpression:
    """The rows whose date ``column`` is in first..last as an Iceberg row filter (whole identity partitions)."""
    return And(GreaterThanOrEqual(column, first.isoformat()), LessThanOrEqual(column, (last or first).isoformat()))


def date_sql(column: str, first: dt.date, last: dt.date | None = None) -> str:
    """The same rows as a SQL predicate."""
    return f"{column} BETWEEN DATE '{first}' AND DATE '{last or first}'"


def epoch_day(day: dt.date) -> int:
    """Days since the epoch: how Iceberg's day transform stores a day."""
    return (day - EPOCH).days


def as_day(value: dt.date | int) -> dt.date:
    """A day partition value as a date (PyIceberg gives days since the epoch or a date)."""
    return value if isinstance(value, dt.date) else EPOCH + dt.timedelta(days=int(value))


def epoch_millis(when: dt.datetime) -> int:
    """Whole milliseconds since the epoch, by integer arithmetic (a float turns 12:00:00.123 into ...122.999)."""
    return datetime_to_millis(when)


def from_epoch_micros(micros: int) -> dt.datetime:
    """A timestamp stored as microseconds since the epoch (a column bound) as a naive UTC datetime."""
    return micros_to_timestamp(micros)


def is_day_field(pfield: PartitionField, schema: Schema) -> bool:
    """Whether a partition field holds a UTC day: day(ts), or identity on a date column."""
    if isinstance(pfield.transform, DayTransform):
        return True
    return isinstance(pfield.transform, IdentityTransform) and isinstance(
        schema.find_field(pfield.source_id).field_type, DateType
    )


def partition_day(spec: PartitionSpec, schema: Schema, partition: Record) -> dt.date | None:
    """The UTC day an Iceberg partition holds, for day(ts) and identity(date) partitions; None otherwise."""
    for position, pfield in enumerate(spec.fields):
        value = partition[position]
        if value is not None and is_day_field(pfield, schema):
            return as_day(value)
    return None
