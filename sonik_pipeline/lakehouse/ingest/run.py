"""Ingesting days of play events: validate, quarantine, and replace the days in one atomic commit.

A day is *staged* (read, validated, written as Parquet files not yet visible) and then *committed*: its
rejects replace its quarantine, and its rows replace the day in ``music.plays``. A run over many days
commits them in groups (``days_per_commit``): one snapshot per group rather than per day, so a year's
backfill makes 12 commits, not 365, and the table's metadata grows 30 times slower. Each commit stays
atomic (the whole group or nothing) and a re-run still replaces exactly the days it covers.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.arrow_memory import release_freed_memory_promptly
from sonik_pipeline.lakehouse.days import date_filter, format_days, partition_day, played_at_filter
from sonik_pipeline.lakehouse.ingest.validation import DayValidator, JudgedBatch, ValidationTotals
from sonik_pipeline.lakehouse.sources.events import ArrowRows, LongLine, RawBatch, SourceFile, UnreadableFile
from sonik_pipeline.lakehouse.sources.ingested_files import (
    LateArrivals,
    late_arrivals,
    record_rows,
    recorded_days,
)
from sonik_pipeline.lakehouse.tables.definitions import (
    PLAYS,
    PLAYS_REJECTED,
    PLAYS_SOURCES,
    SchemaChanges,
    ensure_table,
)
from sonik_pipeline.lakehouse.tables.writes import CommitReport, FileStager, replace_partition, stage_files

log = logging.getLogger(__name__)
T = TypeVar("T")

DEFAULT_MAX_REJECT_SHARE = 0.05
# A re-ingest may shrink a day by at most this share of the rows it holds (late files only add rows; a
# day that loses more than this most likely lost a file or a source outage, not events).
DEFAULT_MAX_SHRINK_SHARE = 0.10
PREVIEW_ROWS = 5
# A run of many days commits them in groups of this many: one snapshot a month of backfill, not a day.
DEFAULT_DAYS_PER_COMMIT = 31
# A day's progress is logged this often, not every batch: in a Dagster run each line is an event written to
# its storage, on the thread that orders the batches (80 lines cost a 10M-event day about 2 s).
PROGRESS_EVERY_SECONDS = 5.0


# Batches prepared at once (typed, tested, hashed; ``DayValidator.prepare``), each on its own thread.
PREPARE_WORKERS = max(2, min(4, os.cpu_count() or 1))


def prepared_ahead(
    items: Iterable[T],
    prepare: Callable[[T], Any],
    workers: int = PREPARE_WORKERS,
    at_once: Callable[[T], int] | None = None,
) -> Iterator[Any]:
    """``prepare(item)`` of each item, in order, by up to ``workers`` threads at once ahead of the caller.

    The items themselves are read by the caller's thread, one at a time (a source is one generator), as a
    worker becomes free. At most ``workers`` items (``at_once(item)`` from an item on, when given) are
    being prepared or waiting to be taken, so memory holds that many batches more. Reading one more
    item ahead in a thread of its own gained no time on 2 cores (reading a chunk of text or a row group is
    short beside preparing it) and held one more batch: 50 MB more at the peak of a 10M-event JSON Lines
    day (2026-12-07).
    """
    with ThreadPoolExecutor(workers, thread_name_prefix="sonik-prepare") as pool:
        pending: deque[Future[Any]] = deque()
        try:
            for item in items:
                limit = at_once(item) if at_once else workers
                while len(pending) >= limit:  # fewer at once from this item on: the ones before finish first
                    yield pending.popleft().result()
                pending.append(pool.submit(prepare, item))
                if len(pending) >= limit:  # one over at most: the loop above left fewer than the limit
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def _prepared_at_once(raw: RawBatch) -> int:
    """Batches prepared at once, up to this one: one for rows that gain nothing from preparing ahead."""
    return 1 if isinstance(raw, ArrowRows) and not raw.prepare_ahead else PREPARE_WORKERS


class WriteBehind:
    """Runs each submitted write in one background thread while the caller validates the next batch.

    Encoding Parquet releases the GIL, so on two cores a day's preparation (``prepared_ahead``),
    validation and writing overlap. At most one write is in flight: ``submit`` first waits for the
    previous one, so memory holds one more batch at most, and a failed write raises in the caller at the
    next ``submit`` or when the block ends. Leaving the block always waits for the write in flight, so the
    caller may finish or discard the files right after.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sonik-write-behind")
        self._pending: Future[None] | None = None

    def submit(self, write: Callable[..., None], *args: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(write, *args)

    def wait(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        try:
            if exc_type is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _write_batch(plays: FileStager, valid: pa.Table, rejects: FileStager, rejected: pa.Table) -> None:
    plays.add(valid)
    rejects.add(rejected)


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


@dataclass
class StagedDay:
    """A day read, validated and written as files no reader sees yet; ``commit_days`` makes it visible."""

    day: dt.date
    plays_files: list[DataFile]
    reject_files: list[DataFile]
    totals: ValidationTotals
    unreadable: tuple[UnreadableFile, ...]
    schema_changes: SchemaChanges
    preview: pa.Table
    seconds: float
    rows_before: int = 0  # the day's rows in music.plays when it was staged
    sources: tuple[SourceFile, ...] = ()  # the landing files read, as listed before reading (none: synthetic)
    events_per_file: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(f.record_count for f in self.plays_files)

    def refusal(self, max_reject_share: float, skip_unreadable_files: bool) -> IngestError | None:
        """Why this day's plays must not be committed (its quarantine still is), or None."""
        return day_refusal(self.day, self.totals, self.unreadable, max_reject_share, skip_unreadable_files)


def day_refusal(
    day: dt.date,
    totals: ValidationTotals,
    unreadable: Sequence[UnreadableFile],
    max_reject_share: float,
    skip_unreadable_files: bool,
) -> IngestError | None:
    """Why a day read with these ``totals`` must not replace the day in plays (its quarantine still does), or None."""
    if unreadable and not skip_unreadable_files:
        names = "; ".join(f"unreadable landing file {u.source_file} ({u.error})" for u in unreadable)
        return UnreadableLandingFiles(
            f"{day}: {names}. music.plays was not changed; the file is recorded in music.plays_rejected. "
            f"Replace or remove the file and re-run, or set config skip_unreadable_files: true to ingest "
            f"the day without it."
        )
    if totals.invalid_share() > max_reject_share:
        top = ", ".join(f"{reason} ({count:,})" for reason, count in totals.rejected_by_reason.most_common(5))
        return TooManyRejects(
            f"{day}: {totals.invalid:,} of {totals.seen:,} events ({totals.invalid_share():.1%}) failed "
            f"validation, above the {max_reject_share:.1%} threshold; music.plays was not changed. Reasons: "
            f"{top}. The rejects are in music.plays_rejected (ingest_day = '{day}')."
        )
    return None


@dataclass(frozen=True)
class DayIngestResult:
    """What ingesting one day did; days committed together share the commit (``plays``)."""

    day: dt.date
    plays: CommitReport  # the commit the day landed in (for several days, their one commit)
    totals: ValidationTotals
    rows_written: int
    rows_before: int  # the day's rows in music.plays before this ingest
    data_files_added: int
    bytes_added: int
    unreadable_files_skipped: tuple[str, ...]
    schema_changes: SchemaChanges
    seconds: float
    preview: pa.Table
    files_read: int = 0  # landing files read (0 for the synthetic source)
    late: LateArrivals = LateArrivals()  # of those, first read after the day's first ingest


def _as_reject_rows(rejected: pa.Table, day: dt.date, run_id: str | None, now: dt.datetime) -> pa.Table:
    n = rejected.num_rows
    return (
        rejected.append_column("ingest_day", pa.array([day] * n, pa.date32()))
        .append_column("rejected_at", pa.array([now] * n, pa.timestamp("us")))
        .append_column("dagster_run_id", pa.array([run_id] * n, pa.string()))
    )


@dataclass
class IngestTables:
    """music.plays, its quarantine and its record of landing files, made to follow the code's schema once
    per run (the record only once a landing day is committed: a synthetic lakehouse never has one)."""

    plays: Table
    rejected: Table
    schema_changes: SchemaChanges
    catalog: Catalog | None = None
    _sources: Table | None = None

    def sources(self) -> Table:
        if self._sources is None:
            self._sources, _ = ensure_table(self.catalog, PLAYS_SOURCES)
        return self._sources

    @classmethod
    def ensure(cls, catalog: Catalog, progress: Callable[[str], None] = log.info) -> IngestTables:
        plays, schema_changes = ensure_table(catalog, PLAYS)
        if schema_changes:
            progress(f"music.plays schema evolved to match the code ({schema_changes.describe()})")
        rejected, _ = ensure_table(catalog, PLAYS_REJECTED)
        return cls(plays, rejected, schema_changes, catalog)


def stage_day(
    tables: IngestTables,
    day: dt.date,
    events: Iterable[RawBatch],
    run_id: str | None = None,
    progress: Callable[[str], None] = log.info,
) -> StagedDay:
    """Read and validate ``events`` for ``day`` and write its rows and rejects as uncommitted files."""
    started = time.monotonic()
    release_freed_memory_promptly()
    validator = DayValidator(tables.plays.schema(), day)
    plays_files, reject_files = FileStager(tables.plays), FileStager(tables.rejected)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    preview = tables.plays.schema().as_arrow().empty_table()
    unreadable: list[UnreadableFile] = []
    sources: list[SourceFile] = []
    events_per_file: dict[str, int] = {}
    next_progress = started + PROGRESS_EVERY_SECONDS
    try:
        with WriteBehind() as writer:
            for raw in prepared_ahead(events, validator.prepare, at_once=_prepared_at_once):
                if isinstance(raw, SourceFile):
                    sources.append(raw)
                    continue
                if isinstance(raw, UnreadableFile):
                    unreadable.append(raw)
                    progress(f"{day}: {raw.source_file}: {raw.error}")
                seen_before = validator.totals.seen
                valid, rejected = validator.classify(raw)
                if isinstance(raw, JudgedBatch | LongLine):  # events: a line or a row each
                    counted = validator.totals.seen - seen_before
                    events_per_file[raw.source_file] = events_per_file.get(raw.source_file, 0) + counted
                rejected = _as_reject_rows(rejected, day, run_id, now)
                writer.submit(_write_batch, plays_files, valid, reject_files, rejected)
                if preview.num_rows < PREVIEW_ROWS and valid.num_rows:
                    # take copies the rows: a slice would keep the whole batch's buffers alive all day
                    head = pa.array(range(min(PREVIEW_ROWS - preview.num_rows, valid.num_rows)), pa.int64())
                    preview = pa.concat_tables([preview, valid.take(head)])
                del raw, valid, rejected  # the writer holds the batch now; the next one must not meet it here
                if time.monotonic() >= next_progress:
                    totals = validator.totals
                    progress(
                        f"{day}: {totals.seen:,} events read, {totals.valid:,} valid, {totals.rejected:,} rejected"
                    )
                    next_progress = time.monotonic() + PROGRESS_EVERY_SECONDS
        staged = StagedDay(
            day=day,
            plays_files=plays_files.finish(),
            reject_files=reject_files.finish(),
            totals=validator.totals,
            unreadable=tuple(unreadable),
            schema_changes=tables.schema_changes,
            preview=preview,
            seconds=time.monotonic() - started,
            sources=tuple(sources),
            events_per_file=events_per_file,
        )
        if staged.totals.seen == 0:
            raise IngestError(f"{day}: the source has no events for this day; refusing to replace it with nothing")
    except BaseException:
        plays_files.discard()
        reject_files.discard()
        raise
    finally:
        validator.close()
    return staged


def _rows_by_day(table: Table, files: Iterable[DataFile]) -> dict[dt.date, int]:
    rows: dict[dt.date, int] = {}
    for data_file in files:
        day = partition_day(table.specs()[data_file.spec_id], table.schema(), data_file.partition)
        rows[day] = rows.get(day, 0) + data_file.record_count
    return rows


def _shrink_guard_by_day(table: Table, days: list[dt.date], max_shrink_share: float):
    """A replace guard checking every day's rows against what it holds (the commit's own plan, on each try)."""

    def check(old_files: list[DataFile], new_files: list[DataFile]) -> None:
        before, after = _rows_by_day(table, old_files), _rows_by_day(table, new_files)
        for day in days:
            shrink_guard(day, max_shrink_share)(before.get(day, 0), after.get(day, 0))

    return check


def check_shrink(tables: IngestTables, staged: StagedDay, max_shrink_share: float, skip_unreadable_files: bool) -> None:
    """Refuse a day whose re-ingest would drop more than ``max_shrink_share`` of its rows (before writing)."""
    staged.rows_before = sum(
        t.file.record_count for t in tables.plays.scan(row_filter=played_at_filter(staged.day)).plan_files()
    )
    if not staged.unreadable or skip_unreadable_files:  # an unreadable file is reported as such instead
        shrink_guard(staged.day, max_shrink_share)(staged.rows_before, staged.rows)


def _discard(table: Table, files: Iterable[DataFile]) -> None:
    stager = FileStager(table)
    stager.data_files = list(files)
    stager.discard()


@dataclass(frozen=True)
class IngestOptions:
    """How days are ingested: the run they belong to and the guards on what may replace a day."""

    run_id: str | None = None
    max_reject_share: float = DEFAULT_MAX_REJECT_SHARE
    max_shrink_share: float = DEFAULT_MAX_SHRINK_SHARE
    skip_unreadable_files: bool = False
    snapshot_properties: Mapping[str, str] | None = None


def ingest_commit_properties(
    options: IngestOptions, first: dt.date, last: dt.date, totals: Sequence[ValidationTotals]
) -> dict[str, str]:
    """The summary properties of an ingest's commits: the run, its days, and what was read, rejected and dropped."""
    return {
        **(options.snapshot_properties or {}),
        "dagster.run-id": options.run_id or "",
        "dagster.partition": format_days(first, last),
        "sonik.events-read": str(sum(t.seen for t in totals)),
        "sonik.rows-rejected": str(sum(t.rejected for t in totals)),
        "sonik.duplicates-dropped": str(sum(t.duplicates for t in totals)),
    }


def commit_days(tables: IngestTables, staged: list[StagedDay], options: IngestOptions) -> list[DayIngestResult]:
    """Make consecutive staged days the whole of those days: their quarantine, then their plays, one commit each.

    Refused before anything is written when a day would shrink by more than ``max_shrink_share``. When a
    day is refused for its data (unreadable files, too many rejects), the quarantine of every staged day
    is still written, the days before it are committed, and its error is raised.
    """
    max_shrink_share = options.max_shrink_share
    refused = next(
        (
            (i, err)
            for i, s in enumerate(staged)
            if (err := s.refusal(options.max_reject_share, options.skip_unreadable_files))
        ),
        None,
    )
    landing = staged[: refused[0]] if refused else staged
    first, last = staged[0].day, staged[-1].day
    plays, rejected = tables.plays, tables.rejected
    # Checked day by day when staged (check_shrink); the commit checks again against its own plan.
    guard = _shrink_guard_by_day(plays, [s.day for s in landing], max_shrink_share)
    properties = ingest_commit_properties(options, first, last, [s.totals for s in staged])
    quarantined = [f for s in staged for f in s.reject_files]
    try:
        replace_partition(rejected, date_filter("ingest_day", first, last), quarantined, properties)
    except BaseException:  # the quarantine's own files went with its failed commit; the days' never will land
        for s in staged:
            _discard(plays, s.plays_files)
        raise
    if refused:
        for s in staged[refused[0] :]:
            _discard(plays, s.plays_files)
    results = []
    if landing:
        landing_last = landing[-1].day
        landing_properties = {
            **properties,
            "dagster.partition": format_days(first, landing_last),
            "sonik.events-read": str(sum(s.totals.seen for s in landing)),
        }
        # A commit that fails without landing (a concurrent writer grew a day, a full disk) deletes its files.
        report = replace_partition(
            plays, played_at_filter(first, landing_last), [f for s in landing for f in s.plays_files],
            landing_properties, guard=guard,
        )  # fmt: skip
        late = record_sources(tables, landing, properties)
        results = [
            DayIngestResult(
                day=s.day,
                plays=report,
                totals=s.totals,
                rows_written=s.rows,
                rows_before=s.rows_before,
                data_files_added=len(s.plays_files),
                bytes_added=sum(f.file_size_in_bytes for f in s.plays_files),
                unreadable_files_skipped=tuple(u.source_file for u in s.unreadable),
                schema_changes=s.schema_changes,
                seconds=s.seconds,
                preview=s.preview,
                files_read=len(s.sources),
                late=late.get(s.day, LateArrivals()),
            )
            for s in landing
        ]
    if refused:
        raise PartlyIngested(refused[1], results)
    return results


class DayRead(Protocol):
    """What a day's ingest read: the landing files as listed, and the events each held."""

    day: dt.date
    sources: Sequence[SourceFile]
    events_per_file: Mapping[str, int]


def record_sources(
    tables: IngestTables, landed: Sequence[DayRead], properties: Mapping[str, str]
) -> dict[dt.date, LateArrivals]:
    """Record the landing files the committed days read (one commit), and say which of them came late.

    Runs after the plays commit: if it fails or the process dies first, the days look changed to the
    landing sensor and are ingested again, which replaces them (never doubles them).
    """
    read = [s for s in landed if s.sources]
    if not read:
        return {}
    table = tables.sources()
    first, last = read[0].day, read[-1].day
    previous = recorded_days(table, first, last)
    now = dt.datetime.now(dt.UTC)
    run_id = properties.get("dagster.run-id") or None
    records = {
        s.day: record_rows(s.day, s.sources, s.events_per_file, previous.get(s.day, {}), now, run_id) for s in read
    }
    replace_partition(table, date_filter("day", first, last), stage_files(table, records.values()), properties)
    return {day: late_arrivals(record, previous.get(day, {})) for day, record in records.items()}


class PartlyIngested(IngestError):
    """A day was refused after the days before it were committed: ``committed`` says which landed."""

    def __init__(self, cause: IngestError, committed: list[DayIngestResult]) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.committed = committed


def ingest_days(
    catalog: Catalog,
    days: Iterable[tuple[dt.date, Iterable[RawBatch]]],
    *,
    days_per_commit: int = DEFAULT_DAYS_PER_COMMIT,
    progress: Callable[[str], None] = log.info,
    **options: Any,
) -> Iterator[DayIngestResult]:
    """Ingest consecutive days, ``days_per_commit`` to a commit; yields each day once its commit landed.

    ``options`` are ``IngestOptions``' fields. A failing day raises after the days staged before it are
    committed (and yielded), so a long backfill that stops keeps what it finished; its quarantine is
    written too.
    """
    tables = IngestTables.ensure(catalog, progress)
    opts = IngestOptions(**options)
    pending: list[StagedDay] = []
    try:
        for day, events in days:
            try:
                staged = stage_day(tables, day, events, opts.run_id, progress)
                try:
                    check_shrink(tables, staged, opts.max_shrink_share, opts.skip_unreadable_files)
                except DayWouldShrink:
                    _discard(tables.plays, staged.plays_files)
                    _discard(tables.rejected, staged.reject_files)
                    raise
            except (IngestError, FileNotFoundError):  # FileNotFoundError: a landing day without files
                if pending:  # the days before this one land; then the error
                    group, pending = pending, []
                    yield from commit_days(tables, group, opts)
                raise
            pending.append(staged)
            if len(pending) >= days_per_commit or staged.refusal(opts.max_reject_share, opts.skip_unreadable_files):
                group, pending = pending, []
                try:
                    yield from commit_days(tables, group, opts)
                except PartlyIngested as partly:
                    yield from partly.committed
                    raise partly.cause from None
        if pending:
            group, pending = pending, []
            yield from commit_days(tables, group, opts)
    except BaseException:
        for s in pending:  # staged but never committed: delete, rather than leave orphans
            _discard(tables.plays, s.plays_files)
            _discard(tables.rejected, s.reject_files)
        raise


def ingest_day(
    catalog: Catalog,
    day: dt.date,
    events: Iterable[RawBatch],
    *,
    progress: Callable[[str], None] = log.info,
    **options: Any,
) -> DayIngestResult:
    """Validate ``events`` for ``day`` and make them the whole of that day in ``music.plays``, in one commit.

    Rejected events are written to ``music.plays_rejected`` (replacing the day's earlier rejects)
    before the threshold is checked, so a failed day still leaves its evidence. Plays are committed
    only if the share of invalid events is within ``max_reject_share``, every landing file could be read
    (unless ``skip_unreadable_files``), and the day keeps at least ``1 - max_shrink_share`` of its rows
    (``options`` are ``IngestOptions``' fields).
    """
    [result] = ingest_days(catalog, [(day, events)], progress=progress, **options)
    return result
