"""An exact set of 64-bit hashes, 8 bytes an id, for the play_ids of a day however large it is.

A day's ingest must reject every play_id it has seen before, for 100 million ids and more, without
per-event Python objects and without memory spikes when the set grows. The set is split by the hash's
top 6 bits into 64 groups; each group is one sorted NumPy array plus a few recent sorted runs. A lookup
is a binary search per array and run (vectorised, one call per group). A group's runs are merged into its
array once they hold a quarter as much, so each id is copied O(log n) times over the day, and a merge
needs one group's worth of extra memory (1/64 of the set), not a copy of the whole set. Every merge is
of sorted runs (timsort finds them), so it costs linear time, not a full sort.

Most lookups never search: a bit per hash prefix (16 MiB, whatever the day) says which prefixes hold an
id, and an id whose prefix holds none is new. At 10M ids the bits are 7% set, so 93% of a batch is
answered by one bit each; a day's lookups took 1.8 s of searching without them, on the thread that
orders the day's batches.
"""

from __future__ import annotations

import mmap

import numpy as np

GROUP_BITS = 6  # 64 groups by the hash's top 6 bits, each merged on its own
MIN_RECENT = 1 << 21  # ids kept as runs (in all groups together) before a group's first merge (16 MiB)
MAX_RUNS = 2  # a group's runs are merged into one beyond this, so a lookup searches only a few
PREFIX_BITS = 27  # the prefixes the filter has a bit for: 2**27 bits, 16 MiB

_GROUPS = 1 << GROUP_BITS


def _member(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """For each query, whether it is in ``sorted_values``."""
    if not len(sorted_values) or not len(queries):
        return np.zeros(len(queries), dtype=bool)
    index = np.minimum(np.searchsorted(sorted_values, queries), len(sorted_values) - 1)
    return sorted_values[index] == queries


def _group_bounds(sorted_hashes: np.ndarray) -> np.ndarray:
    """Where each group's hashes start in ``sorted_hashes`` (``_GROUPS + 1`` offsets)."""
    top = sorted_hashes >> np.uint64(64 - GROUP_BITS)
    return np.searchsorted(top, np.arange(_GROUPS + 1, dtype=np.uint64))


def _allocate(n: int) -> np.ndarray:
    """A uint64 array in its own anonymous memory map (zeroed by the system), given back to it when dropped.

    Merged arrays are replaced by bigger ones all day; as heap blocks they would leave holes that the
    batches' small arrays then fragment, and the process's memory would grow by more than the ids.
    """
    return np.frombuffer(mmap.mmap(-1, n * 8), dtype=np.uint64) if n else np.empty(0, dtype=np.uint64)


def _merge_sorted(runs: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    merged = np.concatenate(runs, out=out)
    runs.clear()  # the inputs go before the merge, so it holds one copy of them at most
    merged.sort(kind="stable")  # timsort: sorted runs are merged in linear time
    return merged


class _Group:
    """The hashes of one group: one sorted array and the recent sorted runs not yet merged into it."""

    def __init__(self) -> None:
        self.merged = np.empty(0, dtype=np.uint64)
        self.runs: list[np.ndarray] = []
        self.in_runs = 0

    def __len__(self) -> int:
        return len(self.merged) + self.in_runs

    @property
    def nbytes(self) -> int:
        return self.merged.nbytes + sum(r.nbytes for r in self.runs)

    def contains_sorted(self, hashes: np.ndarray) -> np.ndarray:
        found = _member(self.merged, hashes)
        for run in self.runs:
            found |= _member(run, hashes)
        return found

    def add_sorted(self, hashes: np.ndarray, min_recent: int) -> None:
        self.runs.append(hashes)
        self.in_runs += len(hashes)
        if self.in_runs > max(min_recent, len(self.merged) // 4):
            self.merge_runs()
        elif len(self.runs) > MAX_RUNS:
            self.runs = [_merge_sorted(self.runs)]

    def merge_runs(self) -> None:
        if self.runs:
            parts, self.merged = [self.merged, *self.runs], np.empty(0, dtype=np.uint64)
            self.runs, self.in_runs = [], 0
            self.merged = _merge_sorted(parts, out=_allocate(sum(len(p) for p in parts)))


class HashSet64:
    """Exact membership of uint64 hashes, about 8 bytes each; ``add`` only takes hashes not yet in it."""

    def __init__(self) -> None:
        self._groups = [_Group() for _ in range(_GROUPS)]
        self._prefixes = np.zeros(1 << (PREFIX_BITS - 3), dtype=np.uint8)  # a bit a prefix that holds an id

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups)

    @property
    def nbytes(self) -> int:
        return sum(g.nbytes for g in self._groups) + self._prefixes.nbytes

    @staticmethod
    def _prefix_bits(hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the byte of the filter each hash's prefix falls in, its bit in that byte)."""
        prefix = (hashes >> np.uint64(64 - PREFIX_BITS)).astype(np.uint32)
        return prefix >> 3, np.left_shift(np.uint8(1), (prefix & 7).astype(np.uint8))

    def _mark_prefixes(self, sorted_hashes: np.ndarray) -> None:
        byte, bit = self._prefix_bits(sorted_hashes)
        self._prefixes[byte] |= bit  # where hashes share a byte, this keeps only one of their bits...
        shared = byte[1:] == byte[:-1]  # ...so those (adjacent, the hashes being sorted) are or-ed one by one
        if shared.any():
            both = np.flatnonzero(np.concatenate(([False], shared)) | np.concatenate((shared, [False])))
            np.bitwise_or.at(self._prefixes, byte[both], bit[both])

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
        byte, bit = self._prefix_bits(hashes)
        maybe = np.flatnonzero(self._prefixes[byte] & bit)  # the rest are new: no id has their prefix
        if len(maybe) == 0:
            return found
        candidates = hashes[maybe]
        in_set = np.zeros(len(candidates), dtype=bool)
        bounds = _group_bounds(candidates)
        for group, start, end in zip(self._groups, bounds[:-1], bounds[1:], strict=True):
            if end > start:
                in_set[start:end] = group.contains_sorted(candidates[start:end])
        found[maybe] = in_set
        return found

    def add(self, hashes: np.ndarray, already_sorted: bool = False) -> None:
        """Add hashes known to be new and distinct (``contains`` was False for each, and no repeats)."""
        if not len(hashes):
            return
        hashes = np.asarray(hashes, dtype=np.uint64)
        if not already_sorted:
            hashes = np.sort(hashes)
        self._mark_prefixes(hashes)
        bounds = _group_bounds(hashes)
        min_recent = MIN_RECENT >> GROUP_BITS
        for group, start, end in zip(self._groups, bounds[:-1], bounds[1:], strict=True):
            if end > start:  # a copy, so a merged group frees its share of the batch
                group.add_sorted(hashes[start:end].copy(), min_recent)

    def merge_runs(self) -> None:
        """Merge every group's recent runs now (the set does this by itself as it grows)."""
        for group in self._groups:
            group.merge_runs()
