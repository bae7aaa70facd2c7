"""Concurrent writers through the REST catalog: its commit conflicts are retried, nothing is lost or doubled."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from benchmarks.concurrency_scenario import prepare, run_scenario
from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS
from sonik_pipeline_tests.real_servers.conftest import Lakehouse, SeaweedFS, module_lakehouse, set_environment

DAYS = ["2026-04-06", "2026-04-07", "2026-04-08"]  # one run each, all at once
SAME_DAY = "2026-04-09"  # two runs rewriting it at the same time
SMALL_FILE_DAYS = [dt.date(2026, 4, 1)]  # micro-batches, for the compaction looping alongside


@pytest.fixture(scope="module")
def rest_lakehouse(seaweedfs: SeaweedFS, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lakehouse]:
    with module_lakehouse("rest", seaweedfs, tmp_path_factory.mktemp("rest_concurrency")) as lakehouse:
        yield lakehouse


@pytest.mark.slow
def test_runs_of_different_and_of_the_same_day_at_once_lose_and_double_nothing(
    rest_lakehouse: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the REST lakehouse (its environment is what every run process inherits), with small files to compact
    set_environment(monkeypatch, {**rest_lakehouse.environment, "SONIK_SOURCE": "synthetic"})
    settings = Settings.from_env()
    prepare(settings, SMALL_FILE_DAYS)

    # When a run per day and two runs of one same day write at once, each its own process, while compaction loops
    result = run_scenario(settings, DAYS, same_day_twice=SAME_DAY)

    # Then no run failed (whatever commit conflicts they met were retried: test_rest_catalog.py makes one happen
    # for certain), and every day holds its events exactly once
    print(
        f"\n{result.ingest_runs} runs, {result.retries} retried conflicts, {result.seconds:.1f}s, {result.compaction}"
    )
    assert result.failures == []
    plays = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse).load_table(PLAYS.identifier)
    for day in [*DAYS, SAME_DAY]:
        ids = plays.scan(row_filter=played_at_filter(dt.date.fromisoformat(day))).to_arrow().column("play_id")
        assert (len(ids), len(set(ids.to_pylist()))) == (SMALL_DAY_EVENTS, SMALL_DAY_EVENTS), day
    small = plays.scan(row_filter=played_at_filter(SMALL_FILE_DAYS[0])).count()
    assert small == 600  # prepare's 6 batches of 100, compacted or not
