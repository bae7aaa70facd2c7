"""Benchmark: concurrent runs and maintenance losing nothing, many times over, on both catalogs.

Each iteration, on a fresh lakehouse: 8 Dagster runs (separate processes) write 8 different days of
plays at once, 2 more rewrite one day at the same time, and compaction loops over the same table.
An iteration passes when no run failed and every day holds exactly its rows (the rewritten day one
copy). Printed per catalog: iterations passed, runs, conflicts retried, seconds (median and max).

Targets: 20 of 20 iterations pass on the SQLite catalog and on PostgreSQL.

Usage: ``.venv/bin/python benchmarks/concurrency.py [--iterations 20] [--events 2000]``; the
PostgreSQL variant runs when ``SONIK_TEST_POSTGRES_URL`` is set (a database per iteration).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: benchmarks/ is importable

from benchmarks.concurrency_scenario import prepare, run_scenario
from sonik_pipeline.lakehouse.days import parse_day, played_at_filter
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings


@contextlib.contextmanager
def private_postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database on the server for one iteration, dropped after (psycopg URL for the catalog)."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    name = f"sonik_bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(server_url).set(drivername="postgresql+psycopg", database=name).render_as_string(False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


DAYS = [f"2026-04-{d:02d}" for d in range(11, 19)]
SAME_DAY = "2026-04-20"


@contextlib.contextmanager
def lakehouse(backend: str, events: int) -> Iterator[Settings]:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"SONIK_HOME": tmp, "SONIK_EVENTS_PER_DAY": str(events)}
        if backend == "postgres":
            with private_postgres_database(os.environ["SONIK_TEST_POSTGRES_URL"]) as url:
                yield Settings.from_env({**env, "SONIK_CATALOG_URI": url}, cwd=Path(tmp))
        else:
            yield Settings.from_env(env, cwd=Path(tmp))


def iteration(backend: str, events: int) -> tuple[bool, int, int, float, list[str]]:
    with lakehouse(backend, events) as settings:
        prepare(settings, [dt.date(2026, 4, 1)])
        result = run_scenario(settings, DAYS, same_day_twice=SAME_DAY)
        catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
        table = catalog.load_table("music.plays")
        counts = {d: table.scan(row_filter=played_at_filter(parse_day(d))).count() for d in [*DAYS, SAME_DAY]}
        wrong = [f"{d}: {n} rows" for d, n in counts.items() if n != events]
        return (
            not (result.failures or wrong),
            result.ingest_runs,
            result.retries,
            result.seconds,
            result.failures + wrong,
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--events", type=int, default=2_000, help="events per day")
    args = parser.parse_args()
    backends = ["sqlite"] + (["postgres"] if os.environ.get("SONIK_TEST_POSTGRES_URL") else [])
    if "postgres" not in backends:
        print("SONIK_TEST_POSTGRES_URL is not set: PostgreSQL skipped", file=sys.stderr)
    ok_everywhere = True
    for backend in backends:
        passed, runs, retries, seconds = 0, 0, 0, []
        for i in range(args.iterations):
            ok, n, r, s, problems = iteration(backend, args.events)
            passed += ok
            runs += n
            retries += r
            seconds.append(s)
            print(f"  {backend} #{i + 1:>2}: {'ok ' if ok else 'FAIL'} {n} runs, {r} conflicts retried, {s:.1f}s"
                  + (f"  {problems}" if problems else ""), flush=True)  # fmt: skip
        ok_everywhere &= passed == args.iterations
        print(
            f"{backend:<8} {passed}/{args.iterations} iterations passed  {runs} runs  {retries} conflicts retried  "
            f"{statistics.median(seconds):.1f}s median, {max(seconds):.1f}s max per iteration  "
            f"{'PASS' if passed == args.iterations else 'FAIL'}"
        )
    return 0 if ok_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
