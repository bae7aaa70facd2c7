"""Benchmark: three years of daily operation of ``music.plays``, and whether anything grows with its age.

Setup, in a fresh temporary ``SONIK_HOME`` (SQLite catalog, ``file://`` warehouse) and ``DAGSTER_HOME``:
``--days`` days (default 1,095, the last one ``LAST_DAY``) of ``--events`` synthetic events a day
(default 10,000), built as the schedules would run them:

* **Daily ingest**: ``ingest_day(catalog, day, synthetic_events(day, n))``, the code the ``plays`` asset
  runs, one commit a day, timed around the call.
* **Nightly maintenance** on ``music.plays`` after the day's ingest (every ``--maintain-every`` nights,
  default every night, and always on the nights a figure is read): ``rewrite_manifests(table)`` with
  its defaults, then ``expire_snapshots``. Compaction would find nothing (one file a day) and orphan
  removal nothing younger than its 3-day window, so neither runs. Snapshot timestamps are real time
  (the build takes minutes), so the 30-day retention cannot be had from a clock: it is emulated with
  ``ExpiryOptions(retention=0, retain_last=N)``, N being the snapshots committed in the last 30
  simulated days (the ingest's overwrite and the night's manifest rewrite: 2 a day), at least 5, which
  is exactly what ``history.expire.max-snapshot-age-ms`` (30 days) and ``min-snapshots-to-keep`` (5)
  keep on a daily clock.

What it measures, all in the same run:

* **Per-day ingest cost**: the median ``ingest_day`` time over the last 30 days against a same-time
  baseline: a young table (its own catalog, same maintenance) given the events of days 1-30, one of its
  days ingested right after each of the old table's last 30, so a machine shared with other work slows
  both alike; the old table's own days 1-30, timed at the start of the build, are shown too. The
  nightly maintenance time, first 30 nights against the last 30, is reported with no target.
* **Expiry's nightly cost at age**: the median ``expire_snapshots`` time of the old table's last 30
  nights against a same-time baseline: a year-old table (its own catalog, same maintenance) given the
  events of days 1-365, one of its days operated right after each of the old table's last 365, so that
  its nights 336-365 run alongside the old table's last 30; in wall-clock time and in this process's CPU
  time. The old table's own nights 336-365, timed during the build, are shown too. Runs of fewer than
  395 days skip it (n/a).
* **Table metadata at age**: ``metadata.json`` bytes (the current metadata file), manifest-list
  bytes (the current snapshot's), the data manifests and their bytes, and the snapshots, read after
  the night's maintenance on day 7, 30, 365, 730 and the last day; and the last night's manifest
  count before and after its rewrite.
* **One-day DuckDB query**: ``count(*)`` with distinct listeners and the top 10 artists of the table's
  newest day, ``iceberg_scan(metadata_location)`` filtered on that day's ``played_at``, on a fresh
  connection (``load_iceberg`` before timing), median of ``--repeat`` runs after a warm-up: on the old
  table at the end (after maintenance) against the young table at 7 days (after that night's
  maintenance, timed during the old table's last 30 days); the old table at 7 days, timed at the start
  of the build, is shown too.
* **One-day planned read**: the same two queries over the pipeline's own read of a day
  (``PlaysSnapshot.days_sql``, as the checks and marts read: PyIceberg plans the day's data files at the
  current snapshot, DuckDB's ``read_parquet`` reads them, ``file_scan.native_select``), timed from the
  table's load out of its catalog through planning to the last row, at the same three ages. It must
  not fall back to ``iceberg_scan``.
* **Checks and marts over a year**: the newest 365 days (all of them if fewer), through Dagster in
  process (``build_definitions(Settings)`` on this lakehouse, one run over the range with the
  ``dagster/asset_partition_range_*`` tags, as a backfill runs it): the ``plays_quality`` step
  (the four blocking checks on ``plays``), then the ``daily_marts`` step (the six daily marts, with
  their reconciliation checks as a second step); step times from the runs' ``STEP_SUCCESS`` events.
* **Single-run backfill** (``--backfill-days``, default 365, 0 skips it): the newest days re-ingested
  through Dagster in one run of ``plays``, as ``dagster asset materialize --select plays
  --partition-range A...B`` runs them; per-day ``duration_seconds`` from each day's materialization,
  first 30 against last 30 (no maintenance runs within a run). Run last, as it rewrites those days.
* **Manifest merging on commit** (``--merge-days``, default 60, 0 skips it): on fresh tables, that many
  daily ``ingest_day`` commits with ``commit.manifest-merge.enabled`` false (the default) and true (with
  ``commit.manifest.min-count-to-merge=2`` so that any merging shows within a few commits; the default
  100 would not merge before 100 manifests), and, for reference, PyIceberg's own merging path
  (``table.append``, a ``merge_append`` when enabled) with the same properties: manifests after the
  commits and the median time per commit. Our day commits are ``overwrite`` producers, which PyIceberg
  never merges; this shows whether the setting does anything for them.

Targets: per-day ingest of the last 30 days <= 1.5x the first 30; expiry a night at the end <= 1.2x
year 1's; the one-day query on the old table after maintenance <= 1.5x the 7-day table (``iceberg_scan``
and the planned read, each against its own 7-day figure); the ``plays`` checks for 365 days <= 60 s; the
daily marts for 365 days at 10,000 events/day <= 3 min (a run with other sizes is reported against the
same numbers).

The exit code is 0 whether or not the targets are met (this is a report); it is non-zero if an ingest,
maintenance or a Dagster run fails, or if a row is lost: the table must hold exactly days x events rows
(checked after the build and after the backfill), and each one-day query must count the day's events
(and each planned read must have been read by ``read_parquet``).

Usage: ``nice -n 10 .venv/bin/python benchmarks/history.py [--days 1095] [--events 10000]
[--maintain-every 1] [--backfill-days 365] [--merge-days 60] [--repeat 7] [--keep]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table

from sonik_pipeline.assets.checks import PLAYS_CHECKS
from sonik_pipeline.assets.plays import PLAYS_KEY
from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.days import played_at_sql
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_string
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts.queries import DAILY_MARTS
from sonik_pipeline.lakehouse.reads.plays_days import PlaysSnapshot
from sonik_pipeline.lakehouse.sources.synthetic import catalogue, synthetic_batch, synthetic_events
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.maintenance.expiry import DEFAULT_RETAIN_LAST, DEFAULT_RETENTION, ExpiryOptions, expire_snapshots
from sonik_pipeline.maintenance.manifests import rewrite_manifests
from sonik_pipeline.settings import CATALOG_NAME, Settings

LAST_DAY = dt.date(2026, 4, 20)
DEFAULT_DAYS = 3 * 365
DEFAULT_EVENTS = 10_000
DEFAULT_BACKFILL_DAYS = 365
DEFAULT_MERGE_DAYS = 60
DEFAULT_REPEAT = 7
WINDOW = 30  # days compared at the start and the end
YEAR = 365
QUERY_AGE = 7  # the young table the one-day query is compared against
CHECKPOINTS = (QUERY_AGE, 30, 365, 730)  # and the last day
RETENTION_DAYS = DEFAULT_RETENTION.days
RUN_ID = "bench-history"

INGEST_RATIO_TARGET = 1.5
EXPIRY_RATIO_TARGET = 1.2
QUERY_RATIO_TARGET = 1.5
CHECKS_TARGET_SECONDS = 60.0
MARTS_TARGET_SECONDS = 180.0

PLAYS_CHECKS_STEP = "plays_quality"
DAILY_MARTS_STEP = "daily_marts"
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
MERGE_ON = {"commit.manifest-merge.enabled": "true", "commit.manifest.min-count-to-merge": "2"}
DAY_QUERIES = (
    "SELECT count(*), count(DISTINCT user_id) FROM {source} WHERE {day}",
    "SELECT artist, count(*) AS plays FROM {source} WHERE {day} GROUP BY artist ORDER BY plays DESC, artist LIMIT 10",
)
PLANNED_READER = "read_parquet"  # what reads a planned day's files; iceberg_scan if days_sql fell back


# ---------------------------------------------------------------------------------------------
# What is measured
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableState:
    """The size of ``music.plays``'s metadata on one day of its life."""

    age_days: int
    metadata_json_bytes: int
    manifest_list_bytes: int
    manifests: int
    manifest_bytes: int
    snapshots: int
    data_files: int


