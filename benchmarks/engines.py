"""Benchmark: a day compacted (or with --landing, ingested) by the local engine, by Spark local[1] and local[2].

Without ``--landing``: one day landed as 200 small files, compacted by each engine.

Setup, for each engine on a fresh lakehouse built in place (a SQLite catalog and a ``file://`` warehouse
under its own folder in one temporary work folder; never copied, as Iceberg metadata holds absolute
paths): ``music.plays`` by ``ensure_table``, then ``--events`` synthetic events of ``DAY`` (default
10,000,000; ``--quick``: 1,000,000) appended as ``--files`` appends (default 200) of ``synthetic_batch``
cast to the table's schema: 200 commits, 200 small files, as a micro-batch writer leaves a day. The
seeds are fixed, so every engine gets the same rows.

What it measures, each engine in a child process (this script re-invoked with a hidden flag) built as
the project builds it, ``LakehouseEngine(kind=..., spark_master=...).engine()``, then
``engine.compact(table, CompactionOptions(sort_by=("artist", "track_id"), min_input_files=2))``, the
compaction_job's policy with no day skipped:

* **Wall time** of the child from launch to exit, split into: interpreter start and imports; the Spark
  session's start (dagster-pyspark's lazy session with ``session_conf``, started before the compaction so
  it is timed apart; the engine would start it on its first ``CALL``); the compaction (``engine.compact``);
  and stopping the session (the JVM reaped, so its usage is the child's). Within a Spark compaction,
  Iceberg's rewrite (its Spark action, what ``rewrite_data_files`` runs) is timed apart from the engine's
  report (PyIceberg reading the manifests the rewrite wrote), and the rewrite is split by Spark's own
  job times (its status store):
  before the first job (parsing, opening the JDBC catalog, loading the table, planning file groups, and
  the JVM's first use of Iceberg's classes), the jobs (read, sort, write), and after the last (the commit);
  Iceberg's own scan-planning and commit durations (its LoggingMetricsReporter, whose loggers the child
  sets to INFO) are shown within them.
  For the local engine, the rewrite (plan, read, sort, write, read-back verification) and the commit,
  from the engine's progress messages.
* **Peak RSS of the process tree**: this script samples ``/proc`` every 0.2 s and sums the resident
  memory of the child and all its descendants (the JVM is the Python child's child), leaving out a fork
  not yet exec'd, which shares its parent's memory (the JVM forks for shell commands); the JVM's share is
  shown. ``wait4``'s ``ru_maxrss`` is printed beside it as a cross-check: exact, but the peak of the single
  largest process, not a sum (Linux takes the maximum over a tree, never the total).
* **CPU**: the child's user + system seconds (the JVM's included, as it is reaped), and the cores other
  processes on the machine kept busy meanwhile, from ``/proc/stat``: a busy machine slows every figure.
* **Data**: data files before and after (PyIceberg's plan of the current snapshot), and per day the rows
  and two order-independent digests, DuckDB's 64-bit ``hash`` of ``play_id`` summed, and of every column
  of a row summed: of the generated input, of the landed table and of the compacted table (DuckDB
  ``read_parquet`` over the files PyIceberg plans). Each must equal the input.

Target (from the issue): Spark local[2] compacts at least 1.6x faster than Spark local[1], compared on
``engine.compact`` (session start excluded; it is shown apart). Spark against the local engine is
reported as measured, with no target.

``--marts`` then builds the day's daily marts (the six of ``daily_marts`` and ``user_track_days``, one
step) on the compacted table as a user would, ``dagster asset materialize -m sonik_pipeline.definitions
--select <the daily marts> --partition DAY`` with ``SONIK_HOME`` on the engine's lakehouse and
``SONIK_ENGINE`` (Spark: ``SONIK_SPARK_MASTER`` local[1] or local[2]), measured as above (wall time of the
command, events/s of the day, CPU, peak RSS of its process tree and the JVM's share), with the step's own
time as Dagster logs it. Every mart's rows and an order-independent digest of them (DuckDB's ``hash`` of
each row, summed) must be the same on every engine. Target: Spark local[2] at least 1.6x faster than
local[1] on the step.

Spark runs with the project's configuration (``session_conf`` via ``LakehouseEngine``) plus, as
``SONIK_SPARK_CONF`` would add them, ``spark.local.dir`` in the work folder (Spark's spill stays there) and
``spark.driver.memory`` when ``--spark-driver-memory`` is given (default: the project's, 2 GiB a task slot;
before 2026-12-07 night, Spark's own 1 GiB).

``--landing`` (instead of the compaction): the landing zone's ingest as a user runs it. The day's
``--events`` events (``synthetic_batch``, the same fixed seed; all valid) are written once as JSON Lines
in ``--files`` files (default 40) by the app's ``write_landing_day``, two million events at a time (not
timed). Then for each engine, on a fresh ``SONIK_HOME``, ``dagster asset materialize -m
sonik_pipeline.definitions --select plays --partition DAY`` with ``SONIK_SOURCE=landing`` and the engine's
settings as above (the Spark engine judges each file with the project's validator in Spark's Python
workers, ``mapInArrow``), measured as the marts are: the ``plays`` step's own seconds (Dagster's log) and
events/s on it, the command's wall time, the CPU of every process of its tree (sampled: ``wait4`` misses a
JVM the command does not wait for), the peak RSS of the tree, the JVM's share and Spark's Python workers',
and the peak RSS of the Dagster process alone (the command's own process: it runs the steps in process),
while the plays step ran (Dagster's log times it to the second) and over the whole command (the checks'
steps after it read the day with DuckDB in that same process).
``music.plays`` must then hold exactly the events written: the same rows and digests as the written events
typed as the table, the same on every engine. With ``--marts``, the daily marts are then built on that
lakehouse and compared as above. ``--spark-event-log`` has Spark write its event log during the plays step
(and the marts') and the report shows its SQL executions (wall time, tasks, summed task time) beside the
step's messages.

Targets of ``--landing`` (from the issue): Spark local[2] at least 1.6x faster than local[1] on the plays
step (and, with ``--marts``, on the daily_marts step); the Dagster process's memory with Spark does not grow
with the day (only counts and a preview come back to it: compare its peak at two sizes). Spark against the
local engine is reported as measured.

``--cores-as-slots`` runs each Spark command (its whole process tree: Dagster's process, the JVM, Spark's
Python workers) on as many CPUs as its master has task slots, ``local[1]`` on one and ``local[2]`` on two
(``sched_setaffinity``, inherited by every child), as an executor of that many cores runs on a cluster.
Without it, ``local[1]`` runs one task at a time but its process tree uses the machine's other cores too:
the JVM feeds Spark's Python worker from a thread of its own while the task thread reads the worker's
results, and its collector and compiler run beside them (on 2 cores, ``local[1]``'s plays step kept 1.4
cores busy), so on a 2-core machine ``local[2]`` can gain at most 2/1.4 over it, whatever the code. The
local engine always runs on every CPU.

The exit code is 0 whether or not a target is met (this is a report); it is non-zero if a child or a
Dagster command fails, if an engine's compaction leaves a day with other rows or digests than the input,
or if it leaves as many files as it found; with ``--landing``, if ``music.plays`` does not hold exactly the
events written on every engine, or the marts differ.

Usage: ``.venv/bin/python benchmarks/engines.py [--quick | --events N] [--files 200] [--engines local,spark1,spark2]
[--marts] [--landing [--spark-event-log]] [--cores-as-slots] [--spark-driver-memory 2g] [--keep] [--work-dir D]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import duckdb

from sonik_pipeline.engines.spark_session import local_task_slots
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_identifier, sql_string
from sonik_pipeline.lakehouse.marts.queries import DAILY_MARTS
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import catalogue, synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.maintenance.compaction import CompactionOptions
from sonik_pipeline.settings import CATALOG_NAME

DAY = dt.date(2024, 5, 1)
DEFAULT_EVENTS = 10_000_000
QUICK_EVENTS = 1_000_000
DEFAULT_FILES = 200
LANDING_FILES = 40  # --landing: the day's JSON Lines files
WRITE_BATCH = 2_000_000  # --landing: events generated at a time, so a big day never sits in memory
SEED = 3
SORT_BY = ("artist", "track_id")  # compaction_job's default sort
SPARK_SCALING_TARGET = 1.6  # Spark local[2] against local[1], compaction time
SAMPLE_SECONDS = 0.2
MIN_AVAILABLE_MIB = 4096  # below this, the figures would measure swapping or the OOM killer
MiB = 2**20
CHILD_FLAG = "--_child"
RESULT_PREFIX = "ENGINES-RESULT "
# Iceberg's LoggingMetricsReporter lines in a Spark child's log: scan planning and commit durations (ISO 8601).
SCAN_REPORT_RE = re.compile(
    r"ScanReport\{.*?totalPlanningDuration=TimerResult\{[^}]*totalDuration=(PT[^,]+),.*?"
    r"scannedDataManifests=CounterResult\{unit=COUNT, value=(\d+)\}"
)
COMMIT_REPORT_RE = re.compile(
    r"CommitReport\{.*?totalDuration=TimerResult\{[^}]*totalDuration=(PT[^,]+),.*?"
    r"attempts=CounterResult\{unit=COUNT, value=(\d+)\}"
)
DURATION_RE = re.compile(r"PT(?:([\d.]+)H)?(?:([\d.]+)M)?(?:([\d.]+)S)?")
# Dagster's own line for a finished step (daily_marts, plays, a check's step), its duration as format_duration
# writes it (533ms, 5.6s, 4m52s, 1h4m).
STEP_RE = re.compile(r'Finished execution of step "([\w.\[\]-]+)" in ([\dhms.]+)\.')
DAGSTER_DURATION_RE = re.compile(r"([\d.]+)(ms|h|m|s)")
# A line of Dagster's log: its time (to the second), level, step and message.
DAGSTER_LINE_RE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4}) - dagster - (\w+) - \S+ - [0-9a-f-]{36} - (?:\d+ - )?(\S+) - (.*)$"
)
START_DATE = "2024-04-01"  # SONIK_START_DATE: the partitions' first day, before DAY
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class EngineRun:
    key: str
    label: str
    master: str | None  # None: the local engine


ENGINES = {
    run.key: run
    for run in (
        EngineRun("local", "local engine", None),
        EngineRun("spark1", "Spark local[1]", "local[1]"),
        EngineRun("spark2", "Spark local[2]", "local[2]"),
    )
}


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def catalog_uri(home: Path) -> str:
    return f"sqlite:///{home / 'catalog.db'}"


def warehouse(home: Path) -> str:
    return (home / "warehouse").as_uri()


def split_evenly(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


Digest = dict[str, list[int]]  # day -> [rows, sum of hash(play_id), sum of hash(row)]


def digest_sql(source: str, columns: list[str]) -> str:
    """Per day: rows and two order-independent digests (sums of 64-bit hashes, exact as HUGEINT)."""
    row = ", ".join(sql_identifier(c) for c in columns)
    return (
        f"SELECT CAST(played_at AS DATE)::VARCHAR AS day, count(*), sum(hash(play_id)), sum(hash({row})) "
        f"FROM {source} GROUP BY ALL"
    )


def add_digest(total: Digest, rows: list[tuple[Any, ...]]) -> None:
    for day, count, ids, whole in rows:
        current = total.setdefault(day, [0, 0, 0])
        for i, value in enumerate((count, ids, whole)):
            current[i] += int(value)


def table_digest_and_shape(home: Path) -> tuple[Digest, dict[str, int]]:
    """The digest of ``music.plays`` as PyIceberg plans it now, and its data files, bytes and snapshots."""
    table = open_catalog(CATALOG_NAME, catalog_uri(home), warehouse(home)).load_table(PLAYS.identifier)
    files = [task.file for task in table.scan().plan_files()]
    shape = {
        "files": len(files),
        "bytes": sum(f.file_size_in_bytes for f in files),
        "rows": sum(f.record_count for f in files),
        "snapshots": len(table.snapshots()),
    }
    listing = ", ".join(sql_string(f.file_path.removeprefix("file://")) for f in files)
    con = duckdb.connect()
    try:
        con.execute("SET memory_limit = '1GB'")
        digest: Digest = {}
        add_digest(digest, con.execute(digest_sql(f"read_parquet([{listing}])", columns(table))).fetchall())
    finally:
        con.close()
    return digest, shape


def columns(table: Any) -> list[str]:
    return [f.name for f in table.schema().fields]


# ---------------------------------------------------------------------------------------------
# Children: one step each, in a fresh interpreter; each returns a JSON-able dict
# ---------------------------------------------------------------------------------------------


def child_land(home: Path, n_events: int, n_files: int) -> dict[str, Any]:
    """``music.plays`` with the day appended as ``n_files`` commits; the input's digest as generated."""
    catalogue()  # cached one-time build, kept out of the timing
    catalog = open_catalog(CATALOG_NAME, catalog_uri(home), warehouse(home))
    table, _ = ensure_table(catalog, PLAYS)
    schema = table.schema().as_arrow()
    con = duckdb.connect()
    digest: Digest = {}
    started = time.perf_counter()
    for batch, n in enumerate(split_evenly(n_events, n_files)):
        rows = synthetic_batch(DAY, n, seed=SEED, batch=batch).cast(schema)
        con.register("input_batch", rows)
        add_digest(digest, con.execute(digest_sql("input_batch", schema.names)).fetchall())
        con.unregister("input_batch")
        table.append(rows)
    seconds = time.perf_counter() - started
    landed, shape = table_digest_and_shape(home)
    return {"seconds": seconds, "input": digest, "landed": landed, "shape": shape}


