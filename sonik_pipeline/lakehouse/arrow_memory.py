"""Arrow's allocator for the pipeline's heavy work: memory a batch frees goes back to the system at once.

PyArrow's default allocator (mimalloc) keeps freed pages to reuse them, so a process's resident memory
swings by tens of MiB with thread timing, and a long day's peak is the highest of many such swings: a
10M-event ingest peaked at 550-575 MiB, growing with the day for no reason but luck. jemalloc with a
decay of 0 (Arrow's own documented setting for giving memory back right away) peaks at 503-511 MiB,
the same every run, at the same speed (``benchmarks/scale.py``, 2026-12-01).
"""

from __future__ import annotations

import functools
import logging
import os

import pyarrow as pa

log = logging.getLogger(__name__)

USER_CHOICE = "ARROW_DEFAULT_MEMORY_POOL"  # Arrow's own variable: a user who sets it keeps their pool


@functools.cache
def release_freed_memory_promptly() -> str:
    """Make jemalloc with decay 0 Arrow's default pool in this process, once; return the pool's name.

    Left alone when the user chose a pool through ``ARROW_DEFAULT_MEMORY_POOL`` or PyArrow was built
    without jemalloc (Windows wheels): Arrow's default is then used as before.
    """
    if os.environ.get(USER_CHOICE):
        return pa.default_memory_pool().backend_name
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool().backend_name
    pa.jemalloc_set_decay_ms(0)  # before the pool's first allocation: it applies to arenas made after it
    pa.set_memory_pool(pool)
    log.debug("Arrow memory pool: jemalloc, freed pages returned at once")
    return pool.backend_name
