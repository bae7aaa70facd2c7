import datetime as dt

import pytest

from sonik_pipeline.lakehouse.ingest import DayWouldShrink, shrink_guard

DAY = dt.date(2026, 4, 20)


@pytest.mark.parametrize(("rows_now", "rows_new"), [(0, 0), (0, 5), (1_000, 900), (1_000, 1_000), (1_000, 5_000)])
def test_the_shrink_guard_allows_growth_and_drops_up_to_the_share(rows_now: int, rows_new: int) -> None:
    shrink_guard(DAY, 0.10)(rows_now, rows_new)


def test_the_shrink_guard_refuses_a_bigger_drop_and_says_how_many_rows() -> None:
    with pytest.raises(DayWouldShrink, match=r"would replace 1,000 rows with 899 \(101 fewer, 10.1%\)"):
        shrink_guard(DAY, 0.10)(1_000, 899)


def test_a_share_of_one_allows_emptying_the_day() -> None:
    shrink_guard(DAY, 1.0)(1_000, 0)