def child_write_landing(landing: Path, n_events: int, n_files: int) -> dict[str, Any]:
    """The day as ``n_files`` JSON Lines files, written a slice at a time; its digest typed as ``music.plays``."""
    catalogue()
    schema = PLAYS.schema.as_arrow()
    parts = max(1, min(n_files, math.ceil(n_events / WRITE_BATCH)))
    day_dir = landing / "plays" / DAY.isoformat()
    day_dir.mkdir(parents=True)
    con = duckdb.connect()
    digest: Digest = {}
    started = time.perf_counter()
    for part, (n, files) in enumerate(zip(split_evenly(n_events, parts), split_evenly(n_files, parts), strict=True)):
        rows = synthetic_batch(DAY, n, seed=SEED, batch=part)
        con.register("input_batch", rows.cast(schema))
        add_digest(digest, con.execute(digest_sql("input_batch", schema.names)).fetchall())
        con.unregister("input_batch")
        # write_landing_day names its files part-000...; each slice is staged apart, then moved in with a prefix.
        staging = landing.parent / f"{landing.name}-part{part}"
        write_landing_day(staging, DAY, rows, files=files, fmt="jsonl")
        for f in sorted((staging / "plays" / DAY.isoformat()).iterdir()):
            f.rename(day_dir / f"b{part:03d}-{f.name}")
        shutil.rmtree(staging)
    written = sorted(day_dir.iterdir())
    return {
        "seconds": time.perf_counter() - started,
        "files": len(written),
        "bytes": sum(f.stat().st_size for f in written),
        "input": digest,
    }


def child_verify(home: Path) -> dict[str, Any]:
    digest, shape = table_digest_and_shape(home)
    return {"digest": digest, "shape": shape}


def child_marts_digest(home: Path) -> dict[str, Any]:
    """Per daily mart: its rows, an order-independent digest of them, and its snapshots (each engine's must match)."""
    catalog = open_catalog(CATALOG_NAME, catalog_uri(home), warehouse(home))
    con = duckdb.connect()
    found = {}
    try:
        for mart in DAILY_MARTS:
            table = catalog.load_table(mart.table.identifier)
            files = [task.file.file_path.removeprefix("file://") for task in table.scan().plan_files()]
            if not files:
                found[mart.name] = {"rows": 0, "digest": "0", "snapshots": len(table.snapshots())}
                continue
            listing = ", ".join(sql_string(f) for f in files)
            row = ", ".join(sql_identifier(c) for c in columns(table))
            rows, digest = con.execute(f"SELECT count(*), sum(hash({row})) FROM read_parquet([{listing}])").fetchone()
            found[mart.name] = {"rows": rows, "digest": str(digest), "snapshots": len(table.snapshots())}
    finally:
        con.close()
    return {"marts": found}


