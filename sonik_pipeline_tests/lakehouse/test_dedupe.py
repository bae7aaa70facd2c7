"""The exact set of 64-bit hashes behind duplicate detection: membership through merges, memory per id."""

import numpy as np
import pytest

from sonik_pipeline.lakehouse import dedupe
from sonik_pipeline.lakehouse.dedupe import HashSet64


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


def test_extreme_hashes_land_in_the_first_and_last_buckets() -> None:
    seen = HashSet64()
    edges = np.array([0, 1, np.iinfo(np.uint64).max - 1, np.iinfo(np.uint64).max], dtype=np.uint64)
    seen.add(edges)
    seen._merge_runs_into_buckets()

    assert seen.contains(edges).all()
    assert not seen.contains(np.array([2, np.iinfo(np.uint64).max - 2], dtype=np.uint64)).any()


def test_memory_is_8_bytes_an_id() -> None:
    seen = HashSet64()
    for batch in range(20):
        seen.add(_random(250_000, seed=batch))

    assert len(seen) == 5_000_000
    assert seen.nbytes == 8 * 5_000_000