@dataclass(frozen=True)
class Night:
    """One night's maintenance on music.plays."""

    rewrite_seconds: float
    expiry_seconds: float
    expiry_cpu_seconds: float  # this process's CPU time: what a machine shared with other work slows least
    manifests_before: int
    manifests_after: int
    snapshots_expired: int
    retain_last: int

    @property
    def seconds(self) -> float:
        return self.rewrite_seconds + self.expiry_seconds


@dataclass(frozen=True)
class DayQuery:
    seconds: list[float]
    plays: int  # count(*) of the day: must be the day's events
    reader: str  # what read the rows: iceberg_scan, or read_parquet over files PyIceberg planned

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


@dataclass
class History:
    old: DailyTable  # the table operated for --days days
    young: DailyTable  # its same-time baseline: a fresh table's first 30 days, run during the old one's last 30
    year_one: DailyTable | None  # expiry's: a fresh table's first 365 days, run during the old one's last 365
    load_before: float  # the machine's 1-minute load average when the build started and ended
    load_after: float = 0.0
    early_query: DayQuery | None = None  # the old table at 7 days, at the start of the build
    young_query: DayQuery | None = None  # the young table at 7 days, near the end
    old_query: DayQuery | None = None  # the old table at the end
    early_planned: DayQuery | None = None  # the same ages, read as the pipeline does (PlaysSnapshot.days_sql)
    young_planned: DayQuery | None = None
    old_planned: DayQuery | None = None
    rows: int = 0
    young_rows: int = 0
    year_one_rows: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class StepTimes:
    """What one in-process Dagster run took, step by step."""

    success: bool
    seconds: float
    steps: dict[str, float]


