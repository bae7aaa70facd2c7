"""Personal listening stats in milliseconds however long the history: one user's minutes, plays, active days,
top artists and tracks, and a year in review, from ``music_marts.user_track_days`` alone.

The table is laid out for this read (``tables/definitions.py``): partitioned by a bucket of user_id, rows
sorted by user_id, row groups of a few thousand rows. PyIceberg plans the read with the row filter
``user_id = U and day in first..last``, so only the user's bucket is opened (one file once compacted,
however long the history; files whose user_id or day bounds exclude the user are skipped); in each
planned file, the Parquet
footer's min/max of user_id per row group leaves the one or two row groups that can hold the user, and only
those are read. Data files never change once written, so each file's footer is read once per process and
kept (``FooterCache``): a warm read costs one small read per file it touches.

The figures are exactly those of ``music.plays`` over the same days: the table holds each user's plays and
seconds per day and track, so any range of days, and its top lists, adds up without approximation.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.expressions import And, BooleanExpression, EqualTo, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.table import FileScanTask, Table
from pyiceberg.utils.concurrent import ExecutorFactory

from sonik_pipeline.lakehouse.days import epoch_day
from sonik_pipeline.lakehouse.tables.definitions import USER_TRACK_DAYS_TABLE
from sonik_pipeline.lakehouse.tables.iceberg_internals import iter_data_file_batches

DEFAULT_TOP_N = 10
# The columns read, by field id (a column renamed later is still found in older files by its id).
COLUMNS = ("day", "user_id", "track_id", "artist", "title", "plays", "seconds_played")
_FIELD_ID = b"PARQUET:field_id"
_NO_STATS = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)


def minutes(seconds: int) -> float:
    """Listening time as the marts show it: minutes rounded to 0.01."""
    return round(seconds / 60.0, 2)


@dataclass(frozen=True)
class ArtistListening:
    artist: str
    plays: int
    seconds_played: int

    @property
    def minutes(self) -> float:
        return minutes(self.seconds_played)


@dataclass(frozen=True)
class TrackListening:
    track_id: int
    artist: str
    title: str
    plays: int
    seconds_played: int

    @property
    def minutes(self) -> float:
        return minutes(self.seconds_played)


@dataclass(frozen=True)
class PeriodListening:
    """A day or a month of the user's listening (``start`` is the day, or the month's first day)."""

    start: dt.date
    plays: int
    seconds_played: int
    active_days: int

    @property
    def minutes(self) -> float:
        return minutes(self.seconds_played)


@dataclass(frozen=True)
class YearInReview:
    """The range told as a story: month by month, the top artist and track, the busiest day and month."""

    months: tuple[PeriodListening, ...]  # every month of the range with plays, in order
    top_artist: ArtistListening | None
    top_track: TrackListening | None
    most_active_day: PeriodListening | None  # most minutes (then plays; ties: the earliest)
    most_active_month: PeriodListening | None  # the same, by month
    longest_streak_days: int  # consecutive days with plays


@dataclass(frozen=True)
class ReadReport:
    """What answering cost: the files PyIceberg planned, and the row groups and bytes actually read."""

    snapshot_id: int | None
    files_planned: int
    files_read: int  # files with at least one row group that could hold the user
    row_groups: int  # row groups in the planned files
    row_groups_read: int
    bytes_read: int  # column chunks read, plus footers not yet cached
    footers_read: int  # footers read from storage (0 when warm)
    seconds: float


@dataclass(frozen=True)
class UserStats:
    user_id: int
    first_day: dt.date | None  # None: from the first day there is
    last_day: dt.date | None  # None: to the last
    plays: int
    seconds_played: int
    active_days: int
    top_artists: tuple[ArtistListening, ...]
    top_tracks: tuple[TrackListening, ...]
    review: YearInReview
    reads: ReadReport = field(compare=False)

    @property
    def minutes(self) -> float:
        return minutes(self.seconds_played)

    def as_dict(self) -> dict:
        """JSON-ready: dates as ISO text, minutes next to every seconds_played."""
        return _jsonable(self)


def _jsonable(value: object) -> object:
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: _jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        out = {key: _jsonable(item) for key, item in asdict(value).items()}  # type: ignore[call-overload]
        if "seconds_played" in out:
            out["minutes"] = minutes(out["seconds_played"])
        return out
    return value


# ---------------------------------------------------------------------------------------------
# Footers: read once per data file and process
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Footer:
    """A data file's Parquet footer, with the per-row-group bounds this read prunes by as arrays."""

    metadata: pq.FileMetaData
    names: dict[int, str]  # field id -> the column's name in this file
    user_min: np.ndarray
    user_max: np.ndarray
    day_min: np.ndarray  # days since the epoch
    day_max: np.ndarray

    @classmethod
    def of(cls, metadata: pq.FileMetaData, user_id_field: int, day_field: int) -> Footer:
        schema = metadata.schema.to_arrow_schema()
        names = {int(f.metadata[_FIELD_ID]): f.name for f in schema if f.metadata and _FIELD_ID in f.metadata}
        user_min, user_max = _bounds(metadata, names.get(user_id_field), int)
        day_min, day_max = _bounds(metadata, names.get(day_field), epoch_day)
        return cls(metadata, names, user_min, user_max, day_min, day_max)


