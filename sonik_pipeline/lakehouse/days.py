"""UTC days, the unit of partitioning: one helper for a day's bounds, used by ingest, marts, checks and validation."""

from __future__ import annotations

import datetime as dt

from pyiceberg.partitioning import PartitionSpec
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


def partition_day(spec: PartitionSpec, schema: Schema, partition: Record) -> dt.date | None:
    """The UTC day an Iceberg partition holds, for day(ts) and identity(date) partitions; None otherwise."""
    for position, pfield in enumerate(spec.fields):
        value = partition[position]
        if value is None:
            continue
        is_day = isinstance(pfield.transform, DayTransform)
        is_date = isinstance(pfield.transform, IdentityTransform) and isinstance(
            schema.find_field(pfield.source_id).field_type, DateType
        )
        if is_day or is_date:
            return value if isinstance(value, dt.date) else EPOCH + dt.timedelta(days=int(value))
    return None