@dataclass(frozen=True)
class Backfill:
    run: StepTimes
    day_seconds: list[float]  # per day, in day order
    manifests_after: int
    rows: int


@dataclass(frozen=True)
class MergeVariant:
    label: str
    manifests: int
    manifest_list_bytes: int
    commit_seconds: list[float]


# ---------------------------------------------------------------------------------------------
# Daily operation: ingest, nightly maintenance, and the table's state
# ---------------------------------------------------------------------------------------------


def bench_days(days: int) -> list[dt.date]:
    return [LAST_DAY - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def file_bytes(table: Table, location: str) -> int:
    return len(table.io.new_input(location))


def table_state(table: Table, age_days: int) -> TableState:
    snapshot = table.current_snapshot()
    manifests = [m for m in snapshot.manifests(table.io) if m.content == ManifestContent.DATA]
    return TableState(
        age_days=age_days,
        metadata_json_bytes=file_bytes(table, table.metadata_location),
        manifest_list_bytes=file_bytes(table, snapshot.manifest_list),
        manifests=len(manifests),
        manifest_bytes=sum(m.manifest_length for m in manifests),
        snapshots=len(table.snapshots()),
        data_files=int(snapshot.summary.get("total-data-files") or 0) if snapshot.summary else 0,
    )


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def nightly_maintenance(table: Table, commits_by_day: deque[int]) -> Night:
    """The night's manifest rewrite, then expiry keeping what 30 days of retention keep on a daily clock.

    ``commits_by_day`` holds the snapshots committed on each of the last 30 simulated days, today's
    ingest included; tonight's rewrite is added to today's before the expiry keeps them all.
    """
    sequence_before = table.metadata.last_sequence_number
    rewrite_seconds, rewrite = timed(lambda: rewrite_manifests(table))
    table.refresh()
    commits_by_day[-1] += table.metadata.last_sequence_number - sequence_before
    retain_last = max(DEFAULT_RETAIN_LAST, sum(commits_by_day))
    options = ExpiryOptions(retention=dt.timedelta(0), retain_last=retain_last)
    cpu_started = time.process_time()
    expiry_seconds, expiry = timed(lambda: expire_snapshots(table, options))
    expiry_cpu_seconds = time.process_time() - cpu_started
    table.refresh()
    return Night(
        rewrite_seconds=rewrite_seconds,
        expiry_seconds=expiry_seconds,
        expiry_cpu_seconds=expiry_cpu_seconds,
        manifests_before=rewrite.manifests_before,
        manifests_after=rewrite.manifests_after,
        snapshots_expired=len(expiry.snapshots_expired),
        retain_last=retain_last,
    )


class DailyTable:
    """One ``music.plays`` operated day by day: the day's ingest, then (on maintenance nights) its maintenance."""

    def __init__(self, catalog: Catalog, events: int, maintain_every: int, checkpoints: set[int]):
        self.catalog, self.events, self.maintain_every, self.checkpoints = catalog, events, maintain_every, checkpoints
        self.age = 0
        self.table: Table | None = None
        self.commits_by_day: deque[int] = deque(maxlen=RETENTION_DAYS)
        self.ingest_seconds: list[float] = []
        self.nights: dict[int, Night] = {}  # by age in days
        self.states: dict[int, TableState] = {}

    def operate(self, day: dt.date) -> float:
        """Ingest ``day`` (timed), then run the night's maintenance and read the state where due."""
        self.age += 1
        sequence_before = self.table.metadata.last_sequence_number if self.table is not None else 0
        seconds, _ = timed(lambda: ingest_day(self.catalog, day, synthetic_events(day, self.events), run_id=RUN_ID))
        self.ingest_seconds.append(seconds)
        self.table = self.catalog.load_table(PLAYS.identifier)
        self.commits_by_day.append(self.table.metadata.last_sequence_number - sequence_before)
        if self.age % self.maintain_every == 0 or self.age in self.checkpoints:
            self.nights[self.age] = nightly_maintenance(self.table, self.commits_by_day)
        if self.age in self.checkpoints:
            self.states[self.age] = table_state(self.table, self.age)
        return seconds


def build_history(
    catalog: Catalog, young_catalog: Catalog, year_one_catalog: Catalog, args: argparse.Namespace
) -> History:
    """Operate music.plays for ``args.days`` days; over its last 30, a young table's first 30 alongside,
    and over its last 365 (if it has 395), a year-old table's first 365.

    The baselines get the same days' events as the old one's first days, and their day and the old
    table's day are operated one after the other, so a machine shared with other work slows all alike.
    """
    days = bench_days(args.days)
    old = DailyTable(catalog, args.events, args.maintain_every, {a for a in CHECKPOINTS if a < args.days} | {args.days})
    young_days = days[: min(WINDOW, args.days)]
    young_query_age = min(QUERY_AGE, len(young_days))
    young = DailyTable(young_catalog, args.events, args.maintain_every, {young_query_age})
    year_one_days = days[:YEAR] if args.days >= YEAR + WINDOW else []
    year_one = DailyTable(year_one_catalog, args.events, args.maintain_every, {YEAR}) if year_one_days else None
    history = History(old=old, young=young, year_one=year_one, load_before=os.getloadavg()[0])
    started = time.perf_counter()
    for age, day in enumerate(days, start=1):
        seconds = old.operate(day)
        if age == young_query_age:
            history.early_query, history.early_planned = time_day_queries(old, day, args.repeat)
        if age > args.days - len(young_days):
            young.operate(young_days[young.age])
            if young.age == young_query_age:
                history.young_query, history.young_planned = time_day_queries(
                    young, young_days[young.age - 1], args.repeat
                )
        if year_one is not None and age > args.days - YEAR:
            year_one.operate(year_one_days[year_one.age])
        if age % 50 == 0 or age == args.days:
            progress(
                f"day {age}/{args.days} ({day}): ingest {seconds:.2f}s, {table_state(old.table, age).manifests} "
                f"manifests, {time.perf_counter() - started:.0f}s elapsed, load {os.getloadavg()[0]:.1f}"
            )
    history.old_query, history.old_planned = time_day_queries(old, days[-1], args.repeat)
    history.seconds = time.perf_counter() - started
    history.load_after = os.getloadavg()[0]
    history.rows = old.table.scan().count()
    history.young_rows = young.table.scan().count()
    history.year_one_rows = year_one.table.scan().count() if year_one is not None else 0
    return history


def progress(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The one-day DuckDB query
# ---------------------------------------------------------------------------------------------


# A one-day read's source: given the connection, the relation the queries read (what it costs to get it is timed).
DaySource = Callable[[duckdb.DuckDBPyConnection], str]


def iceberg_scan_source(metadata_location: str) -> DaySource:
    """DuckDB's ``iceberg_scan`` of the table's metadata file: DuckDB reads the metadata and plans the day."""
    return lambda con: f"iceberg_scan({sql_string(metadata_location)})"


def planned_source(catalog: Catalog, day: dt.date) -> DaySource:
    """The pipeline's read: the table loaded, PyIceberg plans the day's files, ``read_parquet`` reads them."""
    return lambda con: PlaysSnapshot.current(catalog.load_table(PLAYS.identifier)).days_sql(con, day, day)


def run_day_query(source: DaySource, day: dt.date) -> tuple[float, int, str]:
    con = load_iceberg(duckdb.connect())
    try:
        started = time.perf_counter()
        relation = source(con)
        sqls = [q.format(source=relation, day=played_at_sql(day)) for q in DAY_QUERIES]
        counted = con.execute(sqls[0]).fetchone()[0]
        con.execute(sqls[1]).fetchall()
        reader = PLANNED_READER if relation.startswith("(") and f"{PLANNED_READER}(" in relation else "iceberg_scan"
        return time.perf_counter() - started, int(counted), reader
    finally:
        con.close()


def time_day_query(source: DaySource, day: dt.date, repeat: int) -> DayQuery:
    run_day_query(source, day)  # warm-up
    runs = [run_day_query(source, day) for _ in range(repeat)]
    return DayQuery([seconds for seconds, _, _ in runs], runs[-1][1], runs[-1][2])


def time_day_queries(daily: DailyTable, day: dt.date, repeat: int) -> tuple[DayQuery, DayQuery]:
    """The one-day query on ``daily``'s table as it is now: by ``iceberg_scan``, then by the pipeline's planned read."""
    return (
        time_day_query(iceberg_scan_source(daily.table.metadata_location), day, repeat),
        time_day_query(planned_source(daily.catalog, day), day, repeat),
    )


# ---------------------------------------------------------------------------------------------
# Through Dagster: checks, marts and a backfill over a range of days, each one run in process
# ---------------------------------------------------------------------------------------------


def lakehouse_settings(home: Path, args: argparse.Namespace) -> Settings:
    return Settings(
        home=home,
        catalog_uri=f"sqlite:///{home / 'catalog.db'}",
        warehouse=(home / "warehouse").as_uri(),
        source="synthetic",
        landing_dir=str(home / "landing"),
        events_per_day=args.events,
        start_date=bench_days(args.days)[0].isoformat(),
    )


def run_range(defs: dg.Definitions, name: str, selection: dg.AssetSelection, days: list[dt.date]):
    """One run of an ad-hoc asset job over ``days``, in process, as a single-run backfill runs it."""
    defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job(name, selection=selection)]))
    tags = {
        "dagster/asset_partition_range_start": days[0].isoformat(),
        "dagster/asset_partition_range_end": days[-1].isoformat(),
    }
    started = time.perf_counter()
    result = defs.resolve_job_def(name).execute_in_process(
        run_config=QUIET_RUN_CONFIG, tags=tags, instance=dg.DagsterInstance.get(), raise_on_error=False
    )
    return result, time.perf_counter() - started


