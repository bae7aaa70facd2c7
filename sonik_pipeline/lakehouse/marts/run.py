"""Running marts over days of plays: one pinned read of plays, every mart computed from it, one commit per mart.

A run over N days reads plays (and the days of the windows reaching back from them) at one snapshot,
in chunks of whole days that bound memory (``plays_days``), and computes every mart of the run from
each chunk; each mart's rows are staged as files and committed once for all its days, recording the
plays snapshot they came from. A run that fails leaves no staged file behind and commits nothing for
the marts it had not committed yet.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform

from sonik_pipeline.lakehouse.days import date_filter, days_between, format_days, parse_days
from sonik_pipeline.lakehouse.marts.queries import DEFAULT_TOP_N, MART_COLUMNS, Mart, mart_rows, window_start
from sonik_pipeline.lakehouse.reads.plays_days import (
    DEFAULT_MAX_ROWS_PER_READ,
    PlaysSnapshot,
    chunk_days,
    load_plays_days,
    rows_per_day,
)
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.snapshots import lineage
from sonik_pipeline.lakehouse.tables.writes import CommitReport, FileStager, replace_days, replace_partition

log = logging.getLogger(__name__)

PREVIEW_ROWS = 10  # rows of the run's last day kept per mart, for a look at what was written
PLAYS_SNAPSHOT_PROPERTY = "sonik.plays-snapshot-id"
PLAYS_METADATA_PROPERTY = "sonik.plays-metadata-location"


@dataclass(frozen=True)
class MartOptions:
    """How a run of marts reads plays, and the run its commits belong to."""

    top_n: int = DEFAULT_TOP_N  # rows kept by ranked marts (top tracks, top artists)
    max_rows_per_read: int = DEFAULT_MAX_ROWS_PER_READ  # plays read at once, in whole days (a bigger day alone)
    materialize_plays: bool = False  # copy each read into DuckDB rather than a view over the files
    run_id: str | None = None  # recorded in every commit as ``dagster.run-id``


@dataclass(frozen=True)
class MartDayReport:
    """One day of a mart as the run wrote it."""

    day: dt.date
    rows: int
    days_with_plays: int  # days of the mart's window up to ``day`` with plays at the snapshot read
    preview: pa.Table | None = None  # the first rows, on the run's last day only


@dataclass(frozen=True)
class MartReport:
    """What a run did to one mart: its commit, the plays snapshot it read, and each of its days."""

    mart: Mart
    commit: CommitReport
    plays: PlaysSnapshot
    days: tuple[MartDayReport, ...]
    plays_reads: int  # reads of plays the run made, shared by all its marts
    query_seconds: float
    commit_seconds: float

    @property
    def rows(self) -> int:
        return sum(day.rows for day in self.days)


@dataclass
class _Staging:
    """A mart's rows staged so far in a run, not yet committed."""

    table: Table
    files: FileStager
    rows: dict[dt.date, int] = field(default_factory=dict)
    preview: pa.Table | None = None
    query_seconds: float = 0.0


def run_marts(
    catalog: Catalog,
    con: duckdb.DuckDBPyConnection,
    marts: Sequence[Mart],
    days: Sequence[dt.date],
    options: MartOptions = MartOptions(),
    *,
    progress: Callable[[str], None] = log.info,
) -> Iterator[MartReport]:
    """Compute ``marts`` for the consecutive ``days`` from plays at its current snapshot; yields each once committed.

    Every mart's days are replaced in one commit (a re-run replaces, never doubles). An error discards
    every staged file not yet committed and raises; the marts yielded before it stay committed.
    """
    if not marts or not days:
        return
    first, last = run_days(days)
    plays = catalog.load_table(PLAYS.identifier)
    src = PlaysSnapshot.current(plays)  # every day and mart of the run reads this snapshot
    lookback = lookback_days(marts)
    per_day = rows_per_day(plays, src.snapshot_id, first - dt.timedelta(days=lookback), last)
    chunks = chunk_days(per_day, first, last, options.max_rows_per_read, lookback)
    staging: dict[str, _Staging] = {}
    for mart in marts:
        table = ensure_table(catalog, mart.table)[0]
        staging[mart.name] = _Staging(table, FileStager(table))
    pending = dict(staging)  # staged, not committed: discarded on any error
    try:
        for chunk_first, chunk_last in chunks:
            _stage_chunk(con, src, marts, chunk_first, chunk_last, lookback, staging, options, progress)
        for mart in marts:
            started, staged = time.monotonic(), staging[mart.name]
            files = staged.files.finish()
            del pending[mart.name]  # from here its commit deletes the files if it does not land
            commit = replace_mart_days(staged.table, first, last, files, src, {"dagster.run-id": options.run_id or ""})
            progress(f"{mart.name} {first}..{last}: committed snapshot {commit.snapshot_id}")
            yield MartReport(
                mart=mart,
                commit=commit,
                plays=src,
                days=day_reports(mart, days, staged.rows, per_day, staged.preview),
                plays_reads=len(chunks),
                query_seconds=staged.query_seconds,
                commit_seconds=time.monotonic() - started,
            )
    except BaseException:  # a failed run, or a caller that stopped reading: no staged file is left behind
        for staged in pending.values():
            staged.files.discard()
        raise


