"""What each day's ingest read from the landing zone (``music.plays_sources``), and which files came late.

The landing sensor compares a day's folder with this record to find days whose files changed; an
ingest compares what it read with the day's previous record to say what arrived late: a file (or a
new version of one, grown or rewritten) first read after the day's first ingest.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.days import date_filter
from sonik_pipeline.lakehouse.sources.events import SourceFile


@dataclass(frozen=True)
class RecordedFile:
    """One file as a day's last ingest read it."""

    size: int
    modified_at: dt.datetime
    events: int
    first_read_at: dt.datetime

    def same_version(self, listed: SourceFile) -> bool:
        return self.size == listed.size and self.modified_at == listed.modified_at


@dataclass(frozen=True)
class LateArrivals:
    """Files (and their events) of a day first read after the day's first ingest."""

    files: int = 0
    events: int = 0

    def describe(self) -> str:
        return f"late files: {self.files:,}, {self.events:,} events"


DayRecord = Mapping[str, RecordedFile]  # source_file -> how it was read


def recorded_days(table: Table, first: dt.date | None = None, last: dt.date | None = None) -> dict[dt.date, DayRecord]:
    """The record of every day in first..last (every day when not given): a scan of a small table."""
    if table.current_snapshot() is None:
        return {}
    row_filter = date_filter("day", first, last) if first and last else None
    rows = (table.scan(row_filter=row_filter) if row_filter else table.scan()).to_arrow().to_pylist()
    days: dict[dt.date, dict[str, RecordedFile]] = {}
    for r in rows:
        days.setdefault(r["day"], {})[r["source_file"]] = RecordedFile(
            r["size_bytes"], r["modified_at"], r["events"], r["first_read_at"]
        )
    return days


def late_arrivals(record: pa.Table, previous: DayRecord) -> LateArrivals:
    """What of a day's new ``record`` was first read after the day's first ingest (none on the first)."""
    if not previous:
        return LateArrivals()
    first_ingest = min(r.first_read_at for r in previous.values())
    late = [r for r in record.select(["events", "first_read_at"]).to_pylist() if r["first_read_at"] > first_ingest]
    return LateArrivals(len(late), sum(r["events"] for r in late))


def record_rows(
    day: dt.date,
    listed: Iterable[SourceFile],
    events: Mapping[str, int],
    previous: DayRecord,
    now: dt.datetime,
    run_id: str | None,
) -> pa.Table:
    """The day's new record: each file read, keeping when an unchanged file was first read."""
    rows = []
    for f in listed:
        before = previous.get(f.path)
        first_read = before.first_read_at if before and before.same_version(f) else now
        rows.append(
            {
                "day": day,
                "source_file": f.path,
                "size_bytes": f.size,
                "modified_at": f.modified_at,
                "events": events.get(f.path, 0),
                "first_read_at": first_read,
                "ingested_at": now,
                "dagster_run_id": run_id,
            }
        )
    return pa.Table.from_pylist(rows, schema=RECORD_SCHEMA)


UTC_MICROS = pa.timestamp("us", tz="UTC")
RECORD_SCHEMA = pa.schema(
    [
        pa.field("day", pa.date32(), nullable=False),
        pa.field("source_file", pa.large_string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("modified_at", UTC_MICROS, nullable=False),
        pa.field("events", pa.int64(), nullable=False),
        pa.field("first_read_at", UTC_MICROS, nullable=False),
        pa.field("ingested_at", UTC_MICROS, nullable=False),
        pa.field("dagster_run_id", pa.large_string()),
    ]
)
