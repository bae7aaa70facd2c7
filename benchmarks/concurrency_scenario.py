"""The concurrency scenario of benchmarks/concurrency.py, which sonik_pipeline_tests/test_concurrency.py also runs.

Eight Dagster runs, each its own process, write eight different days of plays at once while a
compaction loops over the same table; optionally two more runs rewrite one day at the same time.
Every run counts the commit conflicts it rode out (PyIceberg's retries and our re-plans).
"""

from __future__ import annotations

import datetime as dt
import logging
import multiprocessing
import time
from dataclasses import dataclass, field

from sonik_pipeline.settings import CATALOG_NAME, Settings

RETRY_MESSAGES = ("Commit failed due to a concurrent update", "planning the replace again")


class _RetryCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if any(m in record.getMessage() for m in RETRY_MESSAGES):
            self.count += 1


def _count_retries() -> _RetryCounter:
    counter = _RetryCounter()
    for name in ("pyiceberg", "sonik_pipeline"):
        logging.getLogger(name).addHandler(counter)
        logging.getLogger(name).setLevel(logging.INFO)
    return counter


def _ingest_run(settings: Settings, day: str, results) -> None:
    """One Dagster run of plays_job for one day, in its own process."""
    import dagster as dg

    from sonik_pipeline.definitions import build_definitions

    counter = _count_retries()
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("plays_job").execute_in_process(
            partition_key=day, instance=instance, raise_on_error=False
        )
    error = None if result.success else _error_chain(result.failure_data_for_node("plays").error)
    results.put(("ingest", day, result.success, counter.count, error))


def _error_chain(error) -> str:
    """The step's error with its causes: Dagster's wrapper names the op, the cause says what went wrong."""
    parts = []
    while error is not None and len(parts) < 4:
        parts.append(f"{error.cls_name}: {error.message.strip()}")
        error = error.cause
    return " <- ".join(parts)[-1500:]


def _compaction_loop(settings: Settings, stop, results) -> None:
    from sonik_pipeline.lakehouse.tables.catalog import open_catalog
    from sonik_pipeline.maintenance.compaction import CompactionOptions, compact_table

    counter = _count_retries()
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    rounds, rewritten, error = 0, 0, None
    try:
        while not stop.is_set() or rounds == 0:
            report = compact_table(catalog.load_table("music.plays"), CompactionOptions(min_input_files=2))
            rewritten += len(report.partitions)
            rounds += 1
    except Exception as exc:  # reported to the parent
        error = repr(exc)[:500]
    results.put(("compaction", f"{rounds} rounds, {rewritten} partitions", error is None, counter.count, error))


@dataclass
class ScenarioResult:
    seconds: float
    ingest_runs: int
    failures: list[str] = field(default_factory=list)
    retries: int = 0
    compaction: str = ""


def prepare(settings: Settings, small_days: list[dt.date], batches: int = 6) -> None:
    """A table with some days written as micro-batches, so compaction has work while writers run."""
    from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
    from sonik_pipeline.lakehouse.tables.catalog import open_catalog
    from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table

    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    table, _ = ensure_table(catalog, PLAYS)
    for day in small_days:
        for batch in range(batches):
            table.append(synthetic_batch(day, 100, batch=batch, seed=99).cast(table.schema().as_arrow()))


def run_scenario(settings: Settings, days: list[str], same_day_twice: str | None = None) -> ScenarioResult:
    """Launch one run per day (and two for ``same_day_twice``) at once, with compaction looping alongside."""
    ctx = multiprocessing.get_context("spawn")
    results, stop = ctx.Queue(), ctx.Event()
    jobs = [*days, *([same_day_twice] * 2 if same_day_twice else [])]
    started = time.monotonic()
    compactor = ctx.Process(target=_compaction_loop, args=(settings, stop, results))
    compactor.start()
    writers = [ctx.Process(target=_ingest_run, args=(settings, day, results)) for day in jobs]
    for writer in writers:
        writer.start()
    outcomes = [results.get(timeout=600) for _ in writers]
    stop.set()
    outcomes.append(results.get(timeout=600))
    for process in [*writers, compactor]:
        process.join(60)
    result = ScenarioResult(seconds=time.monotonic() - started, ingest_runs=len(writers))
    for kind, what, ok, retries, error in outcomes:
        result.retries += retries
        if kind == "compaction":
            result.compaction = what
        if not ok:
            result.failures.append(f"{kind} {what}: {error}")
    return result
