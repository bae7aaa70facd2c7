"""Benchmark: the ``sonik`` command's answer time on a small demo lakehouse (issue 27, item 2).

Setup, in a fresh temporary ``SONIK_HOME`` (SQLite catalog, ``file://`` warehouse; ``--home DIR`` reuses a
lakehouse built before): ``--days`` days (default 7, ending on ``LAST_DAY``) of ``--events`` synthetic
events a day (default 10,000), built with the project's own code as the daily runs build it:
``ingest_day`` a day at a time (one commit a day, so the tables have a history), then ``run_marts``
over every day with every daily and rolling mart (one commit per mart). Every table of the lakehouse
then exists, as after ``make demo``.

What it measures, each command as a subprocess started the way a user's shell starts ``sonik``
(``python -m sonik_pipeline.cli``, the console script's own entry point, with this venv's python):
the wall time from start to exit, median of ``--repeat`` runs (default 5) after one warm-up, and the
largest peak RSS of those runs (``resource.getrusage(RUSAGE_CHILDREN)`` read after each run; the
maximum only grows, so each run is also measured alone in a child that reports its own figure):

* ``sonik --help``
* ``sonik tables``
* ``sonik sql "SELECT count(*) FROM music.plays"``

against two baselines measured in the same run, alternated with them: ``python -c pass`` (the
interpreter's own start-up, which no command can beat) and the libraries' floor, ``python -c "import
pyiceberg.catalog.sql, pyiceberg.io.pyarrow, duckdb"``: what opening the catalog and reading any table's
metadata (PyIceberg's PyArrow FileIO, which imports PyArrow's datasets and so pandas) and querying it
with DuckDB import at least, before any work. A command's time above the floor is the project's own. A
command can also come in under it: ``sonik`` collects garbage rarely and skips the interpreter's last
collection at exit (``few_collections`` in ``sonik_pipeline/cli/__init__.py``), which the floor's bare
imports, at CPython's defaults, do not.

Targets: ``--help`` <= 0.5 s, ``tables`` <= 1.5 s, ``sql`` <= 1.5 s (medians).

The exit code is 0 whether or not the targets are met (this is a report); it is non-zero if the build
fails, a command exits non-zero, or ``sonik sql`` does not count the events ingested.

Usage: ``nice -n 10 .venv/bin/python benchmarks/cli.py [--days 7] [--events 10000] [--repeat 5]
[--home DIR] [--keep]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

LAST_DAY = dt.date(2026, 4, 20)
DEFAULT_DAYS = 7
DEFAULT_EVENTS = 10_000
DEFAULT_REPEAT = 5
RUN_ID = "bench-cli"

HELP_TARGET_S = 0.5
TABLES_TARGET_S = 1.5
SQL_TARGET_S = 1.5
COUNT_QUERY = "SELECT count(*) FROM music.plays"
FLOOR = "import pyiceberg.catalog.sql, pyiceberg.io.pyarrow, duckdb"  # what reading a table imports at least

# Runs one command and prints its wall seconds and its own peak RSS (KiB) as JSON: the figure is the
# child's alone, whatever ran before in the benchmark's process.
_TIMER = """
import json, resource, subprocess, sys, time
started = time.monotonic()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
seconds = time.monotonic() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"seconds": seconds, "peak_kib": peak, "code": done.returncode,
                  "stdout": done.stdout, "stderr": done.stderr}))