def _bounds(metadata: pq.FileMetaData, column: str | None, as_int: Callable) -> tuple[np.ndarray, np.ndarray]:
    """min and max of ``column`` per row group; a row group without statistics can hold anything."""
    groups = metadata.num_row_groups
    low, high = np.full(groups, _NO_STATS[0]), np.full(groups, _NO_STATS[1])
    if column is None:
        return low, high
    index = metadata.schema.names.index(column)
    for group in range(groups):
        stats = metadata.row_group(group).column(index).statistics
        if stats is not None and stats.has_min_max:
            low[group], high[group] = as_int(stats.min), as_int(stats.max)
    return low, high


class FooterCache:
    """Footers by data file path, least recently used dropped past ``max_files``. Safe because an Iceberg
    data file is never rewritten in place: a changed file is a new path."""

    def __init__(self, max_files: int = 256):
        self._max = max_files
        self._footers: OrderedDict[str, Footer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str) -> Footer | None:
        with self._lock:
            footer = self._footers.get(path)
            if footer is not None:
                self._footers.move_to_end(path)
            return footer

    def put(self, path: str, footer: Footer) -> None:
        with self._lock:
            self._footers[path] = footer
            self._footers.move_to_end(path)
            while len(self._footers) > self._max:
                self._footers.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._footers.clear()


FOOTERS = FooterCache()  # the process's cache, shared by every call


# ---------------------------------------------------------------------------------------------
# Reading one user's rows
# ---------------------------------------------------------------------------------------------


@dataclass
class _Reads:
    files_planned: int = 0
    files_read: int = 0
    row_groups: int = 0
    row_groups_read: int = 0
    bytes_read: int = 0
    footers_read: int = 0


def _empty_rows(table: Table | None) -> pa.Table:
    schema = (table.schema() if table is not None else USER_TRACK_DAYS_TABLE.schema).as_arrow()
    return schema.empty_table().select(list(COLUMNS))


def _row_filter(user_id: int, first: dt.date | None, last: dt.date | None) -> BooleanExpression:
    """user_id = U and the days asked for (either end may be open)."""
    days: list[BooleanExpression] = []
    if first is not None:
        days.append(GreaterThanOrEqual("day", first.isoformat()))
    if last is not None:
        days.append(LessThanOrEqual("day", last.isoformat()))
    return And(EqualTo("user_id", user_id), *days) if days else EqualTo("user_id", user_id)


def _day_numbers(first: dt.date | None, last: dt.date | None) -> tuple[int, int]:
    """The days as days since the epoch, an open end as the widest number."""
    return (
        epoch_day(first) if first is not None else _NO_STATS[0],
        epoch_day(last) if last is not None else _NO_STATS[1],
    )