def step_times(result: dg.ExecuteInProcessResult, seconds: float) -> StepTimes:
    steps = {
        event.step_key: event.event_specific_data.duration_ms / 1000
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }
    return StepTimes(result.success, seconds, steps)


def time_checks_and_marts(defs: dg.Definitions, days: list[dt.date]) -> tuple[StepTimes, StepTimes]:
    checks = dg.AssetSelection.checks(*(dg.AssetCheckKey(PLAYS_KEY, name) for name in PLAYS_CHECKS))
    marts = dg.AssetSelection.assets(*(mart.name for mart in DAILY_MARTS))
    return (
        step_times(*run_range(defs, "bench_plays_checks", checks, days)),
        step_times(*run_range(defs, "bench_daily_marts", marts, days)),
    )


def run_backfill(defs: dg.Definitions, catalog: Catalog, days: list[dt.date]) -> Backfill:
    result, seconds = run_range(
        defs, "bench_plays_backfill", dg.AssetSelection.assets(PLAYS_KEY).without_checks(), days
    )
    by_day = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.partition and "duration_seconds" in materialization.metadata:
            by_day[materialization.partition] = materialization.metadata["duration_seconds"].value
    table = catalog.load_table(PLAYS.identifier)
    return Backfill(
        run=step_times(result, seconds),
        day_seconds=[by_day[key] for key in sorted(by_day)],
        manifests_after=table_state(table, 0).manifests,
        rows=table.scan().count(),
    )