"""


def say(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The demo lakehouse
# ---------------------------------------------------------------------------------------------


def build_lakehouse(home: Path, days: int, events: int) -> int:
    """Ingest ``days`` synthetic days one commit each, then every mart over them; returns the events ingested."""
    import duckdb

    from sonik_pipeline.lakehouse.days import days_between
    from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
    from sonik_pipeline.lakehouse.ingest.run import ingest_day
    from sonik_pipeline.lakehouse.marts.queries import DAILY_MARTS, ROLLING_MARTS
    from sonik_pipeline.lakehouse.marts.run import MartOptions, run_marts
    from sonik_pipeline.lakehouse.sources.events import ArrowRows
    from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
    from sonik_pipeline.lakehouse.tables.catalog import open_catalog
    from sonik_pipeline.settings import CATALOG_NAME

    catalog = open_catalog(CATALOG_NAME, f"sqlite:///{home / 'catalog.db'}", (home / "warehouse").as_uri())
    span = days_between(LAST_DAY - dt.timedelta(days=days - 1), LAST_DAY)
    for day in span:
        ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, events), "bench")], progress=lambda _: None)
    con = load_iceberg(duckdb.connect())
    con.execute("SET TimeZone = 'UTC'")
    marts = [*DAILY_MARTS, *ROLLING_MARTS]
    list(run_marts(catalog, con, marts, span, MartOptions(run_id=RUN_ID), progress=lambda _: None))
    return days * events


def plays_in(home: Path) -> int:
    from sonik_pipeline.lakehouse.tables.catalog import open_catalog
    from sonik_pipeline.settings import CATALOG_NAME

    catalog = open_catalog(CATALOG_NAME, f"sqlite:///{home / 'catalog.db'}", (home / "warehouse").as_uri())
    summary = catalog.load_table("music.plays").current_snapshot().summary
    return int(summary.get("total-records") or 0)


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


@dataclass
class Timed:
    name: str
    command: list[str]
    target: float | None
    seconds: list[float]
    peak_kib: int = 0
    last_stdout: str = ""
    failed: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def run_once(command: list[str], env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _TIMER, *command], env=env, stdout=subprocess.PIPE, text=True, check=True
    )
    return json.loads(done.stdout)


def measure(commands: list[Timed], env: dict[str, str], repeat: int) -> None:
    """Each command once to warm up, then ``repeat`` rounds of all of them in turn (a drift slows all alike)."""
    for timed in commands:
        run_once(timed.command, env)
    for round_ in range(repeat):
        for timed in commands:
            figures = run_once(timed.command, env)
            timed.seconds.append(figures["seconds"])
            timed.peak_kib = max(timed.peak_kib, figures["peak_kib"])
            timed.last_stdout = figures["stdout"]
            if figures["code"] != 0 and not timed.failed:
                timed.failed = f"exit {figures['code']}: {figures['stderr'].strip()[-500:]}"
        say(f"round {round_ + 1} of {repeat}")


def _verdict(timed: Timed) -> str:
    if timed.target is None:
        return ""
    return "met" if timed.median <= timed.target else "NOT met"


def print_report(args: argparse.Namespace, commands: list[Timed], baseline: Timed, floor: Timed) -> None:
    print(
        f"\nsonik on a {args.days}-day demo lakehouse ({args.events:,} events a day, every mart), "
        f"median of {args.repeat} runs as subprocesses\n"
    )
    header = (
        f"{'command':<72}  {'median s':>8}  {'min s':>6}  {'max s':>6}  {'peak MiB':>8}  {'vs python':>9}  "
        f"{'over floor s':>12}  target"
    )
    print(header)
    print("-" * len(header))
    for timed in commands:
        target = f"<= {timed.target} s {_verdict(timed)}" if timed.target is not None else "(baseline)"
        print(
            f"{timed.name:<72}  {timed.median:>8.3f}  {min(timed.seconds):>6.3f}  {max(timed.seconds):>6.3f}  "
            f"{timed.peak_kib / 1024:>8.0f}  {timed.median / baseline.median:>8.1f}x  "
            f"{timed.median - floor.median:>+12.3f}  {target}"
        )
    print(
        f"\n(vs python: against `{baseline.name}`, the interpreter's own start-up; over floor: the median above the "
        "libraries' import floor; both measured in the same rounds)"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help="days in the demo lakehouse (default 7)")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events a day (default 10,000)")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT, help="timed runs per command (default 5)")
    parser.add_argument("--home", type=Path, help="a SONIK_HOME built before by --keep: measure it, build nothing")
    parser.add_argument("--keep", action="store_true", help="keep the lakehouse (its path is printed)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    home = args.home or Path(tempfile.mkdtemp(prefix="sonik-bench-cli-"))
    try:
        if args.home is None:
            started = time.monotonic()
            expected = build_lakehouse(home, args.days, args.events)
            say(f"demo lakehouse built in {time.monotonic() - started:.1f}s at {home}")
        else:
            expected = plays_in(home)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SONIK_", "PYICEBERG_"))}
        env["SONIK_HOME"] = str(home)
        sonik = [sys.executable, "-m", "sonik_pipeline.cli"]
        baseline = Timed("python -c pass", [sys.executable, "-c", "pass"], None, [])
        libraries = Timed(f"python -c '{FLOOR}'", [sys.executable, "-c", FLOOR], None, [])
        commands = [
            Timed("sonik --help", [*sonik, "--help"], HELP_TARGET_S, []),
            Timed("sonik tables", [*sonik, "tables"], TABLES_TARGET_S, []),
            Timed(f'sonik sql "{COUNT_QUERY}"', [*sonik, "sql", COUNT_QUERY, "--format", "csv"], SQL_TARGET_S, []),
        ]
        measure([baseline, libraries, *commands], env, args.repeat)
        print_report(args, [baseline, libraries, *commands], baseline, libraries)
        failed = [f"{t.name}: {t.failed}" for t in commands if t.failed]
        counted = commands[-1].last_stdout.strip().splitlines()[-1:]
        if counted != [str(expected)]:
            failed.append(f"sonik sql counted {counted} plays, expected {expected}")
        for problem in failed:
            print(f"\n{problem}", file=sys.stderr)
        return 1 if failed else 0
    finally:
        if args.keep or args.home:
            print(f"\nlakehouse at {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
