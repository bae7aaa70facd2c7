"""Reading days of plays in chunks: whole days, at most a row budget, the rolling window counted."""

import datetime as dt
from collections import Counter

from sonik_pipeline.lakehouse.reads.plays_days import chunk_days

D = [dt.date(2026, 4, 1) + dt.timedelta(days=i) for i in range(10)]


def test_days_are_packed_into_chunks_within_the_budget() -> None:
    per_day = Counter(dict.fromkeys(D, 100))

    assert chunk_days(per_day, D[0], D[-1], max_rows=1_000) == [(D[0], D[-1])]
    assert chunk_days(per_day, D[0], D[-1], max_rows=300) == [(D[0], D[2]), (D[3], D[5]), (D[6], D[8]), (D[9], D[9])]


def test_a_day_bigger_than_the_budget_is_a_chunk_of_its_own() -> None:
    per_day = Counter({D[0]: 10, D[1]: 5_000, D[2]: 10})

    assert chunk_days(per_day, D[0], D[2], max_rows=100) == [(D[0], D[0]), (D[1], D[1]), (D[2], D[2])]


def test_the_window_before_each_chunk_counts_against_the_budget() -> None:
    # Every chunk of a 2-day lookback also reads the two days before its first day
    per_day = Counter(dict.fromkeys([D[0] - dt.timedelta(days=2), D[0] - dt.timedelta(days=1), *D], 100))

    chunks = chunk_days(per_day, D[0], D[-1], max_rows=500, lookback_days=2)

    assert chunks == [(D[0], D[2]), (D[3], D[5]), (D[6], D[8]), (D[9], D[9])]
    assert all((last - first).days + 1 + 2 <= 5 for first, last in chunks)


def test_days_without_plays_cost_nothing() -> None:
    assert chunk_days(Counter(), D[0], D[-1], max_rows=1) == [(D[0], D[-1])]
