"""Benchmark: the tutorial's uses as history grows (issue 25): personal stats, training sets, audits.

Setup, in a fresh temporary ``SONIK_HOME`` (SQLite catalog, ``file://`` warehouse): one lakehouse grown in
place, day by day from ``FIRST_DAY``, up to each of ``--sizes`` days of history (default 30, 365 and
1,095), ``--events`` synthetic events a day (default 10,000) over ``--users`` users (default 20,000: the
synthetic source's user ids folded onto that many), built with the project's own writers as the daily
runs would build it, only in bigger steps:

* **Ingest**: ``ingest_days`` over the synthetic source, 31 days to a commit.
* **Marts**: ``run_marts`` with ``daily_user_stats`` (the mart as it is today: a partition, so a file,
  per day) and ``user_track_days`` (bucketed and sorted by user_id, small row groups), one
  commit per mart per 31 days.
* **Nightly maintenance** at each size, before measuring, in the schedules' order: ``compact_table`` on
  ``user_track_days`` with the compaction job's own default ``sort_by`` (artist, track_id), which the
  table's sort order (user_id, day, track_id) overrides, then ``rewrite_manifests`` on both marts (what
  ``manifests_job`` does). ``user_track_days`` is also measured before its compaction ("as written").

What it measures, for ``--repeat`` random users (default 20, the same users at every size), over the
whole history:

* ``user_stats(catalog, user, None, None)`` in process, warm (each user asked once before the timed call,
  so data files and footers are cached, as in a long-lived app backend): the median time, and the files,
  row groups and bytes it read (``UserStats.reads``); and cold (an empty footer cache each call).
* **The same question as today**: the user's plays, minutes and active days from ``daily_user_stats``,
  DuckDB ``iceberg_scan`` in process, on one connection warmed by a first query: median time, and
  the data files and bytes DuckDB reads for it (``EXPLAIN ANALYZE``'s files; bytes: the queried columns'
  chunks in those files, as nothing is pruned).

Targets: ``user_stats`` at 1,095 days <= 50 ms and <= 1.5x its own time at 30 days; >= 10x faster than
the ``daily_user_stats`` question at the same size. A run with other sizes is reported against the
same numbers (largest size against smallest).

The other uses add their figures through ``USES`` (see ``Use``), at each size: a 30-day training set of
``music.plays`` exported (rows/s), and the previous size's set made again from its manifest after the
days ingested since, the nights' compactions and an expiry (byte-identical or not); and ``diff_table``
(``sonik diff``) of ``music.plays`` across its last month (one 31-day commit here).

The exit code is 0 whether or not the targets are met (this is a report); it is non-zero if a build
step fails or if ``user_stats`` disagrees with ``daily_user_stats`` on any user's plays or minutes.

Usage: ``nice -n 10 .venv/bin/python benchmarks/uses.py [--sizes 30,365,1095] [--events 10000]
[--users 20000] [--repeat 20] [--keep]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.days import days_between
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_string
from sonik_pipeline.lakehouse.exports.training_sets import export_dataset, reexport
from sonik_pipeline.lakehouse.ingest.run import ingest_days
from sonik_pipeline.lakehouse.marts.queries import DAILY_USER_STATS, USER_TRACK_DAYS
from sonik_pipeline.lakehouse.marts.run import MartOptions, run_marts
from sonik_pipeline.lakehouse.reads.audit import timed_diff
from sonik_pipeline.lakehouse.reads.user_stats import FooterCache, UserStats, minutes, user_stats
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.maintenance.compaction import CompactionOptions, compact_table
from sonik_pipeline.maintenance.expiry import ExpiryOptions, expire_snapshots
from sonik_pipeline.maintenance.manifests import rewrite_manifests
from sonik_pipeline.settings import CATALOG_NAME

FIRST_DAY = dt.date(2024, 1, 1)
DEFAULT_SIZES = (30, 365, 1095)
DEFAULT_EVENTS = 10_000
DEFAULT_USERS = 20_000
DEFAULT_REPEAT = 20
DAYS_PER_STEP = 31  # days ingested (one commit) and built into the marts (one commit per mart) at a time
RUN_ID = "bench-uses"
NIGHTLY_SORT_BY = ("artist", "track_id")  # compaction_job's default sort_by

USER_STATS_TARGET_MS = 50.0
GROWTH_RATIO_TARGET = 1.5
SPEEDUP_TARGET = 10.0

# The question asked of daily_user_stats as it is today: one user's totals over every day.
TODAY_QUERY = """SELECT coalesce(sum(plays), 0), coalesce(sum(seconds_played), 0), count(*)
                 FROM iceberg_scan({metadata}) WHERE user_id = {user_id}"""
TODAY_COLUMNS = ("user_id", "plays", "seconds_played")


def say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The lakehouse, grown in place
# ---------------------------------------------------------------------------------------------


@dataclass
class Lakehouse:
    home: Path
    catalog: Catalog
    con: duckdb.DuckDBPyConnection  # the marts' connection
    events: int
    users: int
    days: list[dt.date] = field(default_factory=list)

    @classmethod
    def fresh(cls, home: Path, events: int, users: int) -> Lakehouse:
        catalog = open_catalog(CATALOG_NAME, f"sqlite:///{home / 'catalog.db'}", (home / "warehouse").as_uri())
        con = load_iceberg(duckdb.connect())
        con.execute("SET TimeZone = 'UTC'")
        return cls(home, catalog, con, events, users)

    def day_events(self, day: dt.date) -> list[ArrowRows]:
        """The synthetic source's day, its user ids folded onto ``users`` users."""
        batch = synthetic_batch(day, self.events)
        index = batch.schema.get_field_index("user_id")
        folded = (batch.column(index).to_numpy() - 1) % self.users + 1
        return [ArrowRows(batch.set_column(index, "user_id", pa.array(folded, pa.int64())), "bench")]

    def grow_to(self, size: int) -> None:
        """Ingest and build the marts for the days up to ``size`` days of history, a step at a time."""
        while len(self.days) < size:
            first = FIRST_DAY + dt.timedelta(days=len(self.days))
            step = days_between(first, first + dt.timedelta(days=min(DAYS_PER_STEP, size - len(self.days)) - 1))
            started = time.monotonic()
            list(ingest_days(self.catalog, ((d, self.day_events(d)) for d in step), progress=lambda _: None))
            ingested = time.monotonic() - started
            marts = [DAILY_USER_STATS, USER_TRACK_DAYS]
            list(run_marts(self.catalog, self.con, marts, step, MartOptions(run_id=RUN_ID), progress=lambda _: None))
            self.days += step
            built = time.monotonic() - started - ingested
            say(f"{step[0]}..{step[-1]}: ingested in {ingested:.1f}s, marts in {built:.1f}s")

    def nightly_maintenance(self) -> None:
        """The night's jobs in their schedules' order: compaction (02:00), then the manifests (02:30)."""
        table = self.catalog.load_table(USER_TRACK_DAYS.table.identifier)
        report = compact_table(table, CompactionOptions(sort_by=NIGHTLY_SORT_BY), progress=lambda _: None)
        say(f"compacted user_track_days: {report.files_before} files -> {report.files_after} in {report.seconds:.1f}s")
        for mart in (DAILY_USER_STATS, USER_TRACK_DAYS):
            rewrite_manifests(self.catalog.load_table(mart.table.identifier), progress=lambda _: None)


