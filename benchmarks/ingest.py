"""Benchmark: ingesting one synthetic day of play events into ``music.plays``.

What it measures, for one day of ``--events`` events (default 1,000,000), median of ``--repeat`` runs:

* **Ingest**: the real code path, ``ingest_day(catalog, day, synthetic_events(day, n), run_id="bench")``
  on a fresh SQLite catalog and local warehouse (one temporary directory per run): source generation,
  validation, Parquet writing and the Iceberg commit. Each run happens in a fresh child process (this
  script re-invoked with a hidden flag), which reports its wall time, its RSS just after imports and
  its peak RSS (``ru_maxrss``) right after the ingest, and the rows the table then holds.
* **Baseline**: PyArrow alone writing the same rows to one zstd Parquet file
  (``pq.write_table(table, path, compression="zstd")``); the table is built before timing.
* **Breakdown**: a separate instrumented pass (not part of the headline number) timing the synthetic
  source alone and ``DayValidator.classify`` alone; "rest" is the ingest median minus both, i.e.
  staging Parquet data files plus the Iceberg commits.

Targets: ingest <= 2.5x the PyArrow baseline, and peak RSS of the ingest under 1 GB.

The exit code is 0 whether or not the targets are met (this is a report); it is non-zero if an
ingest fails or the table does not hold exactly the expected rows.

Usage: ``.venv/bin/python benchmarks/ingest.py [--events N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.ingest.validation import DayValidator
from sonik_pipeline.lakehouse.sources.events import BATCH_ROWS
from sonik_pipeline.lakehouse.sources.synthetic import catalogue, synthetic_batch, synthetic_events
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SCHEMA

DAY = dt.date(2024, 5, 1)
DEFAULT_EVENTS = 1_000_000
DEFAULT_REPEAT = 3
RATIO_TARGET = 2.5
PEAK_RSS_TARGET_MIB = 1000 * 1000 * 1000 / 2**20  # "under 1 GB", decimal: ~953.7 MiB
CHILD_FLAG = "--_child-ingest"
RESULT_PREFIX = "BENCH-RESULT "


@dataclass(frozen=True)
class IngestRun:
    """What one child process measured."""

    seconds: float
    rss_after_imports_mib: float
    peak_rss_mib: float
    rows_in_table: int
    rows_rejected: int


@dataclass(frozen=True)
class Breakdown:
    generate_seconds: float
    validate_seconds: float


def _peak_rss_mib() -> float:
    """Peak resident set size of this process so far (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _current_rss_mib() -> float:
    """Current resident set size, from /proc where available, else the peak so far."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return _peak_rss_mib()
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# Child process: one ingest on a fresh catalog
# ---------------------------------------------------------------------------------------------


def run_one_ingest(n_events: int) -> IngestRun:
    """Ingest ``n_events`` for ``DAY`` into a fresh catalog; meant to run in a fresh process."""
    rss_after_imports = _current_rss_mib()
    catalogue()  # cached one-time build, kept out of the timing
    with tempfile.TemporaryDirectory(prefix="sonik-bench-") as tmp:
        catalog = open_catalog("sonik", f"sqlite:///{tmp}/catalog.db", Path(tmp, "warehouse").as_uri())
        events = synthetic_events(DAY, n_events)
        started = time.perf_counter()
        result = ingest_day(catalog, DAY, events, run_id="bench")
        seconds = time.perf_counter() - started
        peak = _peak_rss_mib()  # before reading back, so only the ingest counts
        rows = catalog.load_table("music.plays").scan().count()
    return IngestRun(seconds, rss_after_imports, peak, rows, result.totals.rejected)


def child_main(n_events: int) -> None:
    run = run_one_ingest(n_events)
    print(RESULT_PREFIX + json.dumps(asdict(run)), flush=True)


def ingest_in_child(n_events: int) -> IngestRun:
    """Run one ingest in a fresh interpreter so its peak RSS is its own."""
    cmd = [sys.executable, str(Path(__file__).resolve()), CHILD_FLAG, "--events", str(n_events)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"ingest child failed (exit code {proc.returncode})")
    return IngestRun(**json.loads(lines[-1].removeprefix(RESULT_PREFIX)))


# ---------------------------------------------------------------------------------------------
# Parent process: baseline and breakdown
# ---------------------------------------------------------------------------------------------


def batch_sizes(n_events: int) -> list[int]:
    """The batch sizes ``synthetic_events`` uses, so the baseline gets exactly the same rows."""
    return [min(BATCH_ROWS, n_events - start) for start in range(0, n_events, BATCH_ROWS)]


def baseline_table(n_events: int) -> pa.Table:
    batches = [synthetic_batch(DAY, n, seed=0, batch=i) for i, n in enumerate(batch_sizes(n_events))]
    return pa.concat_tables(batches)


def time_baseline_write(table: pa.Table) -> float:
    with tempfile.TemporaryDirectory(prefix="sonik-bench-") as tmp:
        path = Path(tmp, "plays.parquet")
        return _timed(lambda: pq.write_table(table, path, compression="zstd"))


def time_generation(n_events: int) -> float:
    return _timed(lambda: sum(1 for _ in synthetic_events(DAY, n_events)))


def time_validation(n_events: int) -> float:
    batches = list(synthetic_events(DAY, n_events))  # generated outside the timing
    validator = DayValidator(PLAYS_SCHEMA, DAY)
    try:
        return _timed(lambda: [validator.classify(batch) for batch in batches])
    finally:
        validator.close()


def measure_breakdown(n_events: int, repeat: int) -> Breakdown:
    generate = [time_generation(n_events) for _ in range(repeat)]
    validate = [time_validation(n_events) for _ in range(repeat)]
    return Breakdown(statistics.median(generate), statistics.median(validate))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _share(part: float, whole: float) -> str:
    return f"{part / whole:6.1%}" if whole > 0 else "   n/a"


def print_report(n_events: int, runs: list[IngestRun], baselines: list[float], breakdown: Breakdown) -> None:
    ingest = statistics.median(r.seconds for r in runs)
    baseline = statistics.median(baselines)
    ratio = ingest / baseline
    peak = max(r.peak_rss_mib for r in runs)
    after_imports = statistics.median(r.rss_after_imports_mib for r in runs)
    rest = ingest - breakdown.generate_seconds - breakdown.validate_seconds
    rows = runs[-1].rows_in_table

    def fmt_runs(values: list[float]) -> str:
        return ", ".join(f"{v:.2f}" for v in values)

    print(f"sonik_pipeline ingest benchmark: {n_events:,} events on {DAY}, {len(runs)} run(s), median")
    print(f"  ingest (end to end)  {ingest:7.2f} s   runs: {fmt_runs([r.seconds for r in runs])}")
    print(f"  pyarrow baseline     {baseline:7.2f} s   runs: {fmt_runs(baselines)}")
    print(f"  ratio                {ratio:7.2f} x   target <= {RATIO_TARGET}x        {_verdict(ratio <= RATIO_TARGET)}")
    print(
        f"  peak RSS (ingest)    {peak:7.0f} MiB after imports {after_imports:.0f} MiB "
        f"(+{peak - after_imports:.0f}), target < {PEAK_RSS_TARGET_MIB:.0f} MiB (1 GB)  "
        f"{_verdict(peak < PEAK_RSS_TARGET_MIB)}"
    )
    print(f"  peak RSS per run     {', '.join(f'{r.peak_rss_mib:.0f}' for r in runs)} MiB")
    print(f"  rows in music.plays  {rows:,} (expected {n_events:,}; {runs[-1].rows_rejected:,} rejected)")
    print(f"  throughput           {n_events / ingest:,.0f} events/s")
    print("  where ingest time goes (separate instrumented pass, median):")
    for label, seconds in (
        ("synthetic source", breakdown.generate_seconds),
        ("validation (classify)", breakdown.validate_seconds),
        ("rest: Parquet + commit", rest),
    ):
        print(f"    {label:<24}{seconds:7.2f} s  {_share(seconds, ingest)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events in the day (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="runs per timing; the median is reported")
    parser.add_argument(CHILD_FLAG, action="store_true", dest="child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.events < 1 or args.repeat < 1:
        parser.error("--events and --repeat must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.events)
        return 0

    catalogue()
    table = baseline_table(args.events)
    baselines = [time_baseline_write(table) for _ in range(args.repeat)]
    del table
    try:
        runs = [ingest_in_child(args.events) for _ in range(args.repeat)]
    except RuntimeError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    breakdown = measure_breakdown(args.events, args.repeat)
    print_report(args.events, runs, baselines, breakdown)

    wrong = [r.rows_in_table for r in runs if r.rows_in_table != args.events]
    if wrong:
        print(f"ERROR: music.plays holds {wrong[0]:,} rows, expected {args.events:,}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