# ---------------------------------------------------------------------------------------------
# Manifest merging on commit: measured on fresh tables
# ---------------------------------------------------------------------------------------------


def fresh_plays(root: Path, properties: dict[str, str]) -> tuple[Catalog, Table]:
    catalog = open_catalog(CATALOG_NAME, f"sqlite:///{root / 'catalog.db'}", (root / "warehouse").as_uri())
    table, _ = ensure_table(catalog, PLAYS)
    if properties:
        with table.transaction() as txn:
            txn.set_properties(properties)
    return catalog, catalog.load_table(PLAYS.identifier)


def merge_variant(
    root: Path, label: str, properties: dict[str, str], days: int, events: int, append: bool
) -> MergeVariant:
    """``days`` daily commits on a fresh table: ``ingest_day`` (an overwrite), or ``table.append`` (``append``)."""
    catalog, table = fresh_plays(root, properties)
    schema = table.schema().as_arrow()
    seconds = []
    for day in bench_days(days):
        if append:
            rows = synthetic_batch(day, events).cast(schema)
            seconds.append(timed(lambda rows=rows: table.append(rows))[0])
        else:
            seconds.append(timed(lambda day=day: ingest_day(catalog, day, synthetic_events(day, events)))[0])
    table = catalog.load_table(PLAYS.identifier)
    state = table_state(table, days)
    return MergeVariant(label, state.manifests, state.manifest_list_bytes, seconds)


def compare_manifest_merge(root: Path, days: int, events: int) -> list[MergeVariant]:
    variants = (
        ("ingest_day, manifest-merge off (default)", {}, False),
        ("ingest_day, manifest-merge on", MERGE_ON, False),
        ("table.append, manifest-merge on (reference)", MERGE_ON, True),
    )
    measured = []
    for number, (label, properties, append) in enumerate(variants):
        folder = root / f"merge-{number}"
        measured.append(merge_variant(folder, label, properties, days, events, append))
        shutil.rmtree(folder, ignore_errors=True)
    return measured


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def ratio(value: float, baseline: float) -> float:
    return value / baseline if baseline > 0 else float("inf")


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.1f} ms" if values else "    n/a"


def windows(values: list[float]) -> tuple[list[float], list[float]]:
    """The first and last ``WINDOW`` values (overlapping when there are fewer than 2 x WINDOW)."""
    return values[:WINDOW], values[-WINDOW:]