def _rows_of_file(
    table: Table,
    task: FileScanTask,
    user_id: int,
    first: dt.date | None,
    last: dt.date | None,
    cache: FooterCache,
    reads: _Reads,
) -> pa.Table | None:
    """The file's rows of the user and days, reading only the row groups whose statistics allow them."""
    schema = table.schema()
    ids = {name: schema.find_field(name).field_id for name in COLUMNS}
    path = task.file.file_path
    footer = cache.get(path)
    with table.io.new_input(path).open() as stream:
        if footer is None:
            parquet = pq.ParquetFile(stream)
            footer = Footer.of(parquet.metadata, ids["user_id"], ids["day"])
            cache.put(path, footer)
            reads.footers_read += 1
            reads.bytes_read += footer.metadata.serialized_size
        else:
            parquet = pq.ParquetFile(stream, metadata=footer.metadata)
        reads.row_groups += footer.metadata.num_row_groups
        lo, hi = _day_numbers(first, last)
        wanted = (footer.user_min <= user_id) & (user_id <= footer.user_max)
        wanted &= (footer.day_min <= hi) & (lo <= footer.day_max)
        groups = np.flatnonzero(wanted).tolist()
        if not groups:
            return None
        present = [footer.names[ids[name]] for name in COLUMNS if ids[name] in footer.names]
        rows = parquet.read_row_groups(groups, columns=present, use_threads=False)
    reads.files_read += 1
    reads.row_groups_read += len(groups)
    indexes = [footer.metadata.schema.names.index(name) for name in present]
    reads.bytes_read += sum(
        footer.metadata.row_group(g).column(i).total_compressed_size for g in groups for i in indexes
    )
    # As the table's schema names and types them today; a column the file predates reads as nulls.
    target = schema.as_arrow()
    columns = []
    for name in COLUMNS:
        kind = target.field(name).type
        file_name = footer.names.get(ids[name])
        columns.append(rows.column(file_name).cast(kind) if file_name else pa.nulls(rows.num_rows, kind))
    rows = pa.table(columns, names=list(COLUMNS))
    return _keep(rows, user_id, first, last)


def _keep(rows: pa.Table, user_id: int, first: dt.date | None, last: dt.date | None) -> pa.Table:
    """The user's rows of the days (a mask: cheaper than an expression's plan for a few thousand rows)."""
    keep = pc.equal(rows.column("user_id"), user_id)
    if first is not None:
        keep = pc.and_(keep, pc.greater_equal(rows.column("day"), pa.scalar(first, pa.date32())))
    if last is not None:
        keep = pc.and_(keep, pc.less_equal(rows.column("day"), pa.scalar(last, pa.date32())))
    return rows.filter(keep)


def _rows_of_task(
    table: Table, task: FileScanTask, user_id: int, first: dt.date | None, last: dt.date | None, cache: FooterCache
) -> tuple[pa.Table | None, _Reads]:
    reads = _Reads()
    if task.delete_files:  # never written here (copy-on-write); read exactly, if another engine did
        batches = list(iter_data_file_batches(table, [task]))
        reads.files_read += 1
        rows = pa.Table.from_batches(batches).select(list(COLUMNS)) if batches else None
        return (_keep(rows, user_id, first, last) if rows is not None else None), reads
    return _rows_of_file(table, task, user_id, first, last, cache, reads), reads


def read_user_rows(
    table: Table, user_id: int, first: dt.date | None, last: dt.date | None, cache: FooterCache = FOOTERS
) -> tuple[pa.Table, _Reads]:
    """The user's rows of ``user_track_days`` for days first..last (None: open) at the table's current snapshot.

    The planned files (a few: the bucket's compacted file, and the days since) are read at once, on
    PyIceberg's own thread pool (Arrow reads without holding the GIL).
    """
    tasks = list(table.scan(row_filter=_row_filter(user_id, first, last)).plan_files())
    read = partial(_rows_of_task, table, user_id=user_id, first=first, last=last, cache=cache)
    results = list(ExecutorFactory.get_or_create().map(read, tasks)) if len(tasks) > 1 else [read(t) for t in tasks]
    reads = _Reads(files_planned=len(tasks))
    for _, task_reads in results:
        for name in ("files_read", "row_groups", "row_groups_read", "bytes_read", "footers_read"):
            setattr(reads, name, getattr(reads, name) + getattr(task_reads, name))
    parts = [part for part, _ in results if part is not None and part.num_rows]
    return (pa.concat_tables(parts) if parts else _empty_rows(table)), reads


# ---------------------------------------------------------------------------------------------
# The figures
# ---------------------------------------------------------------------------------------------


def _top(rows: pa.Table, keys: list[str], top_n: int) -> list[dict]:
    """The ``top_n`` groups of ``keys`` by plays (ties: by the keys, ascending), ranked in Arrow; only they
    become Python objects."""
    sums = rows.group_by(keys).aggregate([("plays", "sum"), ("seconds_played", "sum")])
    order = [("plays_sum", "descending"), *((key, "ascending") for key in keys)]
    return sums.sort_by(order).slice(0, top_n).to_pylist()


def _top_artists(rows: pa.Table, top_n: int) -> tuple[ArtistListening, ...]:
    return tuple(
        ArtistListening(r["artist"], r["plays_sum"], r["seconds_played_sum"]) for r in _top(rows, ["artist"], top_n)
    )


