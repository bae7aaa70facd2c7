"""An exact set of 64-bit hashes for the play_ids of a day however large it is: 4 bytes an id in memory.

A day's ingest must reject every play_id it has seen before, for 100 million ids and more, without
per-event Python objects, without memory spikes when the set grows, and with memory that grows as
little with the day as exactness allows. The set is split by the hash's top 6 bits into 64 groups. A
group keeps its older ids *merged*: sorted, their next 32 bits in memory (a ``uint32`` each) and their
last 26 bits in a file of its own, in the same order, read only to confirm a match. The recent ids are
kept whole, as a few sorted runs, until they hold an eighth as many as the merged ones; then they are
merged in, group by group (the merge holds one group whole for a moment: 1/64 of the set).

Lookups stay exact and cheap. A hash whose 32 bits no merged id shares is new, and that is decided in
memory; only a hash that shares them (a repeat, or one in 2**38 / group size by chance) is compared
with the last bits on file, a few bytes of a file the system keeps cached. Before any of that, a bit per
hash prefix (16 MiB, whatever the day) says which prefixes hold an id: an id whose prefix holds none
is new. At 10M ids the bits are 7% set, so 93% of a batch is answered by one bit each.

Merges are of sorted runs (timsort finds them), so each costs linear time, and as a group merges
whenever its runs reach an eighth of it, each id is copied about nine times over the day.
"""

from __future__ import annotations

import mmap
import os
import tempfile
import weakref

import numpy as np

GROUP_BITS = 6  # 64 groups by the hash's top 6 bits, each merged on its own
MIN_RECENT = 1 << 20  # ids kept whole as runs (in all groups together) before a group's first merge (8 MiB)
RECENT_SHARE = 8  # a group merges its runs once they hold 1/8 as many ids as its merged ones
MAX_RUNS = 2  # a group's runs are merged into one beyond this, so a lookup searches only a few
PREFIX_BITS = 27  # the prefixes the filter has a bit for: 2**27 bits, 16 MiB
LOW_BITS = 64 - GROUP_BITS - 32  # a merged id's last bits, kept on file (its 32 before them in memory)

_GROUPS = 1 << GROUP_BITS
_LOW_MASK = np.uint64((1 << LOW_BITS) - 1)
_LOW_SHIFT = np.uint64(LOW_BITS)


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


def _allocate(n: int, dtype: type = np.uint64) -> np.ndarray:
    """An array in its own anonymous memory map (zeroed by the system), given back to it when dropped.

    Merged arrays are replaced by bigger ones all day; as heap blocks they would leave holes that the
    batches' small arrays then fragment, and the process's memory would grow by more than the ids.
    """
    size = n * np.dtype(dtype).itemsize
    return np.frombuffer(mmap.mmap(-1, size), dtype=dtype) if n else np.empty(0, dtype=dtype)


def _merge_sorted(runs: list[np.ndarray], out: np.ndarray | None = None) -> np.ndarray:
    merged = np.concatenate(runs, out=out)
    runs.clear()  # the inputs go before the merge, so it holds one copy of them at most
    merged.sort(kind="stable")  # timsort: sorted runs are merged in linear time
    return merged


def _high(hashes: np.ndarray) -> np.ndarray:
    """The 32 bits after a hash's group: what a merged id keeps in memory."""
    return (hashes >> _LOW_SHIFT).astype(np.uint32)


def _low(hashes: np.ndarray) -> np.ndarray:
    return (hashes & _LOW_MASK).astype(np.uint32)


