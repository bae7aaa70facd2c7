"""How the Spark engine writes the lakehouse's tables: its column types, and one overwrite read back as a commit."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from pyiceberg.table import Table
from pyiceberg.types import DateType, DoubleType, IcebergType, IntegerType, LongType, StringType, TimestampType

from sonik_pipeline.lakehouse.tables.snapshots import lineage
from sonik_pipeline.lakehouse.tables.writes import CommitReport, commit_report

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame

# The tables' column types in Spark SQL (played_at and the marts' times have no time zone).
SPARK_TYPES: dict[type[IcebergType], str] = {
    DateType: "DATE",
    IntegerType: "INT",
    LongType: "BIGINT",
    DoubleType: "DOUBLE",
    StringType: "STRING",
    TimestampType: "TIMESTAMP_NTZ",
}


# For tables partitioned by day only (plays, its quarantine): rows are written by the tasks that hold them,
# each task its own files (one a day: Iceberg's fanout writer), not shuffled by partition first as Iceberg
# asks by default ("hash"). That put a whole day in one task, so a 10M-event day's plays were written by one
# core while the others waited, after a shuffle of every row through local disk (2026-12-07: 39.9 s of a
# 134 s ingest on ``local[1]``). Not for the marts: a table bucketed by user would get a file a bucket a task.
WRITE_WHERE_THE_ROWS_ARE = {"distribution-mode": "none", "fanout-enabled": "true"}


def across_task_slots(rows: DataFrame) -> DataFrame:
    """``rows`` merged, without a shuffle, into as many partitions as the session runs tasks at once, so a
    write makes one file a slot and a partition, not one a landing file. Left as they are on a session without
    a SparkContext to ask (Spark Connect): every partition then writes its own files."""
    try:
        slots = rows.sparkSession.sparkContext.defaultParallelism
    except (AttributeError, NotImplementedError):
        return rows
    return rows.coalesce(max(1, slots))


def overwrite(
    table: Table,
    name: str,
    rows: DataFrame,
    condition: Column,
    write_options: Mapping[str, str],
    properties: Mapping[str, str],
) -> CommitReport:
    """Replace the rows of ``table`` (Spark's ``name`` for it) matching ``condition`` by ``rows`` in one Iceberg
    overwrite carrying ``properties`` in its summary; what that commit did, found by them in the lineage."""
    options = {**write_options, **{f"snapshot-property.{key}": value for key, value in properties.items()}}
    before = {s.snapshot_id for s in table.snapshots()}
    rows.writeTo(name).options(**options).overwrite(condition)
    table.refresh()
    ours = next(
        (
            s
            for s in lineage(table)
            if s.snapshot_id not in before
            and s.summary is not None
            and all(s.summary.get(key) == value for key, value in properties.items())
        ),
        None,
    )
    if ours is None:
        raise RuntimeError(f"{name}: Spark's overwrite where {condition} is not in the table's lineage")
    return commit_report(table, ours.snapshot_id)