def spark_jobs(session: Any) -> list[dict[str, Any]]:
    """Every job of the session's Spark context with its start and end (epoch seconds) and its stages."""
    store = session.sparkContext._jsc.sc().statusStore()

    def stage(stage_id: int) -> dict[str, Any] | None:
        try:
            data = store.lastStageAttempt(stage_id)
        except Exception:  # a stage the job skipped (its output was reused) may have no attempt
            return None
        return {
            "name": data.name(),
            "tasks": data.numTasks(),
            "run_seconds": data.executorRunTime() / 1000,
            "status": str(data.status()),
        }

    jobs = store.jobsList(None)
    found = []
    for i in range(jobs.size()):
        job = jobs.apply(i)
        submitted, completed = job.submissionTime(), job.completionTime()
        stage_ids = sorted(job.stageIds().apply(j) for j in range(job.stageIds().size()))
        found.append(
            {
                "id": job.jobId(),
                "name": job.name(),
                "start": submitted.get().getTime() / 1000 if submitted.isDefined() else None,
                "end": completed.get().getTime() / 1000 if completed.isDefined() else None,
                "stages": [s for s in map(stage, stage_ids) if s is not None],
            }
        )
    return sorted(found, key=lambda j: j["id"])


def child_compact(home: Path, key: str, spill: Path, driver_memory: str) -> dict[str, Any]:
    """``key``'s engine compacts ``music.plays``, built as the project builds it; the Spark session timed apart."""
    import dagster as dg

    from sonik_pipeline.engines.spark import SparkEngine
    from sonik_pipeline.resources import LakehouseCatalog, LakehouseEngine

    run = ENGINES[key]
    lakehouse = LakehouseCatalog(catalog_name=CATALOG_NAME, catalog_uri=catalog_uri(home), warehouse=warehouse(home))
    spark_conf = {"spark.local.dir": str(spill)}
    if driver_memory:
        spark_conf["spark.driver.memory"] = driver_memory
    resource = LakehouseEngine(
        kind="spark" if run.master else "local",
        lakehouse=lakehouse,
        spark_master=run.master or "local[*]",
        spark_conf=spark_conf,
    )
    engine = resource.engine()
    calls: list[dict[str, Any]] = []
    session = None
    marks = {"imported": time.time()}
    if isinstance(engine, SparkEngine):
        # The engine starts the session on its first CALL; started here first, so its cost is shown apart.
        session = resource._spark_resource().spark_session
        marks["session"] = time.time()
        jvm = session.sparkContext._jvm  # Iceberg's own reports (scan planning, commits) into the child's log
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
            "org.apache.iceberg", jvm.org.apache.logging.log4j.Level.INFO
        )
        rewrite = engine._rewrite_data_files

        def timed_rewrite(*args: Any, **kwargs: Any) -> dict[str, Any]:
            started = time.time()
            row = rewrite(*args, **kwargs)
            calls.append({"procedure": "rewrite_data_files", "start": started, "end": time.time(), "rows": [row]})
            return row

        engine._rewrite_data_files = timed_rewrite  # the rewrite timed apart from the engine's report
    table = lakehouse.load().load_table(PLAYS.identifier)
    messages: list[tuple[float, str]] = []

    def progress(message: str) -> None:
        messages.append((time.time(), message))
        print(message, flush=True)

    options = CompactionOptions(sort_by=SORT_BY, min_input_files=2, work_dir=str(spill))
    marks["compact"] = time.time()
    report = engine.compact(table, options, {"sonik.benchmark": "engines"}, progress)
    marks["compacted"] = time.time()
    jobs = spark_jobs(session) if session is not None else []
    if session is not None:
        from pyspark import SparkContext

        resource.teardown_after_execution(dg.build_init_resource_context())
        gateway = SparkContext._gateway
        if gateway is not None and getattr(gateway, "proc", None) is not None:
            # The JVM exits when its stdin closes; waiting for it makes its usage this process's own.
            gateway.shutdown()
            gateway.proc.stdin.close()
            gateway.proc.wait(timeout=120)
        marks["stopped"] = time.time()
    return {
        "marks": marks,
        "calls": calls,
        "jobs": jobs,
        "messages": messages,
        "seconds": report.seconds,
        "files_before": report.files_before,
        "files_after": report.files_after,
        "bytes_before": report.bytes_before,
        "bytes_after": report.bytes_after,
        "rows_verified": report.rows_verified,
        "commits": len(report.snapshot_ids),
    }


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(args.path)
    if args.child == "land":
        return child_land(home, args.events, args.files)
    if args.child == "verify":
        return child_verify(home)
    if args.child == "write-landing":
        return child_write_landing(home, args.events, args.files)
    if args.child == "marts-digest":
        return child_marts_digest(home)
    return child_compact(home, args.engine, Path(args.spill), args.spark_driver_memory)


# ---------------------------------------------------------------------------------------------
# Parent: children measured as a process tree
# ---------------------------------------------------------------------------------------------


class Proc(NamedTuple):
    ppid: int
    name: str  # the command name, or for a process forked by a JVM thread, that thread's name
    vsize: int
    rss: int
    ticks: int  # user + system CPU so far, its own (not its reaped children's)
    started: int  # clock ticks after boot: with the pid, a process's identity (pids are reused)


def processes() -> dict[int, Proc]:
    """Every process now, from ``/proc/<pid>/stat``."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on
        found[int(entry.name)] = Proc(
            int(fields[1]),
            name,
            int(fields[20]),
            int(fields[21]) * PAGE,
            int(fields[11]) + int(fields[12]),
            int(fields[19]),
        )
    return found


class Member(NamedTuple):
    pid: int
    proc: Proc
    beneath_jvm: bool  # a descendant of a JVM: Spark's Python workers (its daemon and the workers it forks)


def tree(root: int, table: dict[int, Proc]) -> tuple[list[Member], int]:
    """The processes of ``root``'s tree, and how many were left out as forks not yet exec'd.

    A process forked (or vforked) and not yet exec'd shares its parent's memory and reports it all as its
    own RSS: the JVM runs shell commands so (Hadoop's local file system), and counting such a child would
    add the JVM's whole heap a second time. It is known by its parent's exact virtual size. (PySpark's
    daemon forks its workers without exec: a worker counts once it has allocated memory of its own, and
    then with the pages it still shares with the daemon.)
    """
    children: dict[int, list[int]] = {}
    for pid, proc in table.items():
        children.setdefault(proc.ppid, []).append(pid)
    members, forks, todo = [], 0, [(root, False)]
    while todo:
        pid, beneath_jvm = todo.pop()
        if pid not in table:
            continue
        proc = table[pid]
        parent = table.get(proc.ppid)
        if pid != root and parent is not None and parent.vsize == proc.vsize:
            forks += 1
        else:
            members.append(Member(pid, proc, beneath_jvm))
        below = beneath_jvm or proc.name == "java"
        todo += [(child, below) for child in children.get(pid, [])]
    return members, forks


def busy_ticks() -> int:
    """Jiffies all CPUs spent busy since boot (everything but idle and iowait)."""
    cpu = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in cpu[:8]]
    return sum(values) - values[3] - values[4]


@dataclass
class TreeSampler:
    """Samples the summed RSS of a process and its descendants in a thread; keeps the peak and its parts.

    Also the root's own peak (``dagster asset materialize`` runs its step in process, so the root is the
    Dagster process that ran it), the peak of Spark's Python workers, and the CPU of every process seen in
    the tree: ``wait4`` counts only descendants the root waited for, which a Spark JVM may not be.
    """

    root: int
    peak: int = 0
    jvm_at_peak: int = 0
    jvm_peak: int = 0
    root_peak: int = 0
    workers_peak: int = 0
    samples: int = 0
    forks: int = 0  # samples of a fork not yet exec'd, left out (see ``tree``)
    ticks: dict[tuple[int, int], int] = field(default_factory=dict)  # (pid, start) -> its CPU when last seen
    root_series: list[tuple[float, int]] = field(default_factory=list)  # (epoch seconds, the root's RSS)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            members, forks = tree(self.root, processes())
            total = sum(m.proc.rss for m in members)
            jvm = sum(m.proc.rss for m in members if m.proc.name == "java")
            self.samples += 1
            self.forks += forks
            self.jvm_peak = max(self.jvm_peak, jvm)
            for m in members:
                if m.pid == self.root:
                    self.root_peak = max(self.root_peak, m.proc.rss)
                    self.root_series.append((time.time(), m.proc.rss))
            self.workers_peak = max(self.workers_peak, sum(m.proc.rss for m in members if m.beneath_jvm))
            for m in members:
                self.ticks[m.pid, m.proc.started] = m.proc.ticks
            if total > self.peak:
                self.peak, self.jvm_at_peak = total, jvm
            self._stop.wait(SAMPLE_SECONDS)

    @property
    def cpu_seconds(self) -> float:
        """The tree's CPU as sampled: short of each process's last 0.2 s, and of any that lived less."""
        return sum(self.ticks.values()) / TICKS


@dataclass
class Measured:
    """A child as the parent saw it."""

    result: dict[str, Any]
    start: float  # epoch seconds
    end: float
    cpu_seconds: float  # the child's user + system, its reaped descendants included
    largest_process_mib: float  # wait4's ru_maxrss: the largest single process of the tree
    tree_peak_mib: float
    jvm_at_peak_mib: float
    jvm_peak_mib: float
    root_peak_mib: float  # the command's own process alone (for a Dagster command, the process that ran the step)
    root_series: list[tuple[float, int]]  # the root's RSS as sampled: (epoch seconds, bytes)
    workers_peak_mib: float  # Spark's Python workers (the processes beneath the JVM), summed
    tree_cpu_seconds: float  # the CPU of every process seen in the tree, sampled (see TreeSampler)
    samples: int
    forks_left_out: int
    others_cores: float  # cores other processes kept busy on average meanwhile

    @property
    def seconds(self) -> float:
        return self.end - self.start


def iso_seconds(duration: str) -> float:
    hours, minutes, seconds = DURATION_RE.fullmatch(duration).groups()
    return float(hours or 0) * 3600 + float(minutes or 0) * 60 + float(seconds or 0)


def dagster_seconds(duration: str) -> float:
    """A duration as Dagster's format_duration writes it (533ms, 5.6s, 4m52s, 1h4m), in seconds."""
    unit = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(value) * unit[name] for value, name in DAGSTER_DURATION_RE.findall(duration))


