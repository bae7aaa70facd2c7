"""An exact set of 64-bit hashes, 8 bytes an id, for the play_ids of a day however large it is.

A day's ingest must reject every play_id it has seen before, for 100 million ids and more, without
per-event Python objects and without memory that doubles when the set grows. The set is a log-
structured pair of sorted NumPy arrays: recent batches as small sorted runs, and the rest in 256 sorted
buckets by the hash's top byte. A lookup is a binary search per run and bucket (vectorised); runs are
merged into the buckets one bucket at a time once they hold a quarter as much as the buckets, so the
extra memory of a merge is one bucket, and each id is copied O(log n) times over the day.
"""

from __future__ import annotations

import numpy as np

BUCKET_BITS = 8
MIN_RECENT = 1 << 21  # ids kept as runs before the first merge (16 MiB)
MAX_RUNS = 4  # runs are compacted into one beyond this, so a lookup searches only a few


def _member(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query, whether it is in ``sorted_values``."""
    if not len(sorted_values) or not len(queries):
        return np.zeros(len(queries), dtype=bool)
    index = np.minimum(np.searchsorted(sorted_values, queries), len(sorted_values) - 1)
    return sorted_values[index] == queries


class HashSet64:
    """Exact membership of uint64 hashes, about 8 bytes each; ``add`` only takes hashes not yet in it."""

    def __init__(self) -> None:
        self._buckets = [np.empty(0, dtype=np.uint64) for _ in range(1 << BUCKET_BITS)]
        self._runs: list[np.ndarray] = []
        self._in_buckets = 0
        self._in_runs = 0

    def __len__(self) -> int:
        return self._in_buckets + self._in_runs

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self._buckets) + sum(r.nbytes for r in self._runs)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        """A boolean per hash: already in the set."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        order = np.argsort(hashes, kind="stable")
        found_sorted = self.contains_sorted(hashes[order])
        found = np.empty(len(hashes), dtype=bool)
        found[order] = found_sorted
        return found

    def contains_sorted(self, hashes: np.ndarray) -> np.ndarray:
        """``contains`` for hashes already in ascending order: the searches then walk memory in order."""
        found = np.zeros(len(hashes), dtype=bool)
        for run in self._runs:
            found |= _member(run, hashes)
        if self._in_buckets and len(hashes):
            bucket_of = hashes >> np.uint64(64 - BUCKET_BITS)
            bounds = np.searchsorted(bucket_of, np.arange((1 << BUCKET_BITS) + 1, dtype=np.uint64))
            for bucket, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
                if end > start and len(self._buckets[bucket]):
                    found[start:end] |= _member(self._buckets[bucket], hashes[start:end])
        return found

    def add(self, hashes: np.ndarray, already_sorted: bool = False) -> None:
        """Add hashes known to be new and distinct (``contains`` was False for each, and no repeats)."""
        if not len(hashes):
            return
        hashes = np.asarray(hashes, dtype=np.uint64)
        self._runs.append(hashes if already_sorted else np.sort(hashes))
        self._in_runs += len(hashes)
        if self._in_runs > max(MIN_RECENT, self._in_buckets // 4):
            self._merge_runs_into_buckets()
        elif len(self._runs) > MAX_RUNS:
            self._runs = [np.sort(np.concatenate(self._runs))]

    def _merge_runs_into_buckets(self) -> None:
        recent = np.sort(np.concatenate(self._runs))
        self._runs = []
        bucket_of = (recent >> np.uint64(64 - BUCKET_BITS)).astype(np.intp)
        bounds = np.searchsorted(bucket_of, np.arange((1 << BUCKET_BITS) + 1))
        for bucket, (start, end) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if end > start:  # one bucket at a time: the merge needs one bucket's worth of extra memory
                merged = np.concatenate([self._buckets[bucket], recent[start:end]])
                merged.sort(kind="stable")  # two sorted runs: a linear merge
                self._buckets[bucket] = merged
        self._in_buckets += self._in_runs
        self._in_runs = 0
