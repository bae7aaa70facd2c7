"""Which landing days changed since their last ingest: the landing sensor's logic, free of Dagster.

A day changed when the set of its data files (path, size, modification time) differs from what its
last successful ingest read (``music.plays_sources``): a new file, a grown or rewritten one, a removed
one. A day with a file modified within the settle window is still being uploaded and waits.

Listing cost stays bounded on a landing zone with years of folders: each tick lists only the most
recent days (one listing per day folder), where nearly all late uploads land (phones reconnect within
hours or days); a full sweep (one recursive listing, paged on object storage) runs at a slower interval
and catches the rare upload that is weeks late. Work per tick is bounded too: at most ``max_days`` days
are requested per tick, in at most ``max_runs`` runs; the rest follow on the next ticks.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sonik_pipeline.lakehouse.days import days_between, parse_day
from sonik_pipeline.lakehouse.sources.events import SourceFile
from sonik_pipeline.lakehouse.sources.ingested_files import DayRecord
from sonik_pipeline.lakehouse.sources.landing import LandingZone, list_all_days, list_day


@dataclass(frozen=True)
class WatchSettings:
    """How the landing zone is watched (``LandingWatch``, the resource, carries them)."""

    settle_seconds: int = 120  # a file modified this recently may still be uploading: its day waits
    recent_days: int = 7  # listed every tick
    sweep_hours: float = 6.0  # every day listed this often
    retry_minutes: float = 60.0  # a requested day whose files did not change is requested again after this
    max_days: int = 62  # requested per tick
    max_runs: int = 3  # runs per tick: changed days are grouped into at most this many day ranges


def fingerprint(files: Iterable[tuple[str, int, dt.datetime]]) -> str:
    """One value for a set of files: equal exactly when every path, size and modification time is."""
    lines = sorted(f"{path}\t{size}\t{modified.astimezone(dt.UTC).isoformat()}" for path, size, modified in files)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:32]


def listed_fingerprint(files: Iterable[SourceFile]) -> str:
    return fingerprint((f.path, f.size, f.modified_at) for f in files)


def recorded_fingerprint(record: DayRecord) -> str:
    return fingerprint((path, r.size, r.modified_at) for path, r in record.items())


@dataclass
class WatchCursor:
    """The sensor's state between ticks: when every day was last listed, and what was requested when."""

    swept_at: float = 0.0  # POSIX seconds of the last full sweep
    requested: dict[str, tuple[str, float]] = field(default_factory=dict)  # day -> (fingerprint, when)

    @classmethod
    def parse(cls, text: str | None) -> WatchCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(data.get("swept_at", 0.0), {d: (fp, at) for d, (fp, at) in data.get("requested", {}).items()})

    def dump(self) -> str:
        return json.dumps({"swept_at": self.swept_at, "requested": self.requested}, sort_keys=True)


@dataclass(frozen=True)
class WatchPlan:
    """What one tick decided."""

    ranges: list[tuple[dt.date, dt.date]]  # one run each
    changed: list[dt.date]  # every changed day found (the requested ones, and those left for later ticks)
    settling: list[dt.date]  # days with a file inside the settle window
    emptied: list[dt.date]  # days recorded whose folder now holds no data file: never replaced with nothing
    swept: bool
    cursor: WatchCursor

    @property
    def requested(self) -> list[dt.date]:
        return [d for first, last in self.ranges for d in days_between(first, last)]


def day_ranges(days: Iterable[dt.date], max_runs: int) -> list[tuple[dt.date, dt.date]]:
    """Consecutive days as ranges; while there are more than ``max_runs``, the closest two are joined
    (re-ingesting an unchanged day in between is harmless: it is replaced by the same rows)."""
    ranges: list[list[dt.date]] = []
    for day in sorted(set(days)):
        if ranges and day - ranges[-1][1] == dt.timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    while len(ranges) > max(max_runs, 1):
        gap = min(range(len(ranges) - 1), key=lambda i: ranges[i + 1][0] - ranges[i][1])
        ranges[gap : gap + 2] = [[ranges[gap][0], ranges[gap + 1][1]]]
    return [(first, last) for first, last in ranges]


def plan_tick(
    zone: LandingZone,
    recorded: Callable[[dt.date | None, dt.date | None], Mapping[dt.date, DayRecord]],
    cursor: WatchCursor,
    now: dt.datetime,
    first_day: dt.date,
    last_day: dt.date,
    watch: WatchSettings,
    in_flight: Iterable[dt.date] = (),
) -> WatchPlan:
    """List the landing zone (the recent days, or all of it when a sweep is due) and decide what to ingest.

    ``recorded(first, last)`` reads what the days' last ingests read (all days for ``None``); days
    outside ``first_day..last_day`` (the partitions: complete days only) and days a queued or running
    ingest already covers (``in_flight``) are left alone.
    """
    sweep = now.timestamp() - cursor.swept_at >= watch.sweep_hours * 3600
    if sweep:
        listed = {d: files for d, files in list_all_days(zone).items() if first_day <= d <= last_day}
        records = recorded(None, None)
    else:
        recent = max(first_day, last_day - dt.timedelta(days=watch.recent_days - 1))
        listed = {d: [f for _, f in list_day(zone, d)] for d in days_between(recent, last_day)}
        records = recorded(recent, last_day)
    busy = set(in_flight)
    settle = dt.timedelta(seconds=watch.settle_seconds)
    changed, settling, emptied, fingerprints = [], [], [], {}
    examined = sorted(set(listed) | {d for d in records if first_day <= d <= last_day and (sweep or d in listed)})
    for day in examined:
        files = listed.get(day, [])
        if not files:
            if records.get(day):
                emptied.append(day)
            continue
        # Within the window either way: a clock a little ahead (the uploader's, the object store's) must
        # not make a file being written look settled, nor one far ahead hold its day back forever.
        if any(abs(now - f.modified_at) < settle for f in files):
            settling.append(day)
            continue
        fp = listed_fingerprint(files)
        if day in records and fp == recorded_fingerprint(records[day]):
            continue
        changed.append(day)
        fingerprints[day] = fp
    requested = dict(cursor.requested)
    due = []
    for day in changed:
        if day in busy:
            continue
        fp_before, at = requested.get(day.isoformat(), ("", 0.0))
        if fp_before == fingerprints[day] and now.timestamp() - at < watch.retry_minutes * 60:
            continue  # requested already: its run is on the way (or failed, and waits for the retry)
        due.append(day)
    due = due[: watch.max_days]
    ranges = day_ranges(due, watch.max_runs)
    requested_days = {d for first, last in ranges for d in days_between(first, last)}
    for day in requested_days:
        if day in fingerprints:
            requested[day.isoformat()] = (fingerprints[day], now.timestamp())
    # Forget requests the record has caught up with (examined, no longer changed), and very old ones.
    settled = set(examined) - set(changed)
    oldest = now.timestamp() - 24 * watch.retry_minutes * 60
    requested = {d: v for d, v in requested.items() if parse_day(d) not in settled and v[1] >= oldest}
    next_cursor = WatchCursor(now.timestamp() if sweep else cursor.swept_at, requested)
    return WatchPlan(ranges, changed, settling, emptied, sweep, next_cursor)