def iceberg_reports(log_text: str) -> dict[str, list[list[float]]]:
    """Iceberg's own scan-planning and commit reports from a Spark child's log: [seconds, manifests or attempts]."""
    return {
        "scans": [[iso_seconds(d), int(n)] for d, n in SCAN_REPORT_RE.findall(log_text)],
        "commits": [[iso_seconds(d), int(n)] for d, n in COMMIT_REPORT_RE.findall(log_text)],
    }


def step_timeline(log_text: str, step: str) -> dict[str, Any]:
    """The step's start (epoch seconds) and its own INFO messages, seconds after it; of progress counts, the last."""
    start, found = None, []
    for line in log_text.splitlines():
        if not (match := DAGSTER_LINE_RE.match(line)) or match[3] != step:
            continue
        at = dt.datetime.strptime(match[1], "%Y-%m-%d %H:%M:%S %z").timestamp()
        if match[4].startswith("STEP_START"):
            start = at
        elif match[2] == "INFO" and start is not None:
            if found and "events read" in found[-1][1] and "events read" in match[4]:
                found.pop()
            found.append((at - start, match[4]))
    return {"start": start, "messages": found}


def spark_event_summary(folder: Path) -> list[dict[str, Any]]:
    """Spark's event log, per SQL execution: its start and end (epoch seconds), jobs, tasks, summed task time,
    and its stages that ran (skipped ones, whose output was reused, never complete)."""
    stages: dict[int, dict[str, Any]] = {}
    jobs: dict[int, dict[str, Any]] = {}
    executions: dict[int, dict[str, Any]] = {}
    for path in folder.iterdir():
        for line in path.read_text(errors="replace").splitlines():
            event = json.loads(line)
            kind = event["Event"].rsplit(".", 1)[-1]
            if kind == "SparkListenerStageCompleted":
                info = event["Stage Info"]
                run = sum(
                    int(a["Value"]) for a in info["Accumulables"] if a["Name"] == "internal.metrics.executorRunTime"
                )
                took = (info["Completion Time"] - info["Submission Time"]) / 1000
                stages[info["Stage ID"]] = {"id": info["Stage ID"], "tasks": info["Number of Tasks"], "run": run / 1000}
                stages[info["Stage ID"]]["seconds"] = took
            elif kind == "SparkListenerJobStart":
                execution = (event.get("Properties") or {}).get("spark.sql.execution.id")
                jobs[event["Job ID"]] = {"stages": event["Stage IDs"], "execution": execution}
            elif kind == "SparkListenerSQLExecutionStart":
                executions[event["executionId"]] = {"what": event["description"], "start": event["time"] / 1000}
            elif kind == "SparkListenerSQLExecutionEnd" and event["executionId"] in executions:
                executions[event["executionId"]]["end"] = event["time"] / 1000
    for execution in executions.values():
        execution.update(jobs=0, tasks=0, task_seconds=0.0, stages=[])
    for job in jobs.values():
        execution = executions.get(int(job["execution"])) if job["execution"] is not None else None
        if execution is None:
            continue
        done = [stages[s] for s in job["stages"] if s in stages]
        execution["jobs"] += 1
        execution["tasks"] += sum(s["tasks"] for s in done)
        execution["task_seconds"] += sum(s["run"] for s in done)
        execution["stages"] += done
    return sorted(executions.values(), key=lambda e: e["start"])


def step_peak_mib(measured: Measured, step: str) -> float | None:
    """The Dagster process's peak RSS while ``step`` ran (Dagster's log times it to the second), apart from the
    checks' steps the same process runs after it."""
    start, seconds = measured.result["timeline"]["start"], measured.result["steps"].get(step)
    if start is None or seconds is None:
        return None
    inside = [rss for at, rss in measured.root_series if start <= at <= start + seconds + 1]
    return max(inside) / MiB if inside else None


class ChildFailed(RuntimeError):
    pass


