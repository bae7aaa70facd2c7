"""Compaction (Iceberg's ``rewrite_data_files``): merge a partition's small files into few target-sized ones.

PyIceberg 0.12 has no compaction, so this is ours: plan per partition, read the small files with
PyIceberg's own reader (schema evolution applied), write them back with its writer, verify that the
rows written equal the rows replaced (count and an order-independent checksum), and swap the files
in one commit per table. The swap validates only what a rewrite must: the replaced files are still
live and gained no deletes. Appends that land meanwhile, even in the same partition, do not conflict:
PyIceberg retries the commit on the refreshed table and the appended files stay untouched.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.transforms import DayTransform
from pyiceberg.typedef import Record

from sonik_pipeline.lakehouse.days import EPOCH, partition_day
from sonik_pipeline.lakehouse.deletion import delete_locations
from sonik_pipeline.lakehouse.iceberg_internals import RewriteDataFiles, read_data_files
from sonik_pipeline.lakehouse.writes import FileStager, target_file_size

log = logging.getLogger(__name__)


class CompactionAborted(RuntimeError):
    """The rewrite would not have preserved the partition's rows; nothing was committed."""


@dataclass(frozen=True)
class CompactionOptions:
    """What to compact and how (defaults follow Iceberg's rewrite_data_files)."""

    target_file_size_bytes: int | None = None  # None: the table's write.target-file-size-bytes
    small_file_ratio: float = 0.75  # a file is small below this share of the target size
    min_input_files: int = 5  # a partition is rewritten only with at least this many small files
    days_before: dt.date | None = None  # only partitions of days before this one (None: all)
    sort_by: tuple[str, ...] = ()  # order rows within files so min/max statistics prune
    dry_run: bool = False


@dataclass
class PartitionRewrite:
    partition: str
    files_before: int
    bytes_before: int
    rows: int
    files_after: int = 0
    bytes_after: int = 0


@dataclass
class CompactionReport:
    table: str
    partitions: list[PartitionRewrite] = field(default_factory=list)
    snapshot_id: int | None = None
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def files_before(self) -> int:
        return sum(p.files_before for p in self.partitions)

    @property
    def files_after(self) -> int:
        return sum(p.files_after for p in self.partitions)

    @property
    def bytes_before(self) -> int:
        return sum(p.bytes_before for p in self.partitions)

    @property
    def bytes_after(self) -> int:
        return sum(p.bytes_after for p in self.partitions)


def _describe(table: Table, spec_id: int, partition: Record) -> str:
    spec = table.specs()[spec_id]
    parts = []
    for position, pfield in enumerate(spec.fields):
        value = partition[position]
        if isinstance(pfield.transform, DayTransform) and isinstance(value, int):
            value = EPOCH + dt.timedelta(days=value)
        parts.append(f"{pfield.name}={value}")
    return "/".join(parts) or "unpartitioned"


def plan_compaction(table: Table, options: CompactionOptions) -> dict[tuple[int, Record], list[FileScanTask]]:
    """The partitions worth rewriting, each with its small files."""
    target = options.target_file_size_bytes or target_file_size(table)
    small: dict[tuple[int, Record], list[FileScanTask]] = defaultdict(list)
    for task in table.scan().plan_files():
        data_file = task.file
        if task.delete_files or data_file.file_size_in_bytes >= options.small_file_ratio * target:
            continue
        day = partition_day(table.specs()[data_file.spec_id], table.schema(), data_file.partition)
        if options.days_before and day is not None and day >= options.days_before:
            continue
        small[(data_file.spec_id, data_file.partition)].append(task)
    return {key: tasks for key, tasks in small.items() if len(tasks) >= options.min_input_files}


def _checksum(rows: pa.Table) -> tuple[int, int]:
    """(row count, order-independent sum of row hashes): equal for the same multiset of rows."""
    con = duckdb.connect()
    try:
        con.register("rows_to_check", rows)
        count, total = con.execute("SELECT count(*), coalesce(sum(hash(t)), 0) FROM rows_to_check AS t").fetchone()
        return int(count), int(total)
    finally:
        con.close()


def compact_table(
    table: Table,
    options: CompactionOptions,
    snapshot_properties: dict[str, str] | None = None,
    progress: Callable[[str], None] = log.info,
) -> CompactionReport:
    """Rewrite the small files of every qualifying partition of ``table`` in one atomic commit."""
    started = time.monotonic()
    name = ".".join(table.name())
    report = CompactionReport(table=name, dry_run=options.dry_run)
    plan = plan_compaction(table, options)
    if not plan:
        report.seconds = time.monotonic() - started
        return report

    replaced: list[DataFile] = []
    added: list[DataFile] = []
    try:
        for (spec_id, partition), tasks in sorted(plan.items(), key=lambda kv: str(kv[0][1])):
            rewrite = PartitionRewrite(
                partition=_describe(table, spec_id, partition),
                files_before=len(tasks),
                bytes_before=sum(t.file.file_size_in_bytes for t in tasks),
                rows=sum(t.file.record_count for t in tasks),
            )
            report.partitions.append(rewrite)
            if options.dry_run:
                continue
            rows = read_data_files(table, tasks)
            if options.sort_by:
                keys = [(c, "ascending") for c in options.sort_by if c in rows.column_names]
                rows = rows.sort_by(keys) if keys else rows
            stager = FileStager(table)
            stager.add(rows)
            new_files = stager.finish()
            added.extend(new_files)
            # Read back what was written, with the same reader, and compare it to what it replaces.
            if _checksum(read_data_files(table, [FileScanTask(f) for f in new_files])) != _checksum(rows):
                raise CompactionAborted(f"{name} {rewrite.partition}: rewritten rows differ from the originals")
            rewrite.files_after = len(new_files)
            rewrite.bytes_after = sum(f.file_size_in_bytes for f in new_files)
            replaced.extend(t.file for t in tasks)
            progress(
                f"{name} {rewrite.partition}: {rewrite.files_before} files ({rewrite.bytes_before:,} B) -> "
                f"{rewrite.files_after} ({rewrite.bytes_after:,} B), {rewrite.rows:,} rows"
            )
        if options.dry_run:
            report.seconds = time.monotonic() - started
            return report
        properties = {
            **(snapshot_properties or {}),
            "sonik.operation": "compaction",
            "sonik.partitions-rewritten": str(len(report.partitions)),
        }
        with table.transaction() as txn:
            rewrite_files = RewriteDataFiles(txn, table.io, properties)
            with rewrite_files:
                for data_file in replaced:
                    rewrite_files.delete_data_file(data_file)
                for data_file in added:
                    rewrite_files.append_data_file(data_file)
        report.snapshot_id = rewrite_files.snapshot_id
    except BaseException:
        # Never committed: remove them now rather than leave orphans (only inside the table and warehouse).
        delete_locations(table, [data_file.file_path for data_file in added])
        raise
    report.seconds = time.monotonic() - started
    return report
