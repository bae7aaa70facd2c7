"""Ingesting one UTC day of play events: validate, quarantine, and replace the day in one commit."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThan

from sonik_pipeline.lakehouse.days import day_bounds
from sonik_pipeline.lakehouse.events import RawBatch, UnreadableFile
from sonik_pipeline.lakehouse.tables import PLAYS, PLAYS_REJECTED, SchemaChanges, ensure_table
from sonik_pipeline.lakehouse.validation import DayValidator, ValidationTotals
from sonik_pipeline.lakehouse.writes import CommitReport, FileStager, partition_rows, replace_partition

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_REJECT_SHARE = 0.05
# A re-ingest may shrink a day by at most this share of the rows it holds (late files only add rows; a
# day that loses more than this most likely lost a file or a source outage, not events).
DEFAULT_MAX_SHRINK_SHARE = 0.10
PREVIEW_ROWS = 5


_DONE = object()


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """Produce the next item in a background thread while the caller works on this one.

    Generating or reading a batch (NumPy, Arrow, file I/O) releases the GIL, so it overlaps with
    validating and writing the previous batch; at most one extra batch is held in memory.
    """
    iterator = iter(items)
    with ThreadPoolExecutor(1, thread_name_prefix="sonik-read-ahead") as pool:
        pending = pool.submit(next, iterator, _DONE)
        while (item := pending.result()) is not _DONE:
            pending = pool.submit(next, iterator, _DONE)
            yield item


class IngestError(RuntimeError):
    """A day could not be ingested; the message says why in words a user can act on."""


class TooManyRejects(IngestError):
    """More of the day's events failed validation than the threshold allows (quarantine is written)."""


class UnreadableLandingFiles(IngestError):
    """A landing file of the day could not be read: ingesting without it would silently shrink the day."""


class DayWouldShrink(IngestError):
    """The re-ingest would replace the day with markedly fewer rows than it holds; nothing was changed."""


def shrink_guard(day: dt.date, max_shrink_share: float) -> Callable[[int, int], None]:
    """Refuse to replace a day's rows with more than ``max_shrink_share`` fewer (1.0 allows anything)."""

    def check(rows_now: int, rows_new: int) -> None:
        dropped = rows_now - rows_new
        if rows_now and dropped > max_shrink_share * rows_now:
            raise DayWouldShrink(
                f"{day}: this ingest would replace {rows_now:,} rows with {rows_new:,} ({dropped:,} fewer, "
                f"{dropped / rows_now:.1%}), more than the {max_shrink_share:.0%} a re-ingest may drop; "
                f"music.plays was not changed. If the source really holds fewer events now, re-run with "
                f"config max_shrink_share: 1.0 (ops: plays: config)."
            )

    return check


def day_filter(day: dt.date) -> BooleanExpression:
    """The rows of one UTC day of ``played_at``: exactly one ``played_day`` partition."""
    start, end = day_bounds(day)
    return And(GreaterThanOrEqual("played_at", start.isoformat()), LessThan("played_at", end.isoformat()))


@dataclass(frozen=True)
class DayIngestResult:
    day: dt.date
    plays: CommitReport
    totals: ValidationTotals
    rows_before: int  # the day's rows in music.plays before this ingest
    unreadable_files_skipped: tuple[str, ...]
    schema_changes: SchemaChanges
    seconds: float
    preview: pa.Table


def _as_reject_rows(rejected: pa.Table, day: dt.date, run_id: str | None, now: dt.datetime) -> pa.Table:
    n = rejected.num_rows
    return (
        rejected.append_column("ingest_day", pa.array([day] * n, pa.date32()))
        .append_column("rejected_at", pa.array([now] * n, pa.timestamp("us")))
        .append_column("dagster_run_id", pa.array([run_id] * n, pa.string()))
    )