class Runner:
    def __init__(self, work: Path, args: argparse.Namespace):
        self.work = work
        self.args = args
        self.logs = work / "logs"
        self.logs.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("SONIK_", "PYICEBERG_"))}
        self.env["TMPDIR"] = str(work / "tmp")
        (work / "tmp").mkdir()
        self._count = 0

    def child(self, kind: str, home: Path, engine: str = "local") -> Measured:
        cmd = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, kind, "--path", str(home)]
        cmd += ["--events", str(self.args.events), "--files", str(self.args.files), "--engine", engine]
        cmd += ["--spill", str(home.parent / f"spill-{engine}"), "--spark-driver-memory", self.args.spark_driver_memory]
        Path(home.parent / f"spill-{engine}").mkdir(exist_ok=True)
        cpus = self.cpus_for(ENGINES[engine]) if kind == "compact" else None
        return self.measure(kind, engine, cmd, self.env, cpus=cpus)

    def cpus_for(self, run: EngineRun) -> set[int] | None:
        """With ``--cores-as-slots``, the CPUs a Spark run's whole process tree may use: as many as its task
        slots (local[1]: one), as an executor of that many cores has; otherwise None (every CPU)."""
        if not (self.args.cores_as_slots and run.master):
            return None
        slots = local_task_slots(run.master) or len(os.sched_getaffinity(0))
        return set(sorted(os.sched_getaffinity(0))[:slots])

    def dagster_env(self, home: Path, run: EngineRun) -> dict[str, str]:
        """A Dagster command's environment: the lakehouse at ``home``, ``run``'s engine, Spark's spill in the work."""
        spill = home.parent / f"spill-{run.key}"
        spill.mkdir(exist_ok=True)
        dagster_home = home.parent / "dagster_home"
        dagster_home.mkdir(exist_ok=True)
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        spark_conf = {"spark.local.dir": str(spill)}
        if self.args.spark_driver_memory:
            spark_conf["spark.driver.memory"] = self.args.spark_driver_memory
        return self.env | {
            "DAGSTER_HOME": str(dagster_home),
            "SONIK_HOME": str(home),
            "SONIK_START_DATE": START_DATE,
            "SONIK_ENGINE": "spark" if run.master else "local",
            "SONIK_SPARK_MASTER": run.master or "local[*]",
            "SONIK_SPARK_CONF": json.dumps(spark_conf),
        }

    def materialize(self, kind: str, select: str, env: dict[str, str], run: EngineRun) -> Measured:
        """``dagster asset materialize --select <select> --partition DAY``, as a user runs it."""
        dagster = Path(sys.executable).with_name("dagster")
        cmd = [str(dagster), "asset", "materialize", "-m", "sonik_pipeline.definitions", "--select", select]
        cmd += ["--partition", str(DAY)]
        return self.measure(kind, run.key, cmd, env, result_line=False, cpus=self.cpus_for(run))

    def materialize_marts(self, home: Path, run: EngineRun) -> Measured:
        """The day's daily marts through ``dagster asset materialize``, on ``run``'s engine, as a user runs it."""
        select = ",".join(mart.name for mart in DAILY_MARTS)
        return self.with_event_log(
            "marts", select, self.dagster_env(home, run), run, home.parent / "spark-events-marts"
        )

    def materialize_plays(self, home: Path, run: EngineRun, landing: Path) -> Measured:
        """The day's ``plays`` from the landing zone through ``dagster asset materialize``, on ``run``'s engine."""
        env = self.dagster_env(home, run) | {"SONIK_SOURCE": "landing", "SONIK_LANDING_DIR": str(landing)}
        measured = self.with_event_log("plays", "plays", env, run, home.parent / "spark-events")
        measured.result["step_peak_mib"] = step_peak_mib(measured, "plays")
        return measured

    def with_event_log(self, kind: str, select: str, env: dict[str, str], run: EngineRun, events: Path) -> Measured:
        """``materialize``; with ``--spark-event-log``, Spark writes its event log to ``events`` (read back to
        show where the step's time went, in ``result["spark_sql"]``)."""
        if run.master and self.args.spark_event_log:
            events.mkdir()
            conf = json.loads(env["SONIK_SPARK_CONF"])
            conf |= {"spark.eventLog.enabled": "true", "spark.eventLog.dir": events.as_uri()}
            env = env | {"SONIK_SPARK_CONF": json.dumps(conf)}
        measured = self.materialize(kind, select, env, run)
        measured.result["spark_sql"] = spark_event_summary(events) if events.is_dir() else []
        return measured

    def measure(
        self,
        kind: str,
        engine: str,
        cmd: list[str],
        env: dict[str, str],
        result_line: bool = True,
        cpus: set[int] | None = None,
    ) -> Measured:
        """Run ``cmd`` to its end (on ``cpus`` only, when given: its children inherit them), sampling its
        process tree; its result is its last result line (if it prints one)."""
        self._count += 1
        log = self.logs / f"{self._count:02d}-{kind}-{engine}.log"
        with log.open("wb") as out:
            ticks = busy_ticks()
            start = time.time()
            pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, preexec_fn=pin)
            with TreeSampler(proc.pid) as sampler:
                try:
                    _, status, usage = os.wait4(proc.pid, 0)
                except BaseException:
                    proc.kill()
                    proc.wait()
                    raise
            end = time.time()
            ticks = busy_ticks() - ticks
        proc.returncode = os.waitstatus_to_exitcode(status)
        text = log.read_text(errors="replace")
        lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or (result_line and not lines):
            tail = "\n".join(text.splitlines()[-40:])
            # A JVM's cause (an OutOfMemoryError) comes long before the Python traceback the tail shows.
            causes = [line for line in text.splitlines() if " ERROR " in line or "OutOfMemoryError" in line][:4]
            first = "".join(f"\n  {line}" for line in causes)
            raise ChildFailed(
                f"{kind} child ({engine}) failed (exit code {proc.returncode}), {log}:{first}\n  ...\n{tail}"
            )
        cpu = usage.ru_utime + usage.ru_stime
        result = json.loads(lines[-1].removeprefix(RESULT_PREFIX)) if lines else {}
        result["iceberg"] = iceberg_reports(text)
        result["steps"] = {name: dagster_seconds(duration) for name, duration in STEP_RE.findall(text)}
        result["timeline"] = step_timeline(text, "daily_marts" if kind == "marts" else "plays")
        return Measured(
            result=result,
            start=start,
            end=end,
            cpu_seconds=cpu,
            largest_process_mib=usage.ru_maxrss / 1024,
            tree_peak_mib=sampler.peak / MiB,
            jvm_at_peak_mib=sampler.jvm_at_peak / MiB,
            jvm_peak_mib=sampler.jvm_peak / MiB,
            root_peak_mib=sampler.root_peak / MiB,
            root_series=sampler.root_series,
            workers_peak_mib=sampler.workers_peak / MiB,
            tree_cpu_seconds=sampler.cpu_seconds,
            samples=sampler.samples,
            forks_left_out=sampler.forks,
            others_cores=max(0.0, (ticks / TICKS - max(cpu, sampler.cpu_seconds)) / max(end - start, 1e-9)),
        )


# ---------------------------------------------------------------------------------------------
# One engine: build, compact, verify
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    run: EngineRun
    landed: Measured
    compacted: Measured
    verified: Measured
    errors: list[str]
    marts: Measured | None = None  # the daily marts through `dagster asset materialize` (--marts)
    marts_digest: dict[str, Any] | None = None

    @property
    def report(self) -> dict[str, Any]:
        return self.compacted.result

    @property
    def compact_seconds(self) -> float:
        return self.report["marks"]["compacted"] - self.report["marks"]["compact"]

    @property
    def session_seconds(self) -> float | None:
        marks = self.report["marks"]
        return marks["session"] - marks["imported"] if "session" in marks else None

    def breakdown(self) -> list[tuple[str, float]]:
        """Where the child's wall time went, in order; the parts add up to it, "of which" lines are shares."""
        marks, measured = self.report["marks"], self.compacted
        parts = [("interpreter start and imports", marks["imported"] - measured.start)]
        if "session" in marks:
            parts.append(("Spark session start", marks["session"] - marks["imported"]))
        before_compact = marks.get("session", marks["imported"])
        parts.append(("load the table", marks["compact"] - before_compact))
        parts += self.compaction_parts()
        if "stopped" in marks:
            parts.append(("session stop, JVM exit", marks["stopped"] - marks["compacted"]))
        parts.append(("interpreter exit", measured.end - marks.get("stopped", marks["compacted"])))
        return parts

    def compaction_parts(self) -> list[tuple[str, float]]:
        marks = self.report["marks"]
        start, end = marks["compact"], marks["compacted"]
        calls = [c for c in self.report["calls"] if c["procedure"] == "rewrite_data_files"]
        if not calls:  # the local engine: its progress says when the groups were rewritten and committed
            rewritten = [t for t, m in self.report["messages"] if ": group " in m]
            mark = rewritten[-1] if rewritten else end
            return [("compaction: plan, read, sort, write, verify", mark - start), ("compaction: commit", end - mark)]
        call = calls[0]
        jobs = [
            j for j in self.report["jobs"] if j["start"] and j["end"] and call["start"] <= j["start"] <= call["end"]
        ]
        parts = [("compaction: before the procedure", call["start"] - start)]
        if jobs:
            first, last = min(j["start"] for j in jobs), max(j["end"] for j in jobs)
            scans, commits = self.report["iceberg"]["scans"], self.report["iceberg"]["commits"]
            parts.append(("procedure: before the first Spark job (catalog, table, planning)", first - call["start"]))
            parts += [(f"  of which Iceberg's scan planning ({n} manifests)", seconds) for seconds, n in scans]
            parts.append((f"procedure: {len(jobs)} Spark job(s) (read, sort, write)", last - first))
            parts.append(("procedure: after the last job (commit)", call["end"] - last))
            parts += [(f"  of which Iceberg's commit ({n} attempt(s))", seconds) for seconds, n in commits]
        else:
            parts.append(("procedure (no Spark job seen)", call["end"] - call["start"]))
        parts.append(("compaction: engine's report (PyIceberg reads the manifests)", end - call["end"]))
        return parts

    def procedure_seconds(self) -> float | None:
        calls = [c for c in self.report["calls"] if c["procedure"] == "rewrite_data_files"]
        return calls[0]["end"] - calls[0]["start"] if calls else None

    def jobs_seconds(self) -> float | None:
        parts = dict(self.compaction_parts())
        return next((v for k, v in parts.items() if "Spark job(s)" in k), None)


