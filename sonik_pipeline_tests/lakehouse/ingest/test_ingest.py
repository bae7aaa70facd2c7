import datetime as dt
import threading
import time
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.ingest.run import DayWouldShrink, WriteBehind, ingest_day, prepared_ahead, shrink_guard
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch, synthetic_events
from sonik_pipeline.lakehouse.tables.definitions import PLAYS
from sonik_pipeline.lakehouse.tables.writes import FileStager

DAY = dt.date(2026, 4, 20)


@pytest.mark.parametrize(("rows_now", "rows_new"), [(0, 0), (0, 5), (1_000, 900), (1_000, 1_000), (1_000, 5_000)])
def test_the_shrink_guard_allows_growth_and_drops_up_to_the_share(rows_now: int, rows_new: int) -> None:
    shrink_guard(DAY, 0.10)(rows_now, rows_new)


def test_the_shrink_guard_refuses_a_bigger_drop_and_says_how_many_rows() -> None:
    with pytest.raises(DayWouldShrink, match=r"would replace 1,000 rows with 899 \(101 fewer, 10.1%\)"):
        shrink_guard(DAY, 0.10)(1_000, 899)


def test_a_share_of_one_allows_emptying_the_day() -> None:
    shrink_guard(DAY, 1.0)(1_000, 0)


def test_write_behind_runs_one_write_at_a_time_in_order() -> None:
    running, order = [], []
    lock = threading.Lock()

    def write(n: int) -> None:
        with lock:
            running.append(n)
            assert len(running) == 1, f"writes {running} overlapped"
        time.sleep(0.01)
        order.append(n)
        with lock:
            running.remove(n)

    with WriteBehind() as writer:
        for n in range(5):
            writer.submit(write, n)
            # the previous writes finished before this one was handed over (this one may have finished too)
            assert order[:n] == list(range(n))

    assert order == [0, 1, 2, 3, 4]  # leaving the block waited for the last one


def test_batches_are_prepared_several_at_once_and_come_back_in_order() -> None:
    at_once, running = [], set()
    lock = threading.Lock()

    def prepare(n: int) -> int:
        with lock:
            running.add(n)
            at_once.append(len(running))
        time.sleep(0.02 if n % 3 == 0 else 0.001)  # some finish before earlier ones
        with lock:
            running.discard(n)
        return n * 10

    assert list(prepared_ahead(range(12), prepare, workers=3)) == [n * 10 for n in range(12)]
    assert max(at_once) == 3  # never more than the workers, and they did overlap


def test_items_that_gain_nothing_from_preparing_ahead_are_prepared_one_at_a_time() -> None:
    """``at_once`` bounds the items in flight by the latest item: Parquet rows one at a time, in order."""
    in_flight, running = {}, set()
    lock = threading.Lock()

    def prepare(n: int) -> int:
        with lock:
            running.add(n)
            in_flight[n] = len(running)
        time.sleep(0.005)
        with lock:
            running.discard(n)
        return n

    def at_once(n: int) -> int:
        return 1 if n >= 6 else 3  # the first six may overlap, the last six may not

    assert list(prepared_ahead(range(12), prepare, workers=3, at_once=at_once)) == list(range(12))
    assert max(in_flight[n] for n in range(6)) > 1
    assert all(in_flight[n] == 1 for n in range(6, 12))


def test_a_failed_preparation_raises_at_its_batch_after_the_ones_before() -> None:
    def prepare(n: int) -> int:
        if n == 4:
            raise ValueError("bad batch 4")
        return n

    got = []
    with pytest.raises(ValueError, match="bad batch 4"):
        for n in prepared_ahead(range(10), prepare, workers=2):
            got.append(n)
    assert got == [0, 1, 2, 3]


def test_a_failed_write_raises_in_the_caller_at_the_next_submit() -> None:
    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), WriteBehind() as writer:
        writer.submit(fail)
        writer.submit(lambda: None)


def test_a_failed_write_of_the_last_batch_raises_when_the_block_ends() -> None:
    def fail() -> None:
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"), WriteBehind() as writer:
        writer.submit(fail)


def _warehouse_files(home: Path) -> set[Path]:
    return set((home / "warehouse").rglob("*.parquet"))


def test_a_write_failing_mid_day_leaves_the_day_and_no_staged_file_behind(
    catalog: Catalog, sonik_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a day in plays, and a re-ingest in several batches whose third write fails
    ingest_day(catalog, DAY, synthetic_events(DAY, 12_000))
    plays = catalog.load_table(PLAYS.identifier)
    snapshot, rows, files = plays.current_snapshot().snapshot_id, plays.scan().count(), _warehouse_files(sonik_home)
    batches = [ArrowRows(synthetic_batch(DAY, 4_000, seed=1, batch=b), f"synthetic://{b}") for b in range(5)]
    add, calls = FileStager.add, []

    def failing_add(self: FileStager, batch) -> None:
        calls.append(threading.current_thread().name)
        if len(calls) == 5:  # plays, rejects, plays, rejects, then plays of the third batch
            raise OSError("No space left on device")
        add(self, batch)

    monkeypatch.setattr(FileStager, "add", failing_add)

    # When the day is ingested again, then the error reaches the caller
    with pytest.raises(OSError, match="No space left on device"):
        ingest_day(catalog, DAY, batches)

    # And the writes ran in the write-behind thread, the day is as it was, and no staged file is left
    assert all(name.startswith("sonik-write-behind") for name in calls)
    plays = catalog.load_table(PLAYS.identifier)
    assert (plays.current_snapshot().snapshot_id, plays.scan().count()) == (snapshot, rows)
    assert _warehouse_files(sonik_home) == files
