"""The daily UTC partitions shared by plays, the marts and every job over them."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from sonik_pipeline.lakehouse.days import parse_day


def build_daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """Days in UTC from ``start_date``; the newest partition is the last complete day."""
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC", end_offset=0)


def day_of(partition_key: str) -> dt.date:
    """The day a partition key names (``lakehouse.days`` reads it, as it reads every day)."""
    return parse_day(partition_key)
