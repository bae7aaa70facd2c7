"""The exact set of 64-bit hashes behind duplicate detection: membership through merges, memory per id,
and ids that differ only in the bits kept on file."""

import mmap
import os
import tracemalloc

import numpy as np
import pytest

from sonik_pipeline.lakehouse.ingest import dedupe
from sonik_pipeline.lakehouse.ingest.dedupe import HashSet64

FILTER_BYTES = 1 << (dedupe.PREFIX_BITS - 3)  # the prefix filter: the same whatever the set holds


def _random(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)


@pytest.fixture
def small_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Merges after a few thousand ids, so the tests cross many merges and compactions quickly."""
    monkeypatch.setattr(dedupe, "MIN_RECENT", 3_000)
    monkeypatch.setattr(dedupe, "MAX_RUNS", 3)


def test_every_added_hash_is_found_and_no_other_through_merges(small_runs: None) -> None:
    seen = HashSet64()
    added = []
    for batch in range(40):
        hashes = _random(1_000, seed=batch)
        assert not seen.contains(hashes).any()
        seen.add(hashes)
        added.append(hashes)
        everything = np.concatenate(added)
        assert seen.contains(everything).all()
    assert len(seen) == 40_000
    assert not seen.contains(_random(5_000, seed=999)).any()


def test_a_mixed_batch_is_answered_per_hash(small_runs: None) -> None:
    seen = HashSet64()
    old = _random(10_000, seed=1)
    seen.add(old)
    new = _random(10, seed=2)
    mixed = np.concatenate([new[:5], old[[3, 7_000]], new[5:]])

    assert seen.contains(mixed).tolist() == [False] * 5 + [True, True] + [False] * 5


def test_extreme_hashes_land_in_the_first_and_last_groups() -> None:
    seen = HashSet64()
    edges = np.array([0, 1, np.iinfo(np.uint64).max - 1, np.iinfo(np.uint64).max], dtype=np.uint64)
    seen.add(edges)
    seen.merge_runs()

    assert seen.contains(edges).all()
    assert not seen.contains(np.array([2, np.iinfo(np.uint64).max - 2], dtype=np.uint64)).any()


def test_memory_is_4_bytes_an_id_once_merged_and_4_more_on_file() -> None:
    seen = HashSet64()
    for batch in range(20):
        seen.add(_random(250_000, seed=batch))
    recent = seen.nbytes - FILTER_BYTES - 4 * sum(len(g.high) for g in seen._groups)
    seen.merge_runs()

    assert len(seen) == 5_000_000
    assert seen.nbytes == 4 * 5_000_000 + FILTER_BYTES
    assert seen.spilled_bytes == 4 * 5_000_000
    assert sum(os.fstat(g.lows).st_size for g in seen._groups) == 4 * 5_000_000
    # Before that last merge, the recent ids (whole, 8 bytes each) were at most an eighth of the merged ones.
    assert recent <= 8 * max(dedupe.MIN_RECENT, 5_000_000 // dedupe.RECENT_SHARE)


def test_a_merge_needs_one_group_of_extra_memory_not_a_copy_of_the_recent_ids(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Recent runs are merged group by group: at 100M ids a whole-set merge held a copy and a sorted copy
    of every recent id (up to a fifth of the set, twice) at once."""
    monkeypatch.setattr(dedupe, "MIN_RECENT", 1 << 16)
    # Merged arrays are memory maps, which tracemalloc does not see: traced here as heap arrays instead.
    monkeypatch.setattr(dedupe, "_allocate", lambda n, dtype=np.uint64: np.empty(n, dtype=dtype))
    seen = HashSet64()
    batch_bytes = 100_000 * 8
    worst_extra = 0
    tracemalloc.start()
    try:
        for batch in range(40):
            hashes = np.sort(_random(100_000, seed=batch))
            tracemalloc.reset_peak()
            before, _ = tracemalloc.get_traced_memory()
            seen.add(hashes, already_sorted=True)
            after, peak = tracemalloc.get_traced_memory()
            worst_extra = max(worst_extra, peak - after - batch_bytes)
    finally:
        tracemalloc.stop()

    assert len(seen) == 4_000_000
    # One group is 1/64 of the set (~1.6%): while merged, it is held whole (8 bytes an id) a few times.
    whole_set = 8 * len(seen)
    assert worst_extra <= whole_set * 0.06, f"a merge needed {worst_extra:,} bytes beyond the set"


def test_merged_arrays_live_in_their_own_memory_maps_so_replacing_them_frees_their_memory() -> None:
    seen = HashSet64()
    for batch in range(4):
        seen.add(_random(50_000, seed=batch))
    seen.merge_runs()

    merged = [group.high for group in seen._groups]
    assert all(isinstance(array.base.obj, mmap.mmap) for array in merged)
    assert sum(len(array) for array in merged) == len(seen) == 200_000
    assert seen.contains(_random(50_000, seed=3)).all()


def test_hashes_sharing_a_prefix_or_a_filter_byte_are_all_found_and_their_neighbours_are_not() -> None:
    """The prefix filter answers "new" for most hashes without a search: it must never say so for one
    that was added, however many added hashes share its bit or its byte of the filter."""
    shift = np.uint64(64 - dedupe.PREFIX_BITS)
    prefixes = np.arange(20, dtype=np.uint64)  # prefixes 0-19: every bit of bytes 0 and 1, some of byte 2
    added = np.concatenate([(prefixes << shift) + np.uint64(offset) for offset in (5, 9)])
    seen = HashSet64()
    seen.add(added[::2])  # in two batches, so the second one meets bytes the first has set
    seen.add(added[1::2])

    assert seen.contains(added).all()
    same_prefix_not_added = np.concatenate([(prefixes << shift) + np.uint64(offset) for offset in (0, 7)])
    assert not seen.contains(same_prefix_not_added).any()
    assert not seen.contains((prefixes + np.uint64(20)) << shift).any()


def test_ids_that_differ_only_in_the_bits_on_file_are_told_apart_through_merges(small_runs: None) -> None:
    """A merged id keeps its group's bits and the next 32 in memory, its last bits on file: ids sharing
    everything but those last bits must each be found exactly, before and after merges, and never a
    neighbour that was not added."""
    low = np.uint64(1 << dedupe.LOW_BITS)
    shared_high = np.array([0, 12_345, np.iinfo(np.uint64).max // low], dtype=np.uint64) * low
    added_lows = np.array([0, 1, 2, 1_000, int(low) - 1], dtype=np.uint64)
    added = (shared_high[:, None] + added_lows[None, :]).ravel()
    not_added = (shared_high[:, None] + np.array([3, 999, int(low) - 2], dtype=np.uint64)[None, :]).ravel()
    seen = HashSet64()
    seen.add(added[::2])
    seen.add(_random(20_000, seed=5))  # enough to merge the first ids into the file-backed part
    assert seen.spilled_bytes > 0
    assert seen.contains(added[::2]).all()
    assert not seen.contains(added[1::2]).any()
    seen.add(added[1::2])
    seen.merge_runs()

    assert seen.contains(added).all()
    assert not seen.contains(not_added).any()


def test_close_deletes_the_files_of_low_bits() -> None:
    seen = HashSet64()
    seen.add(_random(10_000, seed=1))
    seen.merge_runs()
    files = [g.lows for g in seen._groups if g.lows is not None]
    assert len(files) == 64
    assert all(os.fstat(fd).st_nlink == 0 for fd in files)  # no name in any folder: nothing left behind

    seen.close()

    for fd in files:
        with pytest.raises(OSError):
            os.fstat(fd)