def two_slot_bound(run: Outcome) -> float | None:
    """A one-slot run's compaction time if each stage's tasks had run two at a time (Amdahl, equal tasks)."""
    stages = [stage for job in run.report["jobs"] for stage in job["stages"] if stage["tasks"]]
    if not stages:
        return None
    saved = sum(s["run_seconds"] * (1 - math.ceil(s["tasks"] / 2) / s["tasks"]) for s in stages)
    return run.compact_seconds - saved


def check_data(run: EngineRun, landed: dict[str, Any], after: dict[str, Any], reference: Digest | None) -> list[str]:
    errors = []
    source = landed["input"]
    if reference is not None and source != reference:
        errors.append(f"{run.label}: the generated input differs from the first engine's ({source} vs {reference})")
    if landed["landed"] != source:
        errors.append(f"{run.label}: the landed table differs from the input: {landed['landed']} vs {source}")
    if after["digest"] != source:
        errors.append(f"{run.label}: the compacted table differs from the input: {after['digest']} vs {source}")
    if after["shape"]["files"] >= landed["shape"]["files"]:
        errors.append(
            f"{run.label}: {after['shape']['files']} files after compaction, {landed['shape']['files']} before"
        )
    return errors


def run_engine(runner: Runner, run: EngineRun, reference: Digest | None) -> Outcome:
    home = runner.work / run.key / "lakehouse"
    home.mkdir(parents=True)
    try:
        landed = runner.child("land", home, run.key)
        print(f"  ... {run.label}: landed in {landed.seconds:.0f} s", file=sys.stderr, flush=True)
        compacted = runner.child("compact", home, run.key)
        print(f"  ... {run.label}: compacted in {compacted.seconds:.0f} s", file=sys.stderr, flush=True)
        verified = runner.child("verify", home, run.key)
        marts = marts_digest = None
        if runner.args.marts:
            marts = runner.materialize_marts(home, run)
            print(f"  ... {run.label}: daily marts in {marts.seconds:.0f} s", file=sys.stderr, flush=True)
            marts_digest = runner.child("marts-digest", home, run.key).result["marts"]
    finally:
        if not runner.args.keep:
            shutil.rmtree(runner.work / run.key, ignore_errors=True)
    errors = check_data(run, landed.result, verified.result, reference)
    return Outcome(run, landed, compacted, verified, errors, marts, marts_digest)


def check_marts(outcomes: list[Outcome]) -> list[str]:
    """Every engine's daily marts hold the same rows (counts and digests) as the first engine's, each one commit."""
    built = [o for o in outcomes if o.marts_digest is not None]
    errors = []
    for o in built:
        if empty := [name for name, mart in o.marts_digest.items() if not mart["rows"]]:
            errors.append(f"{o.run.label}: no rows in {', '.join(empty)}")
        if many := [name for name, mart in o.marts_digest.items() if mart["snapshots"] != 1]:
            errors.append(f"{o.run.label}: not one commit in {', '.join(many)}")
    for o in built[1:]:
        for name, mart in o.marts_digest.items():
            reference = built[0].marts_digest[name]
            if (mart["rows"], mart["digest"]) != (reference["rows"], reference["digest"]):
                errors.append(f"{o.run.label}: {name} differs from {built[0].run.label}'s: {mart} vs {reference}")
    return errors


# ---------------------------------------------------------------------------------------------
# --landing: one engine ingests the landing day through Dagster, then (--marts) builds its marts
# ---------------------------------------------------------------------------------------------


@dataclass
class LandingOutcome:
    run: EngineRun
    ingest: Measured  # `dagster asset materialize --select plays`
    verified: Measured
    marts: Measured | None = None
    marts_digest: dict[str, Any] | None = None

    @property
    def step_seconds(self) -> float | None:
        return self.ingest.result["steps"].get("plays")

    @property
    def day(self) -> list[int]:
        return self.verified.result["digest"].get(str(DAY), [0, 0, 0])


def run_landing_engine(runner: Runner, run: EngineRun, landing: Path) -> LandingOutcome:
    """A fresh lakehouse for ``run``: the day's plays from ``landing`` through Dagster, checked, then its marts."""
    home = runner.work / run.key / "lakehouse"
    home.mkdir(parents=True)
    try:
        ingest = runner.materialize_plays(home, run, landing)
        print(f"  ... {run.label}: plays in {ingest.seconds:.0f} s", file=sys.stderr, flush=True)
        outcome = LandingOutcome(run, ingest, runner.child("verify", home, run.key))
        if runner.args.marts:
            outcome.marts = runner.materialize_marts(home, run)
            print(f"  ... {run.label}: daily marts in {outcome.marts.seconds:.0f} s", file=sys.stderr, flush=True)
            outcome.marts_digest = runner.child("marts-digest", home, run.key).result["marts"]
    finally:
        if not runner.args.keep:
            shutil.rmtree(runner.work / run.key, ignore_errors=True)
    return outcome


def check_landing(outcomes: list[LandingOutcome], written: dict[str, Any], events: int) -> list[str]:
    """Every engine's ``music.plays`` holds exactly the events written: the same rows and digests, no other day."""
    errors = []
    expected = written["input"]
    if expected.get(str(DAY), [0])[0] != events:
        errors.append(f"the landing day holds {expected} rows by day, not {events:,} events of {DAY}")
    for o in outcomes:
        if o.verified.result["digest"] != expected:
            errors.append(f"{o.run.label}: music.plays differs from the events written: {o.verified.result['digest']}")
        if o.verified.result["shape"]["rows"] != events:
            errors.append(
                f"{o.run.label}: music.plays plans {o.verified.result['shape']['rows']:,} rows, not {events:,}"
            )
    for o in outcomes[1:]:
        if o.verified.result["digest"] != outcomes[0].verified.result["digest"]:
            errors.append(f"{o.run.label}: music.plays differs from {outcomes[0].run.label}'s")
    return errors


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} s"


def _mib(value: float) -> str:
    return f"{value:,.0f} MiB"


def _ratio(numerator: float | None, denominator: float | None) -> str:
    if numerator is None or not denominator:
        return "-"
    return f"{numerator / denominator:.2f}x"


def print_busy_note(busy: float) -> None:
    """Say when other processes kept CPUs busy during the Spark runs: the local[2] / local[1] ratio understates then."""
    if busy >= 0.5:
        print(
            f"    NOTE: other processes kept up to {busy:.1f} of the {os.cpu_count()} CPUs busy during the Spark "
            "runs: local[2] had less than two cores to itself, so this ratio understates its scaling"
        )


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    rule = ["-" * width for width in widths]
    for row in [header, rule, *rows]:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))]
        print("  " + "  ".join(cells).rstrip())