def run_days(days: Sequence[dt.date]) -> tuple[dt.date, dt.date]:
    """The first and last day of a run of marts, whose days must be consecutive (one range per commit)."""
    first, last = days[0], days[-1]
    if list(days) != days_between(first, last):
        raise ValueError(f"the days of a mart run must be consecutive, got {', '.join(map(str, days))}")
    return first, last


def lookback_days(marts: Sequence[Mart]) -> int:
    """Days of plays before a run's first day that its marts read (rolling views reach back)."""
    return max(mart.window_days for mart in marts) - 1


def day_reports(
    mart: Mart,
    days: Sequence[dt.date],
    rows: Mapping[dt.date, int],
    plays_per_day: Mapping[dt.date, int],
    preview: pa.Table | None,
) -> tuple[MartDayReport, ...]:
    """Each day of a run as one mart holds it: its rows, the days of its window with plays, and (last day) a preview."""
    return tuple(
        MartDayReport(
            day=day,
            rows=rows.get(day, 0),
            days_with_plays=sum(1 for d in days_between(window_start(mart, day), day) if plays_per_day.get(d)),
            preview=preview if day == days[-1] else None,
        )
        for day in days
    )


def _stage_chunk(
    con: duckdb.DuckDBPyConnection,
    src: PlaysSnapshot,
    marts: Sequence[Mart],
    first: dt.date,
    last: dt.date,
    lookback: int,
    staging: dict[str, _Staging],
    options: MartOptions,
    progress: Callable[[str], None],
) -> None:
    """Read days first..last of plays (and ``lookback`` days before) once, and stage every mart's rows of them."""
    started = time.monotonic()
    read = load_plays_days(
        con, src, first - dt.timedelta(days=lookback), last, MART_COLUMNS, materialize=options.materialize_plays
    )
    how = "copied into DuckDB" if options.materialize_plays else "planned"
    progress(
        f"{first}..{last}: {read:,} plays at snapshot {src.snapshot_id}, {how} in {time.monotonic() - started:.1f}s"
    )
    for mart in marts:
        staged = staging[mart.name]
        started = time.monotonic()
        rows = mart_rows(con, mart, first, last, options.top_n)
        staged.query_seconds += time.monotonic() - started
        staged.files.add(rows)
        staged.rows.update(_count_by_day(rows))
        of_last = rows.filter(pc.equal(rows.column("day"), pa.scalar(last, pa.date32())))
        # take copies the rows: a slice would keep the chunk's buffers alive to the end of the run
        staged.preview = of_last.take(pa.array(range(min(PREVIEW_ROWS, of_last.num_rows)), pa.int64()))


def _count_by_day(rows: pa.Table) -> dict[dt.date, int]:
    if not len(rows):
        return {}
    counts = rows.group_by("day").aggregate([("day", "count")])
    return dict(zip(counts.column("day").to_pylist(), counts.column("day_count").to_pylist(), strict=True))


def replace_mart_days(
    table: Table,
    first: dt.date,
    last: dt.date,
    files: list[DataFile],
    src: PlaysSnapshot,
    properties: dict[str, str],
) -> CommitReport:
    """Make ``files`` the whole of days ``first``..``last`` of a mart table, in one commit.

    The commit records the plays snapshot the figures came from, so they can be reproduced and checked.
    A backfill of many days is one commit per mart rather than one per day. A mart partitioned by day
    swaps whole partitions; one whose partitions hold more days (``user_track_days``: a bucket of users) has those
    days' rows replaced within them (``replace_days``).
    """
    snapshot_properties = mart_commit_properties(first, last, src, properties)
    if not _partitioned_by_day(table):
        return replace_days(table, "day", first, last, files, snapshot_properties)
    return replace_partition(table, date_filter("day", first, last), files, snapshot_properties)


def mart_commit_properties(
    first: dt.date, last: dt.date, src: PlaysSnapshot, properties: Mapping[str, str]
) -> dict[str, str]:
    """What every engine's commit of a mart's days records: the days, and the plays snapshot they came from."""
    return {
        **properties,
        "dagster.partition": format_days(first, last),
        PLAYS_SNAPSHOT_PROPERTY: str(src.snapshot_id),
        PLAYS_METADATA_PROPERTY: src.metadata_location,
    }


def _partitioned_by_day(table: Table) -> bool:
    """True when the table's partitions are its ``day`` column's values, so a range of days is whole partitions."""
    day_id = table.schema().find_field("day").field_id
    return any(f.source_id == day_id and isinstance(f.transform, IdentityTransform) for f in table.spec().fields)


def plays_snapshots_behind(mart_table: Table, days: list[dt.date]) -> dict[dt.date, PlaysSnapshot | None]:
    """For each day, the plays snapshot that the mart's current figures for it were computed from.

    One walk back through the current lineage for all the days: the newest commit covering a day wins.
    """
    behind: dict[dt.date, PlaysSnapshot | None] = dict.fromkeys(days)
    missing = set(days)
    for snapshot in lineage(mart_table):  # maintenance commits (compaction, manifests) carry no partition
        summary = snapshot.summary
        if not missing:
            break
        if not summary or not summary.get(PLAYS_SNAPSHOT_PROPERTY) or not summary.get("dagster.partition"):
            continue
        first, last = parse_days(summary["dagster.partition"])
        covered = {day for day in missing if first <= day <= last}
        src = PlaysSnapshot(summary[PLAYS_METADATA_PROPERTY], int(summary[PLAYS_SNAPSHOT_PROPERTY]))
        for day in covered:
            behind[day] = src
        missing -= covered
    return behind
