"""Concurrent runs and maintenance never lose a commit, on both catalogs."""

import datetime as dt

import pytest
from pyiceberg.catalog import Catalog

from benchmarks.concurrency_scenario import prepare, run_scenario
from sonik_pipeline.lakehouse.days import parse_day, played_at_filter
from sonik_pipeline.settings import Settings
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS

DAYS = [f"2026-04-{d:02d}" for d in range(11, 19)]
SMALL_FILE_DAYS = [dt.date(2026, 4, 1), dt.date(2026, 4, 2)]


def _count(catalog: Catalog, day: str) -> int:
    return catalog.load_table("music.plays").scan(row_filter=played_at_filter(parse_day(day))).count()


@pytest.mark.slow
def test_eight_runs_and_a_compaction_at_once_lose_nothing(settings: Settings, catalog: Catalog) -> None:
    # Given days of small files for compaction to chew on
    prepare(settings, SMALL_FILE_DAYS)

    # When 8 runs write 8 days at once, two more rewrite one day at once, and compaction loops meanwhile
    result = run_scenario(settings, DAYS, same_day_twice="2026-04-20")

    # Then no run failed, every day holds exactly its rows, and the rewritten day exactly one copy
    print(
        f"\n{result.ingest_runs} runs, {result.retries} retried conflicts, {result.seconds:.1f}s, {result.compaction}"
    )
    assert result.failures == []
    assert [_count(catalog, d) for d in DAYS] == [SMALL_DAY_EVENTS] * len(DAYS)
    assert _count(catalog, "2026-04-20") == SMALL_DAY_EVENTS
    ids = catalog.load_table("music.plays").scan(row_filter=played_at_filter(dt.date(2026, 4, 20))).to_arrow()
    assert len(set(ids.column("play_id").to_pylist())) == SMALL_DAY_EVENTS
    assert [_count(catalog, str(d)) for d in SMALL_FILE_DAYS] == [600, 600]
