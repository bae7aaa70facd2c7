"""UTC days, the unit of partitioning: one helper for a day's bounds, used by ingest, marts, checks and validation."""

from __future__ import annotations

import datetime as dt

ONE_DAY = dt.timedelta(days=1)


def day_bounds(first: dt.date, last: dt.date | None = None) -> tuple[dt.datetime, dt.datetime]:
    """``[start, end)`` of the whole UTC days ``first``..``last`` as naive UTC datetimes (how played_at is stored)."""
    start = dt.datetime.combine(first, dt.time())
    end = dt.datetime.combine(last or first, dt.time()) + ONE_DAY
    return start, end


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
