"""UTC days, the unit of partitioning: one helper for a day's bounds, used by ingest, marts, checks and validation."""

from __future__ import annotations

import datetime as dt

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.typedef import Record
from pyiceberg.types import DateType

ONE_DAY = dt.timedelta(days=1)


def day_bounds(first: dt.date, last: dt.date | None = None) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` of the whole UTC days ``first``..``last`` as naive UTC datetimes (how played_at is stored)."""
    start = dt.datetime.combine(first, dt.time())
    end = dt.datetime.combine(last or first, dt.time()) + ONE_DAY
    return start, end


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


EPOCH = dt.date(1970, 1, 1)


def is_day_field(pfield: PartitionField, schema: Schema) -> bool:
    """Whether a partition field holds a UTC day: day(ts), or identity on a date column."""
    if isinstance(pfield.transform, DayTransform):
        return True
    return isinstance(pfield.transform, IdentityTransform) and isinstance(
        schema.find_field(pfield.source_id).field_type, DateType
    )


def as_day(value: dt.date | int) -> dt.date:
    """A day partition value as a date (PyIceberg gives days since the epoch or a date)."""
    return value if isinstance(value, dt.date) else EPOCH + dt.timedelta(days=int(value))


def partition_day(spec: PartitionSpec, schema: Schema, partition: Record) -> dt.date | None:
    """The UTC day an Iceberg partition holds, for day(ts) and identity(date) partitions; None otherwise."""
    for position, pfield in enumerate(spec.fields):
        value = partition[position]
        if value is not None and is_day_field(pfield, schema):
            return as_day(value)
    return None
