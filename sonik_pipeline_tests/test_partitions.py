"""The daily UTC partitions: from the start date to the last complete day, whatever the machine's time zone."""

import datetime as dt

from sonik_pipeline.partitions import build_daily_partitions, day_of


def test_partitions_run_from_the_start_date_to_the_last_complete_utc_day() -> None:
    partitions = build_daily_partitions("2026-04-01")
    just_after_midnight = dt.datetime(2026, 4, 21, 0, 5, tzinfo=dt.UTC)

    keys = partitions.get_partition_keys(current_time=just_after_midnight)

    assert keys[0] == "2026-04-01" and keys[-1] == "2026-04-20"  # the 21st has only begun
    assert len(keys) == 20
    assert partitions.timezone == "UTC"


def test_a_partition_key_is_its_day() -> None:
    assert day_of("2026-04-20") == dt.date(2026, 4, 20)