# ---------------------------------------------------------------------------------------------
# Personal stats: user_stats against daily_user_stats as it is today
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StatsRun:
    """user_stats for the sample of users: median time, and the median of what each call read."""

    milliseconds: float
    files: float
    row_groups_read: float
    row_groups: float
    bytes_read: float
    results: dict[int, UserStats]


def measure_user_stats(catalog: Catalog, users: list[int], warm: bool) -> StatsRun:
    times, results = [], {}
    shared = FooterCache()
    for user_id in users:
        cache = shared if warm else FooterCache()
        if warm:
            user_stats(catalog, user_id, cache=cache)
        started = time.perf_counter()
        stats = user_stats(catalog, user_id, cache=cache)
        times.append((time.perf_counter() - started) * 1000)
        results[user_id] = stats
    reads = [s.reads for s in results.values()]
    return StatsRun(
        milliseconds=statistics.median(times),
        files=statistics.median(r.files_read for r in reads),
        row_groups_read=statistics.median(r.row_groups_read for r in reads),
        row_groups=statistics.median(r.row_groups for r in reads),
        bytes_read=statistics.median(r.bytes_read for r in reads),
        results=results,
    )


@dataclass(frozen=True)
class TodayRun:
    milliseconds: float
    files: int
    bytes_read: int
    totals: dict[int, tuple[int, int, int]]  # user -> plays, seconds, active days


def measure_today(catalog: Catalog, users: list[int]) -> TodayRun:
    """The same question over daily_user_stats with DuckDB's iceberg_scan, as it can be asked today."""
    table = catalog.load_table(DAILY_USER_STATS.table.identifier)
    con = load_iceberg(duckdb.connect())
    query = TODAY_QUERY.replace("{metadata}", sql_string(table.metadata_location))
    con.execute(query.format(user_id=users[0])).fetchall()  # warm: extension, metadata and files cached
    times, totals = [], {}
    for user_id in users:
        started = time.perf_counter()
        plays, seconds, days = con.execute(query.format(user_id=user_id)).fetchone()
        times.append((time.perf_counter() - started) * 1000)
        totals[user_id] = (int(plays), int(seconds), int(days))
    plan = con.execute(f"EXPLAIN ANALYZE {query.format(user_id=users[0])}").fetchall()[0][1]
    found = re.search(r"Total Files Read: ([\d,]+)", re.sub(r"[│\s]+", " ", plan))  # the box may wrap
    files = int(found.group(1).replace(",", "")) if found else -1
    data = [task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()]
    return TodayRun(statistics.median(times), files, sum(_column_bytes(path, TODAY_COLUMNS) for path in data), totals)