class _Group:
    """The hashes of one group: the merged ones (high bits in memory, low bits on file, one order) and
    the recent sorted runs, whole, not yet merged into them."""

    def __init__(self, index: int) -> None:
        self.top = np.uint64(index) << np.uint64(64 - GROUP_BITS)
        self.high = np.empty(0, dtype=np.uint32)
        self.lows: int | None = None  # the file of the merged ids' low bits (a descriptor: it has no name)
        self._closer: weakref.finalize | None = None
        self.runs: list[np.ndarray] = []
        self.in_runs = 0

    def __len__(self) -> int:
        return len(self.high) + self.in_runs

    @property
    def nbytes(self) -> int:
        return self.high.nbytes + sum(r.nbytes for r in self.runs)

    @property
    def spilled_bytes(self) -> int:
        return len(self.high) * 4

    def _low_bits(self) -> np.ndarray:
        """The merged ids' low bits, mapped from their file (its pages are read only where indexed)."""
        return np.frombuffer(mmap.mmap(self.lows, 0, access=mmap.ACCESS_READ), dtype=np.uint32)

    def _merged_member(self, hashes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(hashes), dtype=bool)
        if not len(self.high):
            return found
        high = _high(hashes)
        at = np.searchsorted(self.high, high)
        shares = np.flatnonzero(self.high[np.minimum(at, len(self.high) - 1)] == high)
        if len(shares) == 0:  # the common case: no merged id has these 32 bits, so none is this one
            return found
        lows, wanted, at, high = self._low_bits(), _low(hashes[shares]), at[shares], high[shares]
        last = len(self.high) - 1
        while len(shares):  # ids sharing their 32 bits are adjacent: walk them, rarely more than one
            found[shares] |= lows[at] == wanted
            at = at + 1
            more = np.flatnonzero((at <= last) & (self.high[np.minimum(at, last)] == high))
            shares, wanted, at, high = shares[more], wanted[more], at[more], high[more]
        return found

    def contains_sorted(self, hashes: np.ndarray) -> np.ndarray:
        found = self._merged_member(hashes)
        for run in self.runs:
            found |= _member(run, hashes)
        return found

    def add_sorted(self, hashes: np.ndarray, min_recent: int) -> None:
        self.runs.append(hashes)
        self.in_runs += len(hashes)
        if self.in_runs > max(min_recent, len(self.high) // RECENT_SHARE):
            self.merge_runs()
        elif len(self.runs) > MAX_RUNS:
            self.runs = [_merge_sorted(self.runs)]

    def merge_runs(self) -> None:
        if not self.runs:
            return
        parts = [*self.runs]
        if len(self.high):
            parts.insert(0, self.top | (self.high.astype(np.uint64) << _LOW_SHIFT) | self._low_bits())
        self.runs, self.in_runs, self.high = [], 0, np.empty(0, dtype=np.uint32)
        merged = _merge_sorted(parts)
        high = _allocate(len(merged), np.uint32)
        high[:] = _high(merged)
        lows = _unnamed_file()
        with open(lows, "wb", closefd=False) as f:
            _low(merged).tofile(f)
        self.close()
        self.high, self.lows = high, lows
        self._closer = weakref.finalize(self, os.close, lows)

    def close(self) -> None:
        if self._closer is not None:
            self._closer()
        self.lows = self._closer = None


def _unnamed_file() -> int:
    """A temporary file, already removed from its folder: the system deletes it when it is closed, or
    when the process ends however it ends."""
    fd, path = tempfile.mkstemp(prefix="sonik-play-ids-")
    os.unlink(path)
    return fd


class HashSet64:
    """Exact membership of uint64 hashes, about 4 bytes each in memory and 4 on file; ``add`` only takes
    hashes not yet in it."""

    def __init__(self) -> None:
        self._groups = [_Group(i) for i in range(_GROUPS)]
        self._prefixes = np.zeros(1 << (PREFIX_BITS - 3), dtype=np.uint8)  # a bit a prefix that holds an id

    def __len__(self) -> int:
        return sum(len(g) for g in self._groups)

    @property
    def nbytes(self) -> int:
        """Bytes held in memory (the filter, the merged ids' high bits, the recent ids)."""
        return sum(g.nbytes for g in self._groups) + self._prefixes.nbytes

    @property
    def spilled_bytes(self) -> int:
        """Bytes held in temporary files (the merged ids' low bits)."""
        return sum(g.spilled_bytes for g in self._groups)

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

    def close(self) -> None:
        """Delete the files of low bits now rather than when the set is collected."""
        for group in self._groups:
            group.close()