def print_report(outcomes: list[Outcome]) -> None:
    header = ["engine", "session start", "compaction", "child wall", "CPU", "others' load"]
    header += ["peak RSS tree", "JVM at peak", "largest proc", "files", "rows after", "digests"]
    rows = []
    for o in outcomes:
        shape_before, shape_after = o.landed.result["shape"], o.verified.result["shape"]
        day = o.verified.result["digest"].get(str(DAY), [0, 0, 0])
        rows.append(
            [
                o.run.label,
                _s(o.session_seconds),
                _s(o.compact_seconds),
                _s(o.compacted.seconds),
                _s(o.compacted.cpu_seconds),
                f"{o.compacted.others_cores:.1f} cores",
                _mib(o.compacted.tree_peak_mib),
                _mib(o.compacted.jvm_at_peak_mib) if o.compacted.jvm_peak_mib else "-",
                _mib(o.compacted.largest_process_mib),
                f"{shape_before['files']} -> {shape_after['files']}",
                f"{day[0]:,}",
                "= input" if not o.errors else "DIFFERENT",
            ]
        )
    print_table(header, rows)
    for o in outcomes:
        before, after = o.landed.result["shape"], o.verified.result["shape"]
        print(
            f"  {o.run.label}: {before['bytes'] / MiB:,.0f} -> {after['bytes'] / MiB:,.0f} MiB of data files, "
            f"{o.report['commits']} commit(s), rows reported by the engine {o.report['rows_verified']:,}; "
            f"landed in {o.landed.result['seconds']:.1f} s; RSS sampled {o.compacted.samples}x "
            f"({o.compacted.forks_left_out} fork(s) not yet exec'd left out)"
        )

    by_key = {o.run.key: o for o in outcomes}
    print("\nTarget and ratios (same run)")
    one, two, local = by_key.get("spark1"), by_key.get("spark2"), by_key.get("local")
    if one and two:
        speedup = one.compact_seconds / two.compact_seconds
        verdict = "MET" if speedup >= SPARK_SCALING_TARGET else "NOT MET"
        print(
            f"  Spark local[1] / local[2], compaction: {speedup:.2f}x   target >= {SPARK_SCALING_TARGET}x   {verdict}"
        )
        print(
            f"    the procedure alone {_ratio(one.procedure_seconds(), two.procedure_seconds())}, "
            f"its Spark jobs alone {_ratio(one.jobs_seconds(), two.jobs_seconds())}, "
            f"the child's wall time {_ratio(one.compacted.seconds, two.compacted.seconds)}; "
            f"CPU seconds local[2] / local[1] {_ratio(two.compacted.cpu_seconds, one.compacted.cpu_seconds)}"
        )
        if (bound := two_slot_bound(one)) is not None:
            print(
                f"    the most two slots could gain, from local[1]'s stages (tasks of equal length, the rest "
                f"serial): {one.compact_seconds:.1f} s -> {bound:.1f} s, {one.compact_seconds / bound:.2f}x"
            )
        print_busy_note(max(one.compacted.others_cores, two.compacted.others_cores))
    else:
        print("  Spark local[1] / local[2]: not measured (both Spark runs are needed)")
    if local:
        for spark in (one, two):
            if spark is None:
                continue
            print(
                f"  {spark.run.label} / local engine (no target): compaction "
                f"{_ratio(spark.compact_seconds, local.compact_seconds)}, child wall "
                f"{_ratio(spark.compacted.seconds, local.compacted.seconds)}, peak RSS tree "
                f"{_ratio(spark.compacted.tree_peak_mib, local.compacted.tree_peak_mib)}, CPU "
                f"{_ratio(spark.compacted.cpu_seconds, local.compacted.cpu_seconds)}"
            )

    print_marts_report(outcomes, outcomes[0].landed.result["shape"]["rows"])

    print("\nWhere the time goes (seconds of the child's wall time)")
    for o in outcomes:
        parts = o.breakdown()
        print(f"  {o.run.label} ({o.compacted.seconds:,.1f} s):")
        for name, seconds in parts:
            print(f"    {name:<70}{seconds:8.1f}")
        for job in o.report["jobs"]:
            if job["start"] is None or job["end"] is None:
                continue
            stages = ", ".join(f"{s['tasks']} task(s) {s['run_seconds']:.1f} s" for s in job["stages"])
            print(
                f"      job {job['id']} ({job['name'][:50]}): {job['end'] - job['start']:.1f} s; "
                f"its stages, tasks and their summed run time: {stages}"
            )


def marts_step(outcome: Outcome | LandingOutcome) -> float | None:
    return outcome.marts.result["steps"].get("daily_marts")


def print_marts_report(outcomes: list[Outcome] | list[LandingOutcome], events: int) -> None:
    built = [o for o in outcomes if o.marts is not None]
    if not built:
        return
    print(f"\nThe daily marts of {DAY} ({events:,} events), `dagster asset materialize --select <daily marts>`")
    header = ["engine", "command wall", "daily_marts step", "events/s (step)", "CPU (tree)*", "others' load"]
    header += ["peak RSS tree", "JVM at peak", "mart rows", "same rows"]
    rows = []
    for o in built:
        step = marts_step(o)
        rows.append(
            [
                o.run.label,
                _s(o.marts.seconds),
                _s(step),
                f"{events / step:,.0f}" if step else "-",
                _s(o.marts.tree_cpu_seconds),
                f"{o.marts.others_cores:.1f} cores",
                _mib(o.marts.tree_peak_mib),
                _mib(o.marts.jvm_at_peak_mib) if o.marts.jvm_peak_mib else "-",
                f"{sum(m['rows'] for m in o.marts_digest.values()):,}",
                "yes" if not check_marts([built[0], o]) else "NO",
            ]
        )
    print_table(header, rows)
    print(
        "  * every process seen in the tree, sampled: wait4's figure misses a Spark JVM the command does not wait for"
    )
    by_key = {o.run.key: o for o in built}
    one, two, local = by_key.get("spark1"), by_key.get("spark2"), by_key.get("local")
    if one and two and marts_step(one) and marts_step(two):
        speedup = marts_step(one) / marts_step(two)
        verdict = "MET" if speedup >= SPARK_SCALING_TARGET else "NOT MET"
        print(
            f"  Spark local[1] / local[2], daily_marts step: {speedup:.2f}x   target >= {SPARK_SCALING_TARGET}x   "
            f"{verdict}; the command's wall time {_ratio(one.marts.seconds, two.marts.seconds)}"
        )
    if local:
        for spark in (one, two):
            if spark is not None:
                print(
                    f"  {spark.run.label} / local engine (no target): step "
                    f"{_ratio(marts_step(spark), marts_step(local))}, "
                    f"command {_ratio(spark.marts.seconds, local.marts.seconds)}, peak RSS tree "
                    f"{_ratio(spark.marts.tree_peak_mib, local.marts.tree_peak_mib)}"
                )


def print_landing_report(outcomes: list[LandingOutcome], written: dict[str, Any], events: int) -> None:
    print(
        f"Ingest of {DAY} from the landing zone ({events:,} events in {written['files']} JSON Lines files, "
        f"{written['bytes'] / MiB:,.0f} MiB), `dagster asset materialize --select plays`"
    )
    header = ["engine", "plays step", "command wall", "events/s (step)", "CPU (tree)", "others' load"]
    header += ["peak RSS tree", "JVM at peak", "Dagster: step", "Dagster: run", "Py workers", "rows", "digest"]
    rows = []
    for o in outcomes:
        step = o.step_seconds
        rows.append(
            [
                o.run.label,
                _s(step),
                _s(o.ingest.seconds),
                f"{events / step:,.0f}" if step else "-",
                _s(o.ingest.tree_cpu_seconds),
                f"{o.ingest.others_cores:.1f} cores",
                _mib(o.ingest.tree_peak_mib),
                _mib(o.ingest.jvm_at_peak_mib) if o.ingest.jvm_peak_mib else "-",
                _mib(step_peak) if (step_peak := o.ingest.result["step_peak_mib"]) else "-",
                _mib(o.ingest.root_peak_mib),
                _mib(o.ingest.workers_peak_mib) if o.ingest.jvm_peak_mib else "-",
                f"{o.day[0]:,}",
                "= written" if o.verified.result["digest"] == written["input"] else "DIFFERENT",
            ]
        )
    print_table(header, rows)
    print(
        "  Dagster: the peak RSS of the command's own process, which runs the steps (in-process executor), while "
        "the plays step ran and over the whole run (its checks' steps included); Py workers: Spark's Python "
        "workers (beneath the JVM), their peak summed"
    )
    for o in outcomes:
        others = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in o.ingest.result["steps"].items())
        print(
            f"  {o.run.label}: steps {others}; JVM's own peak {_mib(o.ingest.jvm_peak_mib)}; CPU by wait4 "
            f"{o.ingest.cpu_seconds:,.1f} s; RSS sampled {o.ingest.samples}x ({o.ingest.forks_left_out} fork(s) "
            f"left out); {o.verified.result['shape']['files']} data file(s), "
            f"{o.verified.result['shape']['bytes'] / MiB:,.0f} MiB"
        )

    by_key = {o.run.key: o for o in outcomes}
    one, two, local = by_key.get("spark1"), by_key.get("spark2"), by_key.get("local")
    print("\nTarget and ratios (same run)")
    if one and two and one.step_seconds and two.step_seconds:
        speedup = one.step_seconds / two.step_seconds
        verdict = "MET" if speedup >= SPARK_SCALING_TARGET else "NOT MET"
        print(
            f"  Spark local[1] / local[2], plays step: {speedup:.2f}x   target >= {SPARK_SCALING_TARGET}x   {verdict}"
        )
        print(
            f"    the command's wall time {_ratio(one.ingest.seconds, two.ingest.seconds)}; CPU seconds local[2] / "
            f"local[1] {_ratio(two.ingest.tree_cpu_seconds, one.ingest.tree_cpu_seconds)}"
        )
        print_busy_note(max(one.ingest.others_cores, two.ingest.others_cores))
    else:
        print("  Spark local[1] / local[2]: not measured (both Spark runs are needed)")
    if local:
        for spark in (one, two):
            if spark is not None:
                print(
                    f"  {spark.run.label} / local engine (no target): plays step "
                    f"{_ratio(spark.step_seconds, local.step_seconds)}, command "
                    f"{_ratio(spark.ingest.seconds, local.ingest.seconds)}, peak RSS tree "
                    f"{_ratio(spark.ingest.tree_peak_mib, local.ingest.tree_peak_mib)}, Dagster process in the step "
                    f"{_ratio(spark.ingest.result['step_peak_mib'], local.ingest.result['step_peak_mib'])}, CPU "
                    f"{_ratio(spark.ingest.tree_cpu_seconds, local.ingest.tree_cpu_seconds)}"
                )
    print_marts_report(outcomes, events)
    print_plays_time(outcomes)