def print_history(args: argparse.Namespace, history: History) -> None:
    days, old, young = bench_days(args.days), history.old, history.young
    print(
        f"sonik_pipeline history benchmark: {args.days:,} days {days[0]}..{days[-1]} x {args.events:,} events, "
        f"one ingest_day commit a day, maintenance every {args.maintain_every} night(s)"
    )
    print(
        f"  build                 {history.seconds:7.1f} s   rows in music.plays {history.rows:,} "
        f"(expected {args.days * args.events:,}); load average {history.load_before:.1f} -> {history.load_after:.1f} "
        f"on {os.cpu_count()} CPUs"
    )
    print(
        f"  nightly maintenance   rewrite_manifests, then expire_snapshots(retention=0, retain_last=the snapshots of "
        f"the last {RETENTION_DAYS} days, >= {DEFAULT_RETAIN_LAST}): the 30-day retention on a daily clock"
    )
    young_days, last = young.ingest_seconds, old.ingest_seconds[-WINDOW:]
    early = old.ingest_seconds[:WINDOW]
    ingest_ratio = ratio(statistics.median(last), statistics.median(young_days))
    print(
        f"  ingest per day        old table, last {len(last)} days: {median_ms(last)}   young table, days 1-"
        f"{len(young_days)} (ingested alongside): {median_ms(young_days)}"
    )
    print(
        f"  ingest ratio          {ingest_ratio:7.2f} x    old last {len(last)} / young first {len(young_days)}, "
        f"target <= {INGEST_RATIO_TARGET}x   {verdict(ingest_ratio <= INGEST_RATIO_TARGET)}"
    )
    print(
        f"                        (against the old table's own days 1-{len(early)}, at the start of the build: "
        f"{median_ms(early).strip()}, {ratio(statistics.median(last), statistics.median(early)):.2f}x)"
    )
    nights = [old.nights[age] for age in sorted(old.nights)]
    first_nights, last_nights = windows(nights)
    first_s, last_s = [n.seconds for n in first_nights], [n.seconds for n in last_nights]
    print(
        f"  maintenance a night   first {len(first_s)} nights: {median_ms(first_s)}   last {len(last_s)}: "
        f"{median_ms(last_s)}   ({ratio(statistics.median(last_s), statistics.median(first_s)):.2f}x)"
    )
    for label, window in ((f"first {len(first_s)}", first_nights), (f"last {len(last_s)}", last_nights)):
        print(
            f"                        {label}: rewrite_manifests "
            f"{median_ms([n.rewrite_seconds for n in window]).strip()}, expire_snapshots "
            f"{median_ms([n.expiry_seconds for n in window]).strip()}"
        )
    final = nights[-1]
    print(
        f"  last night's rewrite  manifests {final.manifests_before} -> {final.manifests_after}; "
        f"expiry kept {final.retain_last} snapshots, expired {final.snapshots_expired}"
    )
    print(
        "  old table by age, after the night's maintenance (ingest, maintenance and its two steps: medians of "
        "the 30 days to it):"
    )
    print(
        f"    {'day':>6} {'metadata.json':>14} {'manifest list':>14} {'manifests':>10} {'manifest B':>11} "
        f"{'snapshots':>10} {'data files':>11} {'ingest':>10} {'maintenance':>12} {'rewrite':>10} {'expiry':>10}"
    )
    for age in sorted(old.states):
        state = old.states[age]
        ingest = old.ingest_seconds[max(0, age - WINDOW) : age]
        nights_to_age = nights_before(old, age)
        print(
            f"    {age:>6} {state.metadata_json_bytes:>14,} {state.manifest_list_bytes:>14,} {state.manifests:>10} "
            f"{state.manifest_bytes:>11,} {state.snapshots:>10} {state.data_files:>11,} {median_ms(ingest):>10} "
            f"{median_ms([n.seconds for n in nights_to_age]):>12} "
            f"{median_ms([n.rewrite_seconds for n in nights_to_age]):>10} "
            f"{median_ms([n.expiry_seconds for n in nights_to_age]):>10}"
        )
    print_expiry_ratio(history)
    young_age = min(QUERY_AGE, len(young_days))
    query_ratio = ratio(history.old_query.median, history.young_query.median)
    print(
        f"  one-day query         old table at {args.days:,} days: {median_ms(history.old_query.seconds)}   young "
        f"table at {young_age} days: {median_ms(history.young_query.seconds)}   (count, distinct users, top 10 "
        f"artists of the newest day; median of {args.repeat})"
    )
    print(
        f"  query ratio           {query_ratio:7.2f} x    old / young, target <= {QUERY_RATIO_TARGET}x   "
        f"{verdict(query_ratio <= QUERY_RATIO_TARGET)}"
    )
    print(
        f"                        (against the old table at {young_age} days, at the start of the build: "
        f"{median_ms(history.early_query.seconds).strip()}, "
        f"{ratio(history.old_query.median, history.early_query.median):.2f}x)"
    )
    planned_ratio = ratio(history.old_planned.median, history.young_planned.median)
    print(
        f"  planned one-day read  old table at {args.days:,} days: {median_ms(history.old_planned.seconds)}   young "
        f"table at {young_age} days: {median_ms(history.young_planned.seconds)}   (the same queries over "
        f"PlaysSnapshot.days_sql: table load, PyIceberg's plan, {PLANNED_READER} of the day's files)"
    )
    print(
        f"  planned read ratio    {planned_ratio:7.2f} x    old / young, target <= {QUERY_RATIO_TARGET}x   "
        f"{verdict(planned_ratio <= QUERY_RATIO_TARGET)}"
    )
    print(
        f"                        (against the old table at {young_age} days, at the start of the build: "
        f"{median_ms(history.early_planned.seconds).strip()}, "
        f"{ratio(history.old_planned.median, history.early_planned.median):.2f}x)"
    )


