"""Arrow's allocator for the pipeline's heavy work: memory a batch frees goes back to the system soon after.

PyArrow's default allocator (mimalloc) keeps freed pages to reuse them, so a process's resident memory
swings by tens of MiB with thread timing, and a long day's peak is the highest of many such swings: a
10M-event ingest peaked at 550-575 MiB, growing with the day for no reason but luck. jemalloc gives
freed pages back once they have lain unused for ``DECAY_MS``. A decay of 0 (back at once) peaked lowest
(503-511 MiB, 2026-12-01), but every batch then took fresh pages from the system again: measured on
2026-12-07 (10M-event days, 2 cores), a decay of 100 ms ingests Parquet landing files in 5.2 s instead
of 7.3 s (8.8 CPU-seconds instead of 11.1) and JSON Lines in 10.5 s instead of 12.0 s, for 0-40 MiB more
at the peak: the next batch reuses the pages the last one freed.
"""

from __future__ import annotations

import functools
import logging
import os

import pyarrow as pa

log = logging.getLogger(__name__)

USER_CHOICE = "ARROW_DEFAULT_MEMORY_POOL"  # Arrow's own variable: a user who sets it keeps their pool
# How long jemalloc keeps a freed page for reuse before giving it back: longer than a batch takes.
DECAY_MS = 100


@functools.cache
def release_freed_memory_promptly() -> str:
    """Make jemalloc with a short decay Arrow's default pool in this process, once; return the pool's name.

    Left alone when the user chose a pool through ``ARROW_DEFAULT_MEMORY_POOL`` or PyArrow was built
    without jemalloc (Windows wheels): Arrow's default is then used as before.
    """
    if os.environ.get(USER_CHOICE):
        return pa.default_memory_pool().backend_name
    try:
        pool = pa.jemalloc_memory_pool()
    except NotImplementedError:
        return pa.default_memory_pool().backend_name
    pa.jemalloc_set_decay_ms(DECAY_MS)  # before the pool's first allocation: it applies to arenas made after it
    pa.set_memory_pool(pool)
    log.debug("Arrow memory pool: jemalloc, freed pages returned after %d ms", DECAY_MS)
    return pool.backend_name