def _column_bytes(path: str, columns: tuple[str, ...]) -> int:
    metadata = pq.read_metadata(path)
    indexes = [metadata.schema.names.index(c) for c in columns]
    return sum(
        metadata.row_group(g).column(i).total_compressed_size for g in range(metadata.num_row_groups) for i in indexes
    )


def check_agreement(stats: StatsRun, today: TodayRun) -> list[int]:
    """Users whose plays, minutes or active days differ between the two tables (must be none)."""
    return [
        user_id
        for user_id, s in stats.results.items()
        if (s.plays, minutes(s.seconds_played), s.active_days)
        != (today.totals[user_id][0], minutes(today.totals[user_id][1]), today.totals[user_id][2])
    ]


# ---------------------------------------------------------------------------------------------
# The uses measured at each size
# ---------------------------------------------------------------------------------------------

# A use's figures at one size: name -> value, printed as they are (a str, or a number formatted by the use).
Figures = dict[str, str]


@dataclass(frozen=True)
class Use:
    """One of the tutorial's uses, measured at each size of the grown lakehouse.

    ``measure`` gets the lakehouse (its catalog, home and days) and the sample of users, and returns its
    figures; it may change the lakehouse only as the pipeline would (a new export, a tag), since the next
    size grows the same lakehouse.
    """

    name: str
    measure: Callable[[Lakehouse, list[int]], Figures]


@dataclass
class SizeReport:
    days: int
    as_written: StatsRun
    warm: StatsRun
    cold: StatsRun
    today: TodayRun
    disagreeing: list[int]
    other_uses: dict[str, Figures] = field(default_factory=dict)


def personal_stats_at(lakehouse: Lakehouse, users: list[int]) -> SizeReport:
    as_written = measure_user_stats(lakehouse.catalog, users, warm=True)
    lakehouse.nightly_maintenance()
    warm = measure_user_stats(lakehouse.catalog, users, warm=True)
    cold = measure_user_stats(lakehouse.catalog, users, warm=False)
    today = measure_today(lakehouse.catalog, users)
    return SizeReport(len(lakehouse.days), as_written, warm, cold, today, check_agreement(warm, today))


# ---------------------------------------------------------------------------------------------
# Training sets (item 1) and audits (item 3)
# ---------------------------------------------------------------------------------------------

TRAINING_DAYS = 30


class TrainingSets:
    """At each size: the previous size's training set made again from its manifest, after the days ingested
    since, the nights' compactions and an expiry of music.plays (keeping its newest 2 snapshots and the
    export's tag), byte for byte; then the last 30 days of music.plays exported, with their times."""

    def __init__(self) -> None:
        self.previous: str | None = None  # the last export's manifest

    def __call__(self, lakehouse: Lakehouse, users: list[int]) -> Figures:
        plays = lakehouse.catalog.load_table("music.plays")
        figures: Figures = {}
        if self.previous is not None:
            expiry = expire_snapshots(plays, ExpiryOptions(retention=dt.timedelta(0), retain_last=2), lambda _: None)
            out = str(lakehouse.home / f"training-again-{len(lakehouse.days)}")
            started = time.perf_counter()
            again = reexport(lakehouse.catalog, self.previous, out)
            seconds = time.perf_counter() - started
            first = Path(self.previous).parent
            same = all((first / f.name).read_bytes() == (Path(out) / f.name).read_bytes() for f in again.manifest.files)
            figures["re-export of the last size's set"] = (
                f"{again.manifest.rows:,} rows in {seconds:.2f}s, after {len(expiry.snapshots_expired)} snapshots "
                f"expired: {'byte-identical' if same else 'DIFFERENT'}"
            )
        last = lakehouse.days[-1]
        first_day = last - dt.timedelta(days=TRAINING_DAYS - 1)
        out = str(lakehouse.home / f"training-{len(lakehouse.days)}")
        started = time.perf_counter()
        manifest = export_dataset(lakehouse.catalog, "music.plays", first_day, last, out, name=f"bench-{last}")
        seconds = time.perf_counter() - started
        self.previous = str(Path(out) / "manifest.json")
        figures[f"export of {TRAINING_DAYS} days of plays"] = (
            f"{manifest.rows:,} rows in {seconds:.2f}s ({manifest.rows / seconds:,.0f} rows/s)"
        )
        return figures