def _top_tracks(rows: pa.Table, top_n: int) -> tuple[TrackListening, ...]:
    return tuple(
        TrackListening(r["track_id"], r["artist"], r["title"], r["plays_sum"], r["seconds_played_sum"])
        for r in _top(rows, ["track_id", "artist", "title"], top_n)
    )


def _per_day(rows: pa.Table) -> list[PeriodListening]:
    sums = rows.group_by("day").aggregate([("plays", "sum"), ("seconds_played", "sum")])
    days = zip(*(sums.column(c).to_pylist() for c in ("day", "plays_sum", "seconds_played_sum")), strict=True)
    return [PeriodListening(day, plays, seconds, 1) for day, plays, seconds in sorted(days)]


def _per_month(days: list[PeriodListening]) -> tuple[PeriodListening, ...]:
    months: dict[dt.date, list[int]] = {}
    for day in days:
        totals = months.setdefault(day.start.replace(day=1), [0, 0, 0])
        totals[0] += day.plays
        totals[1] += day.seconds_played
        totals[2] += 1
    return tuple(PeriodListening(month, *totals) for month, totals in sorted(months.items()))


def _most_active(periods: list[PeriodListening] | tuple[PeriodListening, ...]) -> PeriodListening | None:
    # Most minutes, then most plays; the earliest of equals (min over a key that negates both).
    return min(periods, key=lambda p: (-p.seconds_played, -p.plays, p.start), default=None)


def _longest_streak(days: list[PeriodListening]) -> int:
    longest = current = 0
    previous = None
    for day in days:
        current = current + 1 if previous is not None and (day.start - previous).days == 1 else 1
        longest = max(longest, current)
        previous = day.start
    return longest


def stats_of_rows(
    rows: pa.Table,
    user_id: int,
    first: dt.date | None,
    last: dt.date | None,
    reads: ReadReport,
    top_n: int = DEFAULT_TOP_N,
) -> UserStats:
    """The figures of a user's ``user_track_days`` rows (already limited to the user and the days)."""
    days = _per_day(rows)
    artists = _top_artists(rows, max(top_n, 1))
    tracks = _top_tracks(rows, max(top_n, 1))
    months = _per_month(days)
    review = YearInReview(
        months=months,
        top_artist=artists[0] if artists else None,
        top_track=tracks[0] if tracks else None,
        most_active_day=_most_active(days),
        most_active_month=_most_active(months),
        longest_streak_days=_longest_streak(days),
    )
    return UserStats(
        user_id=user_id,
        first_day=first,
        last_day=last,
        plays=sum(d.plays for d in days),
        seconds_played=sum(d.seconds_played for d in days),
        active_days=len(days),
        top_artists=artists[:top_n],
        top_tracks=tracks[:top_n],
        review=review,
        reads=reads,
    )


def user_stats_of_table(
    table: Table | None,
    user_id: int,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    *,
    top_n: int = DEFAULT_TOP_N,
    cache: FooterCache = FOOTERS,
) -> UserStats:
    """``user_stats`` on a table already loaded (an app backend keeps it and refreshes it as it likes)."""
    if first_day is not None and last_day is not None and first_day > last_day:
        raise ValueError(f"the first day {first_day} is after the last day {last_day}")
    started = time.perf_counter()
    if table is None or table.current_snapshot() is None:
        rows, reads, snapshot_id = _empty_rows(table), _Reads(), None
    else:
        rows, reads = read_user_rows(table, user_id, first_day, last_day, cache)
        snapshot_id = table.current_snapshot().snapshot_id
    report = ReadReport(snapshot_id=snapshot_id, seconds=0.0, **asdict(reads))
    stats = stats_of_rows(rows, user_id, first_day, last_day, report, top_n)
    return replace(stats, reads=replace(report, seconds=time.perf_counter() - started))


def user_stats(
    catalog: Catalog,
    user_id: int,
    first_day: dt.date | None = None,
    last_day: dt.date | None = None,
    *,
    top_n: int = DEFAULT_TOP_N,
    cache: FooterCache = FOOTERS,
) -> UserStats:
    """One user's listening over days first_day..last_day (UTC, both included; None: from the first day or to
    the last there is), at the current snapshot of ``music_marts.user_track_days``. A user without plays gets
    zeros and empty lists; ``reads`` says what answering read."""
    try:
        table = catalog.load_table(USER_TRACK_DAYS_TABLE.identifier)
    except NoSuchTableError:
        table = None
    return user_stats_of_table(table, user_id, first_day, last_day, top_n=top_n, cache=cache)