def print_plays_time(outcomes: list[LandingOutcome]) -> None:
    """The plays step's (and the daily marts') own messages and Spark's SQL executions."""
    print_step_time("plays", [(o.run.label, o.step_seconds, o.ingest) for o in outcomes])
    marts = [(o.run.label, marts_step(o), o.marts) for o in outcomes if o.marts and o.marts.result.get("spark_sql")]
    if marts:
        print_step_time("daily_marts", marts)


def print_step_time(step: str, runs: list[tuple[str, float | None, Measured]]) -> None:
    """A step's own messages (seconds after its start, to the second) and Spark's SQL executions in it."""
    print(f"\nWhere the {step} step's time went (its messages, seconds after the step started)")
    for label, seconds, measured in runs:
        print(f"  {label} ({_s(seconds)}):")
        timeline = measured.result["timeline"]
        for seconds, message in timeline["messages"]:
            print(f"    {seconds:6.0f}  {message[:110]}")
        for e in measured.result["spark_sql"]:
            took = e["end"] - e["start"] if "end" in e else float("nan")
            print(
                f"    {e['start'] - (timeline['start'] or e['start']):6.0f}  Spark SQL execution, {took:.1f} s: "
                f"{e['jobs']} job(s), {e['tasks']} task(s), {e['task_seconds']:.1f} s of task time; "
                f"{' '.join(e['what'].split())[:70]}"
            )
            slow = [f"{s['id']}: {s['tasks']} task(s) {s['seconds']:.1f} s" for s in e["stages"] if s["seconds"] >= 1]
            if slow:
                print(f"            its stages of 1 s or more (wall time): {'; '.join(slow)}")


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help=f"events in the day (default {DEFAULT_EVENTS:,})")
    parser.add_argument("--quick", action="store_true", help=f"a short run: {QUICK_EVENTS:,} events")
    parser.add_argument(
        "--files",
        type=int,
        default=None,
        help=f"appends, so small files (default {DEFAULT_FILES}); --landing: JSON Lines files ({LANDING_FILES})",
    )
    parser.add_argument(
        "--landing",
        action="store_true",
        help="instead of compaction: the day written as JSON Lines, ingested through `dagster asset materialize`",
    )
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"which engines, of {', '.join(ENGINES)}")
    parser.add_argument(
        "--spark-driver-memory",
        default="",
        help="spark.driver.memory for the Spark runs (default: the project's, 2 GiB a task slot)",
    )
    parser.add_argument(
        "--marts", action="store_true", help="then the day's daily marts through `dagster asset materialize`"
    )
    parser.add_argument(
        "--spark-event-log",
        action="store_true",
        help="--landing: Spark writes its event log during the plays (and marts) step, summarized in the report",
    )
    parser.add_argument(
        "--cores-as-slots",
        action="store_true",
        help="each Spark run's process tree on as many CPUs as it has task slots (local[1]: one), as an executor",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work folder (lakehouses, logs)")
    parser.add_argument("--work-dir", default=None, help="where the work folder is made (default: the system temp)")
    parser.add_argument(
        CHILD_FLAG,
        choices=("land", "compact", "verify", "marts-digest", "write-landing"),
        dest="child",
        help=argparse.SUPPRESS,
    )
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--engine", default="local", choices=sorted(ENGINES), help=argparse.SUPPRESS)
    parser.add_argument("--spill", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events is not None and args.quick:
        parser.error("--quick and --events are exclusive")
    args.events = args.events or (QUICK_EVENTS if args.quick else DEFAULT_EVENTS)
    args.files = args.files or (LANDING_FILES if args.landing else DEFAULT_FILES)
    args.engines = [key.strip() for key in args.engines.split(",") if key.strip()]
    if unknown := set(args.engines) - set(ENGINES):
        parser.error(f"unknown engine(s): {', '.join(sorted(unknown))}; engines: {', '.join(ENGINES)}")
    if args.events < args.files or args.files < 2:
        parser.error("--files must be at least 2 and at most --events")
    return args


def available_mib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def landing_main(runner: Runner) -> int:
    """--landing: the day written once, then each engine's ingest (and marts) on a fresh lakehouse; checked."""
    args = runner.args
    started = time.perf_counter()
    landing = runner.work / "landing"
    try:
        written = runner.child("write-landing", landing).result
    except ChildFailed as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    print(
        f"  ... wrote {written['files']} files, {written['bytes'] / MiB:,.0f} MiB in {written['seconds']:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    outcomes: list[LandingOutcome] = []
    errors: list[str] = []
    for key in args.engines:
        try:
            outcomes.append(run_landing_engine(runner, ENGINES[key], landing))
        except ChildFailed as exc:
            errors.append(str(exc))
    errors += check_landing(outcomes, written, args.events) + check_marts(outcomes)
    print(f"  load average {os.getloadavg()[0]:.1f} at the end, {time.perf_counter() - started:,.0f} s in all\n")
    if outcomes:
        print_landing_report(outcomes, written, args.events)
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(RESULT_PREFIX + json.dumps(run_child(args)), flush=True)
        return 0

    available = available_mib()
    work = Path(tempfile.mkdtemp(prefix="sonik-engines-", dir=args.work_dir))
    what = (
        f"in {args.files} JSON Lines files, ingested through Dagster"
        if args.landing
        else f"in {args.files} appends, compacted (sort_by {','.join(SORT_BY)})"
    )
    print(
        f"sonik_pipeline engines benchmark: {args.events:,} events on {DAY} {what} "
        f"by {', '.join(ENGINES[k].label for k in args.engines)}{' (then the daily marts)' if args.marts else ''}\n"
        f"  {os.cpu_count()} CPU(s), {available:,.0f} MiB available, load average {os.getloadavg()[0]:.1f} at start, "
        f"Spark driver memory {args.spark_driver_memory or 'the project default (2 GiB a slot)'}, work folder {work}\n"
        f"  Spark's process trees on "
        f"{'as many CPUs as task slots (--cores-as-slots)' if args.cores_as_slots else 'every CPU'}",
        flush=True,
    )
    if available < MIN_AVAILABLE_MIB:
        print(f"ERROR: only {available:,.0f} MiB available, {MIN_AVAILABLE_MIB:,} needed", file=sys.stderr)
        return 1
    runner = Runner(work, args)
    if args.landing:
        try:
            return landing_main(runner)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
            print(f"\n  work folder {work} ({'kept' if args.keep else 'removed'})")
    outcomes: list[Outcome] = []
    errors: list[str] = []
    started = time.perf_counter()
    try:
        for key in args.engines:
            try:
                outcome = run_engine(runner, ENGINES[key], outcomes[0].landed.result["input"] if outcomes else None)
            except ChildFailed as exc:
                errors.append(str(exc))
                continue
            outcomes.append(outcome)
            errors += outcome.errors
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    errors += check_marts(outcomes)
    print(f"  load average {os.getloadavg()[0]:.1f} at the end, {time.perf_counter() - started:,.0f} s in all\n")
    if outcomes:
        print_report(outcomes)
    print(f"\n  work folder {work} ({'kept' if args.keep else 'removed'})")
    for error in errors:
        print(f"ERROR: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