def diff_of_the_last_month(lakehouse: Lakehouse, users: list[int]) -> Figures:
    """``sonik diff music.plays`` from the state before the last ingest step (31 days here) to now."""
    plays = lakehouse.catalog.load_table("music.plays")
    before = plays.current_snapshot().parent_snapshot_id
    result, seconds = timed_diff(plays, before, repeat=3)
    return {"diff across the last month": f"{len(result.days)} days changed, {seconds * 1000:.0f} ms (best of 3)"}


USES: tuple[Use, ...] = (
    Use("training sets", TrainingSets()),
    Use("audits", diff_of_the_last_month),
)


def run(args: argparse.Namespace, home: Path) -> Iterator[SizeReport]:
    lakehouse = Lakehouse.fresh(home, args.events, args.users)
    users = random.Random(args.seed).sample(range(1, args.users + 1), args.repeat)
    for size in sorted(args.sizes):
        lakehouse.grow_to(size)
        report = personal_stats_at(lakehouse, users)
        for use in USES:
            report.other_uses[use.name] = use.measure(lakehouse, users)
        yield report


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _kib(n: float) -> str:
    return f"{n / 1024:,.0f} KiB"


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def print_report(args: argparse.Namespace, reports: list[SizeReport]) -> None:
    print(
        f"\nuser_stats over the whole history, {args.events:,} events a day, {args.users:,} users, "
        f"median of {args.repeat} random users (in process)\n"
    )
    header = (
        f"{'days':>6}  {'warm ms':>8}  {'cold ms':>8}  {'as written ms':>13}  {'files':>5}  "
        f"{'row groups read':>16}  {'read':>9}  |  {'daily_user_stats ms':>19}  {'files':>5}  {'read':>9}  "
        f"{'speedup':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in reports:
        print(
            f"{r.days:>6,}  {r.warm.milliseconds:>8.1f}  {r.cold.milliseconds:>8.1f}  "
            f"{r.as_written.milliseconds:>13.1f}  {r.warm.files:>5.0f}  "
            f"{r.warm.row_groups_read:>6.0f} of {r.warm.row_groups:>6.0f}  {_kib(r.warm.bytes_read):>9}  |  "
            f"{r.today.milliseconds:>19.1f}  {r.today.files:>5,}  {_kib(r.today.bytes_read):>9}  "
            f"{r.today.milliseconds / r.warm.milliseconds:>6.1f}x"
        )
    print(
        "\n(warm: footers cached, as in a long-lived process; cold: every footer read again; as written: "
        "before the night's compaction; read: column chunks and any footer read, median per user)"
    )
    for r in reports:
        for name, figures in r.other_uses.items():
            print(f"{r.days:>6,} days, {name}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))

    small, large = reports[0], reports[-1]
    growth = large.warm.milliseconds / small.warm.milliseconds
    speedup = large.today.milliseconds / large.warm.milliseconds
    print("\ntargets")
    print(
        f"  user_stats at {large.days:,} days: {large.warm.milliseconds:.1f} ms "
        f"(target <= {USER_STATS_TARGET_MS:.0f} ms) {_verdict(large.warm.milliseconds <= USER_STATS_TARGET_MS)}"
    )
    print(
        f"  growth {large.days:,} / {small.days:,} days: {growth:.2f}x (target <= {GROWTH_RATIO_TARGET}x) "
        f"{_verdict(growth <= GROWTH_RATIO_TARGET)}"
    )
    print(
        f"  against daily_user_stats at {large.days:,} days: {speedup:.1f}x faster (target >= {SPEEDUP_TARGET:.0f}x) "
        f"{_verdict(speedup >= SPEEDUP_TARGET)}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(n) for n in text.split(",")],
        default=list(DEFAULT_SIZES),
        help="days of history to measure at, comma-separated (default 30,365,1095)",
    )
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events a day (default 10,000)")
    parser.add_argument("--users", type=int, default=DEFAULT_USERS, help="users (default 20,000)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="random users measured (default 20)")
    parser.add_argument("--seed", type=int, default=25, help="which random users")
    parser.add_argument("--keep", action="store_true", help="keep the lakehouse (its path is printed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="sonik-bench-uses-"))
    started = time.monotonic()
    try:
        reports = []
        for report in run(args, home):
            reports.append(report)
            say(f"{report.days} days measured ({time.monotonic() - started:.0f}s so far)")
        print_report(args, reports)
        disagreeing = sorted({u for r in reports for u in r.disagreeing})
        if disagreeing:
            print(f"\nuser_stats and daily_user_stats disagree for users {disagreeing}", file=sys.stderr)
            return 1
        return 0
    finally:
        if args.keep:
            print(f"\nlakehouse kept at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