def nights_before(daily: DailyTable, age: int) -> list[Night]:
    """The maintenance nights of the ``WINDOW`` days up to ``age``."""
    return [n for a, n in daily.nights.items() if age - WINDOW < a <= age]


def print_expiry_ratio(history: History) -> None:
    """Expiry's nightly cost at the end against a year-old table's, operated alongside (and the build's own year 1)."""
    old, year_one = history.old, history.year_one
    if year_one is None:
        print(f"  expiry ratio          n/a (needs at least {YEAR + WINDOW} days to compare with year 1)")
        return
    last, baseline, early = nights_before(old, old.age), nights_before(year_one, YEAR), nights_before(old, YEAR)

    def median_of(nights: list[Night], cpu: bool = False) -> float:
        return statistics.median(n.expiry_cpu_seconds if cpu else n.expiry_seconds for n in nights)

    expiry_ratio = ratio(median_of(last), median_of(baseline))
    cpu_ratio = ratio(median_of(last, cpu=True), median_of(baseline, cpu=True))
    print(
        f"  expiry a night        old table, last {len(last)} nights: {median_of(last) * 1000:7.1f} ms (CPU "
        f"{median_of(last, cpu=True) * 1000:.1f} ms)   year-old table, nights {YEAR - WINDOW + 1}-{YEAR} (operated "
        f"alongside): {median_of(baseline) * 1000:.1f} ms (CPU {median_of(baseline, cpu=True) * 1000:.1f} ms)"
    )
    print(
        f"  expiry ratio          {expiry_ratio:7.2f} x    old / year-old, target <= {EXPIRY_RATIO_TARGET}x   "
        f"{verdict(expiry_ratio <= EXPIRY_RATIO_TARGET)}   (CPU time: {cpu_ratio:.2f}x)"
    )
    print(
        f"                        (against the old table's own nights {YEAR - WINDOW + 1}-{YEAR}, during the build: "
        f"{median_of(early) * 1000:.1f} ms, {ratio(median_of(last), median_of(early)):.2f}x)"
    )


def print_dagster(days: int, events: int, checks: StepTimes, marts: StepTimes) -> None:
    checks_s = checks.steps.get(PLAYS_CHECKS_STEP)
    marts_s = marts.steps.get(DAILY_MARTS_STEP)
    scale = f"{days} days" + ("" if events == DEFAULT_EVENTS else f" at {events:,} events/day")
    print(f"  through Dagster, one run each over the newest {days} days (in process):")
    if checks_s is None:
        print(f"    plays checks         FAILED (steps that succeeded: {checks.steps})")
    else:
        ok = checks_s <= CHECKS_TARGET_SECONDS
        print(
            f"    plays checks        {checks_s:7.1f} s   ({PLAYS_CHECKS_STEP} step, run {checks.seconds:.1f} s) "
            f"target <= {CHECKS_TARGET_SECONDS:.0f} s for 365 days ({scale})   {verdict(ok)}"
        )
    if marts_s is None:
        print(f"    daily marts          FAILED (steps that succeeded: {marts.steps})")
    else:
        ok = marts_s <= MARTS_TARGET_SECONDS
        others = "".join(f"; {k} {v:.1f} s" for k, v in marts.steps.items() if k != DAILY_MARTS_STEP)
        print(
            f"    daily marts         {marts_s:7.1f} s   ({DAILY_MARTS_STEP} step, run {marts.seconds:.1f} s{others}) "
            f"target <= {MARTS_TARGET_SECONDS:.0f} s for 365 days at 10,000 events/day ({scale})   {verdict(ok)}"
        )


def print_backfill(backfill: Backfill) -> None:
    first, last = windows(backfill.day_seconds)
    growth = ratio(statistics.median(last), statistics.median(first)) if first else float("nan")
    print(
        f"  single-run backfill   {len(backfill.day_seconds)} days of plays re-ingested in one run: "
        f"{backfill.run.seconds:.1f} s; per day first {len(first)}: {median_ms(first).strip()}, "
        f"last {len(last)}: {median_ms(last).strip()} ({growth:.2f}x); {backfill.manifests_after} manifests after "
        f"(no maintenance within a run); rows {backfill.rows:,}"
    )