def ingest_day(
    catalog: Catalog,
    day: dt.date,
    events: Iterable[RawBatch],
    *,
    run_id: str | None = None,
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE,
    max_shrink_share: float = DEFAULT_MAX_SHRINK_SHARE,
    skip_unreadable_files: bool = False,
    snapshot_properties: Mapping[str, str] | None = None,
    progress: Callable[[str], None] = log.info,
) -> DayIngestResult:
    """Validate ``events`` for ``day`` and make them the whole of that day in ``music.plays``.

    Rejected events are written to ``music.plays_rejected`` (replacing the day's earlier rejects)
    before the threshold is checked, so a failed day still leaves its evidence. Plays are committed
    only if the share of invalid events is within ``max_reject_share``, every landing file could be read
    (unless ``skip_unreadable_files``), and the day keeps at least ``1 - max_shrink_share`` of its rows.
    """
    started = time.monotonic()
    plays, schema_changes = ensure_table(catalog, PLAYS)
    if schema_changes:
        progress(f"music.plays schema evolved to match the code ({schema_changes.describe()})")
    rejected_table, _ = ensure_table(catalog, PLAYS_REJECTED)

    validator = DayValidator(plays.schema(), day)
    plays_files, reject_files = FileStager(plays), FileStager(rejected_table)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    preview = plays.schema().as_arrow().empty_table()
    unreadable: list[UnreadableFile] = []
    try:
        for raw in read_ahead(events):
            if isinstance(raw, UnreadableFile):
                unreadable.append(raw)
                progress(f"{day}: {raw.source_file}: {raw.error}")
            valid, rejected = validator.classify(raw)
            plays_files.add(valid)
            reject_files.add(_as_reject_rows(rejected, day, run_id, now))
            if preview.num_rows < PREVIEW_ROWS and valid.num_rows:
                preview = pa.concat_tables([preview, valid.slice(0, PREVIEW_ROWS - preview.num_rows)])
            totals = validator.totals
            progress(f"{day}: {totals.seen:,} events read, {totals.valid:,} valid, {totals.rejected:,} rejected")
        plays_files.finish()
        reject_files.finish()
    except BaseException:
        plays_files.discard()
        reject_files.discard()
        raise
    finally:
        validator.close()

    totals = validator.totals
    properties = {
        **(snapshot_properties or {}),
        "dagster.run-id": run_id or "",
        "dagster.partition": day.isoformat(),
        "sonik.events-read": str(totals.seen),
        "sonik.rows-rejected": str(totals.rejected),
        "sonik.duplicates-dropped": str(totals.duplicates),
    }
    if totals.seen == 0:
        plays_files.discard()
        raise IngestError(f"{day}: the source has no events for this day; refusing to replace it with nothing")

    guard = shrink_guard(day, max_shrink_share)
    rows_before = partition_rows(plays, day_filter(day))
    try:  # refuse a shrinking day before anything is written; the commit checks again against its own plan
        if not unreadable or skip_unreadable_files:
            guard(rows_before, plays_files.rows)
    except DayWouldShrink:
        plays_files.discard()
        reject_files.discard()
        raise
    replace_partition(rejected_table, EqualTo("ingest_day", day.isoformat()), reject_files.data_files, properties)
    if unreadable and not skip_unreadable_files:
        plays_files.discard()
        names = "; ".join(f"unreadable landing file {u.source_file} ({u.error})" for u in unreadable)
        raise UnreadableLandingFiles(
            f"{day}: {names}. music.plays was not changed; the file is recorded in music.plays_rejected. "
            f"Replace or remove the file and re-run, or set config skip_unreadable_files: true to ingest "
            f"the day without it."
        )
    if totals.invalid_share() > max_reject_share:
        plays_files.discard()
        top = ", ".join(f"{reason} ({count:,})" for reason, count in totals.rejected_by_reason.most_common(5))
        raise TooManyRejects(
            f"{day}: {totals.invalid:,} of {totals.seen:,} events ({totals.invalid_share():.1%}) failed validation, "
            f"above the {max_reject_share:.1%} threshold; music.plays was not changed. Reasons: {top}. "
            f"The rejects are in music.plays_rejected (ingest_day = '{day}')."
        )
    try:
        report = replace_partition(plays, day_filter(day), plays_files.data_files, properties, guard=guard)
    except DayWouldShrink:  # a concurrent writer grew the day after the first check
        plays_files.discard()
        raise
    return DayIngestResult(
        day=day,
        plays=report,
        totals=totals,
        rows_before=rows_before,
        unreadable_files_skipped=tuple(u.source_file for u in unreadable),
        schema_changes=schema_changes,
        seconds=time.monotonic() - started,
        preview=preview,
    )
