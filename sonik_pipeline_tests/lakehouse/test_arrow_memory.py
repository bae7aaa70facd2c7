"""The Arrow pool for heavy work: jemalloc that returns freed memory at once, unless the user chose a pool."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from sonik_pipeline.lakehouse import arrow_memory
from sonik_pipeline.lakehouse.ingest.run import PREVIEW_ROWS, ingest_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_events

DAY = dt.date(2026, 3, 14)


def _jemalloc_available() -> bool:
    try:
        pa.jemalloc_memory_pool()
    except NotImplementedError:
        return False
    return True


@pytest.fixture
def restore_pool():
    before = pa.default_memory_pool()
    yield before
    pa.set_memory_pool(before)


@pytest.mark.skipif(not _jemalloc_available(), reason="this PyArrow was built without jemalloc")
def test_heavy_work_allocates_from_jemalloc_and_gives_freed_memory_back(restore_pool, monkeypatch):
    monkeypatch.delenv(arrow_memory.USER_CHOICE, raising=False)
    pa.set_memory_pool(pa.system_memory_pool())

    assert arrow_memory.release_freed_memory_promptly.__wrapped__() == "jemalloc"

    assert pa.default_memory_pool().backend_name == "jemalloc"
    pool = pa.default_memory_pool()
    before = pool.bytes_allocated()
    data = pa.array(range(1_000_000), pa.int64())  # allocated from the new default
    assert pool.bytes_allocated() >= before + data.nbytes
    del data
    assert pool.bytes_allocated() == before


def test_a_pool_the_user_chose_is_kept(restore_pool, monkeypatch):
    monkeypatch.setenv(arrow_memory.USER_CHOICE, "system")
    pa.set_memory_pool(pa.system_memory_pool())

    assert arrow_memory.release_freed_memory_promptly.__wrapped__() == "system"
    assert pa.default_memory_pool().backend_name == "system"


@pytest.mark.skipif(not _jemalloc_available(), reason="this PyArrow was built without jemalloc")
def test_an_ingest_switches_the_pool_and_its_rows_come_from_it(restore_pool, monkeypatch, catalog):
    monkeypatch.delenv(arrow_memory.USER_CHOICE, raising=False)
    pa.set_memory_pool(pa.system_memory_pool())
    arrow_memory.release_freed_memory_promptly.cache_clear()

    result = ingest_day(catalog, DAY, synthetic_events(DAY, 3_000))

    assert pa.default_memory_pool().backend_name == "jemalloc"
    assert result.rows_written == 3_000
    assert result.preview.num_rows == PREVIEW_ROWS
    assert arrow_memory.release_freed_memory_promptly() == "jemalloc"  # cached: switched once per process