def print_merge(days: int, variants: list[MergeVariant]) -> None:
    print(f"  manifest merge on commit, {days} daily commits on a fresh table (median time per commit):")
    for v in variants:
        first, last = windows(v.commit_seconds)
        print(
            f"    {v.label:<44} {v.manifests:>4} manifests, list {v.manifest_list_bytes:>7,} B; "
            f"commit {median_ms(v.commit_seconds).strip()} (first {len(first)} {median_ms(first).strip()}, "
            f"last {len(last)} {median_ms(last).strip()})"
        )


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"days of history (default {DEFAULT_DAYS:,})")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events a day (default 10,000)")
    parser.add_argument("--maintain-every", type=int, default=1, help="nightly maintenance every K nights (default 1)")
    parser.add_argument(
        "--backfill-days",
        type=int,
        default=DEFAULT_BACKFILL_DAYS,
        help="newest days re-ingested in one Dagster run at the end (default 365; 0: skip)",
    )
    parser.add_argument(
        "--merge-days", type=int, default=DEFAULT_MERGE_DAYS, help="commits per manifest-merge variant (0: skip)"
    )
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="one-day query runs; the median is reported")
    parser.add_argument("--keep", action="store_true", help="keep the lakehouse folder for inspection")
    args = parser.parse_args(argv)
    if min(args.days, args.events, args.maintain_every, args.repeat) < 1:
        parser.error("--days, --events, --maintain-every and --repeat must be at least 1")
    if args.backfill_days < 0 or args.merge_days < 0:
        parser.error("--backfill-days and --merge-days must be 0 or more")
    return args


def isolate(root: Path) -> Path:
    """Only this run's lakehouse and Dagster instance: no SONIK_*/PYICEBERG_* from the shell."""
    for name in [n for n in os.environ if n.startswith(("SONIK_", "PYICEBERG_"))]:
        del os.environ[name]
    dagster_home = root / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return root / "lakehouse"


def row_errors(history: History, backfill: Backfill | None, args: argparse.Namespace) -> list[str]:
    expected = args.days * args.events
    errors = []
    if history.rows != expected:
        errors.append(f"music.plays holds {history.rows:,} rows after the build, expected {expected:,}")
    if history.year_one is not None and history.year_one_rows != YEAR * args.events:
        errors.append(f"the year-old table holds {history.year_one_rows:,} rows, expected {YEAR * args.events:,}")
    young_rows = history.young_rows
    if young_rows != len(history.young.ingest_seconds) * args.events:
        errors.append(
            f"the young table holds {young_rows:,} rows, expected {len(history.young.ingest_seconds) * args.events:,}"
        )
    queries = (
        ("old table at 7 days", "query", history.early_query),
        ("young", "query", history.young_query),
        ("old", "query", history.old_query),
        ("old table at 7 days", "planned read", history.early_planned),
        ("young", "planned read", history.young_planned),
        ("old", "planned read", history.old_planned),
    )
    for when, what, query in queries:
        if query.plays != args.events:
            errors.append(
                f"the one-day {what} on the {when} table counted {query.plays:,} plays, expected {args.events:,}"
            )
        if what == "planned read" and query.reader != PLANNED_READER:
            errors.append(f"the one-day planned read on the {when} table fell back to {query.reader}")
    if backfill is not None:
        if not backfill.run.success:
            errors.append("the single-run backfill of plays failed")
        if backfill.rows != expected:
            errors.append(f"music.plays holds {backfill.rows:,} rows after the backfill, expected {expected:,}")
    return errors


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # the report and the progress lines on stderr stay in order
    for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):  # Dagster's API notices
        warnings.filterwarnings("ignore", category=category)
    catalogue()  # cached one-time build, kept out of every timing
    root = Path(tempfile.mkdtemp(prefix="sonik-bench-history-"))
    try:
        home = isolate(root)
        settings = lakehouse_settings(home, args)
        catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
        young = root / "young"
        young_catalog = open_catalog(CATALOG_NAME, f"sqlite:///{young / 'catalog.db'}", (young / "warehouse").as_uri())
        year_one = root / "year-one"
        year_one_catalog = open_catalog(
            CATALOG_NAME, f"sqlite:///{year_one / 'catalog.db'}", (year_one / "warehouse").as_uri()
        )
        history = build_history(catalog, young_catalog, year_one_catalog, args)
        print_history(args, history)

        defs = build_definitions(settings)
        year = bench_days(args.days)[-YEAR:]
        checks, marts = time_checks_and_marts(defs, year)
        print_dagster(len(year), args.events, checks, marts)

        backfill = None
        if args.backfill_days:
            backfill = run_backfill(defs, catalog, bench_days(args.days)[-args.backfill_days :])
            print_backfill(backfill)
        if args.merge_days:
            print_merge(args.merge_days, compare_manifest_merge(root, args.merge_days, args.events))
    finally:
        if args.keep:
            print(f"  lakehouse kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    errors = row_errors(history, backfill, args)
    errors += [
        f"the {what} run failed" for what, run in (("plays checks", checks), ("daily marts", marts)) if not run.success
    ]
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
