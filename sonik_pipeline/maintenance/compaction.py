"""Compaction (Iceberg's ``rewrite_data_files``): merge a partition's small files into few target-sized ones.

PyIceberg 0.12 has no compaction, so this is ours, shaped like Iceberg's Spark procedure: the small
files of each qualifying partition are split into *file groups* of at most ``max_file_group_size_bytes``,
and each group is streamed batch by batch from PyIceberg's reader (schema evolution applied) through a
spilling DuckDB sort into the rolling writer, so memory holds a batch and DuckDB's ``memory_limit``
however large the partition. Each group is verified before anything is committed: the row count and an
order-independent checksum of the rows read and of the rows read back from the new files, both
computed while streaming. Without ``partial_progress`` a table's groups are swapped in one commit;
with it, finished groups are committed in up to ``partial_progress_max_commits`` commits, so a failure
late in a big compaction keeps the earlier work. The swap validates only what a rewrite must: the
replaced files are still live and gained no deletes, so appends that land meanwhile, even in the same
partition, are kept (PyIceberg retries the commit on the refreshed table).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table
from pyiceberg.table.sorting import NullOrder, SortDirection
from pyiceberg.transforms import IdentityTransform
from pyiceberg.typedef import Record

from sonik_pipeline.lakehouse.arrow_memory import release_freed_memory_promptly
from sonik_pipeline.lakehouse.days import partition_day
from sonik_pipeline.lakehouse.duckdb_io.extensions import configure_storage
from sonik_pipeline.lakehouse.duckdb_io.file_scan import native_select
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_identifier, sql_string
from sonik_pipeline.lakehouse.sources.events import BATCH_ROWS
from sonik_pipeline.lakehouse.tables.catalog import table_name
from sonik_pipeline.lakehouse.tables.deletion import delete_locations
from sonik_pipeline.lakehouse.tables.iceberg_internals import RewriteDataFiles, iter_data_file_batches, transaction
from sonik_pipeline.lakehouse.tables.writes import CommitOfStagedFiles, FileStager, target_file_size

log = logging.getLogger(__name__)

# A group of input files rewritten (and verified) as one unit: 1 GiB of Parquet, about 30 million plays.
# Memory does not grow with it (the rows stream through DuckDB, which spills past its memory limit);
# it bounds the temporary disk a group needs and the work a failure can lose with partial progress.
DEFAULT_MAX_FILE_GROUP_SIZE_BYTES = 1024**3
DEFAULT_PARTIAL_PROGRESS_MAX_COMMITS = 10
# DuckDB's memory for sorting a group; past it, it spills to its temporary directory.
DEFAULT_SORT_MEMORY_LIMIT = "400MB"


class CompactionAborted(RuntimeError):
    """The rewrite would not have preserved a group's rows; that group (and any later one) was not committed."""


@dataclass(frozen=True)
class CompactionOptions:
    """What to compact and how (defaults follow Iceberg's rewrite_data_files)."""

    target_file_size_bytes: int | None = None  # None: the table's write.target-file-size-bytes
    small_file_ratio: float = 0.75  # a file is small below this share of the target size
    min_input_files: int = 5  # a partition is rewritten only with at least this many small files
    days_before: dt.date | None = None  # only partitions of days before this one (None: all)
    sort_by: tuple[str, ...] = ()  # order rows within files so min/max statistics prune (a table's sort order wins)
    max_file_group_size_bytes: int = DEFAULT_MAX_FILE_GROUP_SIZE_BYTES
    partial_progress: bool = False  # commit finished groups as it goes (Spark's partial-progress.enabled)
    partial_progress_max_commits: int = DEFAULT_PARTIAL_PROGRESS_MAX_COMMITS
    sort_memory_limit: str = DEFAULT_SORT_MEMORY_LIMIT
    work_dir: str | None = None  # where DuckDB spills (None: the system's temporary directory)
    dry_run: bool = False


@dataclass
class PartitionRewrite:
    partition: str
    files_before: int
    bytes_before: int
    rows: int
    groups: int = 0
    files_after: int = 0
    bytes_after: int = 0
    rows_verified: int = 0


@dataclass
class CompactionReport:
    table: str
    partitions: list[PartitionRewrite] = field(default_factory=list)
    snapshot_ids: list[int] = field(default_factory=list)
    groups: int = 0
    groups_committed: int = 0
    dry_run: bool = False
    seconds: float = 0.0

    @property
    def snapshot_id(self) -> int | None:
        """The last commit (the only one without partial progress)."""
        return self.snapshot_ids[-1] if self.snapshot_ids else None

    def _total(self, attribute: str) -> int:
        return sum(getattr(p, attribute) for p in self.partitions)

    files_before = property(lambda self: self._total("files_before"))
    files_after = property(lambda self: self._total("files_after"))
    bytes_before = property(lambda self: self._total("bytes_before"))
    bytes_after = property(lambda self: self._total("bytes_after"))
    rows_verified = property(lambda self: self._total("rows_verified"))


@dataclass(frozen=True)
class FileGroup:
    """Files of one partition rewritten together."""

    partition: PartitionRewrite
    tasks: tuple[FileScanTask, ...]

    @property
    def size_bytes(self) -> int:
        return sum(t.file.file_size_in_bytes for t in self.tasks)


def describe_partition(table: Table, spec_id: int, partition: Record) -> str:
    """A partition as people read it (``played_day=2026-04-20``, ``day_year=2026``), by its transform."""
    spec, schema = table.specs()[spec_id], table.schema()
    parts = []
    for position, pfield in enumerate(spec.fields):
        source_type = schema.find_field(pfield.source_id).field_type
        parts.append(f"{pfield.name}={pfield.transform.to_human_string(source_type, partition[position])}")
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


def split_into_groups(sizes: list[int], max_group_bytes: int) -> list[list[int]]:
    """Indexes of files packed, in order, into groups of at most ``max_group_bytes`` (a bigger file alone).

    A group of one file would be rewritten into one file: nothing gained, so none is returned.
    """
    groups: list[list[int]] = []
    current: list[int] = []
    current_bytes = 0
    for index, size in enumerate(sizes):
        if current and current_bytes + size > max_group_bytes:
            groups.append(current)
            current, current_bytes = [], 0
        current.append(index)
        current_bytes += size
    if current:
        groups.append(current)
    return [group for group in groups if len(group) > 1]


def plan_file_groups(table: Table, options: CompactionOptions) -> list[FileGroup]:
    """Every qualifying partition's small files, as file groups in partition order."""
    groups = []
    for (spec_id, partition), tasks in sorted(plan_compaction(table, options).items(), key=lambda kv: str(kv[0][1])):
        tasks = sorted(tasks, key=lambda t: t.file.file_path)
        rewrite = PartitionRewrite(
            partition=describe_partition(table, spec_id, partition),
            files_before=len(tasks),
            bytes_before=sum(t.file.file_size_in_bytes for t in tasks),
            rows=sum(t.file.record_count for t in tasks),
        )
        for indexes in split_into_groups([t.file.file_size_in_bytes for t in tasks], options.max_file_group_size_bytes):
            groups.append(FileGroup(rewrite, tuple(tasks[i] for i in indexes)))
            rewrite.groups += 1
    return groups


class StreamingChecksum:
    """Row count and order-independent sum of row hashes, accumulated batch by batch (never the whole set)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con
        self.rows = 0
        self.total = 0

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        self._con.register("checksum_batch", batch)
        try:
            count, total = self._con.execute(
                "SELECT count(*), coalesce(sum(hash(t)), 0) FROM checksum_batch AS t"
            ).fetchone()
        finally:
            self._con.unregister("checksum_batch")
        self.rows += int(count)
        self.total += int(total)

    @property
    def value(self) -> tuple[int, int]:
        return self.rows, self.total


def _batches(table: Table, tasks: Iterable[FileScanTask]) -> Iterator[pa.RecordBatch]:
    return iter_data_file_batches(table, list(tasks))


def _rewrite_group(
    table: Table, group: FileGroup, options: CompactionOptions, work_dir: Path, name: str
) -> list[DataFile]:
    """Stream one group's rows through DuckDB (sorted, spilling) into new files; verify them; return them."""
    con = duckdb.connect(str(work_dir / "group.duckdb"))  # a file-backed database: a big group spills to disk
    stager = FileStager(table, target_bytes=options.target_file_size_bytes)
    try:
        con.execute(f"SET memory_limit = {sql_string(options.sort_memory_limit)}")
        con.execute(f"SET temp_directory = {sql_string(str(work_dir))}")
        con.execute("SET preserve_insertion_order = false")
        configure_storage(con, table.catalog.properties)
        select = native_select(table, con, group.tasks)
        if select is None:
            new_files, read, written = _rewrite_through_arrow(table, group, options, con, stager)
        else:
            new_files, read, written = _rewrite_natively(table, group, options, con, stager, select)
        if written != read:
            raise CompactionAborted(
                f"{name} {group.partition.partition}: rewritten rows differ from the originals "
                f"({written[0]:,} rows read back, {read[0]:,} read); nothing of this group was committed"
            )
        return new_files
    except BaseException:
        stager.discard()
        raise
    finally:
        con.close()


def _checksum_sql(select: str) -> str:
    return f"SELECT count(*), coalesce(sum(hash(t)), 0) FROM ({select}) AS t"


def sort_columns(table: Table, options: CompactionOptions) -> tuple[str, ...]:
    """The columns a rewrite orders rows by: the table's own sort order when it has one (it is how the
    table's readers prune, e.g. user_track_days by user_id), else ``options.sort_by`` where the table has them.

    A sort order's leading ascending, nulls-last identity fields are used (what every writer here makes).
    """
    schema = table.schema()
    own = []
    for sort_field in table.sort_order().fields:
        if not (
            isinstance(sort_field.transform, IdentityTransform)
            and sort_field.direction == SortDirection.ASC
            and sort_field.null_order == NullOrder.NULLS_LAST
        ):
            break
        own.append(schema.find_column_name(sort_field.source_id))
    if own:
        return tuple(own)
    names = {f.name for f in schema.fields}
    return tuple(c for c in options.sort_by if c in names)


def _sort_clause(table: Table, options: CompactionOptions, columns: Iterable[str]) -> str:
    keys = [sql_identifier(c) for c in sort_columns(table, options) if c in set(columns)]
    return f" ORDER BY {', '.join(keys)}" if keys else ""


def _rewrite_natively(table, group, options, con, stager, select) -> tuple[list[DataFile], tuple, tuple]:
    """Read, sort and verify with DuckDB's own Parquet reader: memory stays within its limit."""
    count, total = con.execute(_checksum_sql(select)).fetchone()
    order = _sort_clause(table, options, table.schema().as_arrow().names)
    for batch in con.execute(f"{select}{order}").to_arrow_reader(BATCH_ROWS):
        stager.add(pa.Table.from_batches([batch]))
    new_files = stager.finish()
    written = native_select(table, con, [FileScanTask(f) for f in new_files]) if new_files else None
    back = con.execute(_checksum_sql(written)).fetchone() if written else (0, 0)
    return new_files, (int(count), int(total)), (int(back[0]), int(back[1]))


def _rewrite_through_arrow(table, group, options, con, stager) -> tuple[list[DataFile], tuple, tuple]:
    """Read with PyIceberg's reader (schema evolution by field id), sort and verify in DuckDB."""
    source = _batches(table, group.tasks)
    first = next(source, None)
    if first is None:
        return [], (0, 0), (0, 0)
    reader = pa.RecordBatchReader.from_batches(first.schema, _chain(first, source))
    con.register("group_source", reader)
    con.execute("CREATE TABLE group_rows AS SELECT * FROM group_source")
    con.unregister("group_source")
    count, total = con.execute(_checksum_sql("SELECT * FROM group_rows")).fetchone()
    order = _sort_clause(table, options, first.schema.names)
    for batch in con.execute(f"SELECT * FROM group_rows{order}").to_arrow_reader(BATCH_ROWS):
        stager.add(pa.Table.from_batches([batch]))
    con.execute("DROP TABLE group_rows")
    new_files = stager.finish()
    # Read back what was written, with the same reader, and compare it to what was read.
    written = StreamingChecksum(con)
    for batch in _batches(table, (FileScanTask(f) for f in new_files)):
        written.add(batch)
    return new_files, (int(count), int(total)), written.value


def _chain(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    yield first
    yield from rest


def _commit(table: Table, replaced: list[DataFile], added: list[DataFile], properties: dict[str, str]) -> int:
    """One rewrite commit; if it fails without landing, the rewritten files are deleted with all it wrote."""
    with CommitOfStagedFiles(table, added) as commit, transaction(table) as txn:
        rewrite_files = commit.attempt(RewriteDataFiles(txn, table.io, properties))
        with rewrite_files:
            for data_file in replaced:
                rewrite_files.delete_data_file(data_file)
            for data_file in added:
                rewrite_files.append_data_file(data_file)
        commit.committing()
    return rewrite_files.snapshot_id


def compact_table(
    table: Table,
    options: CompactionOptions,
    snapshot_properties: dict[str, str] | None = None,
    progress: Callable[[str], None] = log.info,
) -> CompactionReport:
    """Rewrite the small files of every qualifying partition of ``table``, group by group, verified."""
    started = time.monotonic()
    name = table_name(table)
    report = CompactionReport(table=name, dry_run=options.dry_run)
    groups = plan_file_groups(table, options)
    report.groups = len(groups)
    report.partitions = list({id(g.partition): g.partition for g in groups}.values())
    if not groups or options.dry_run:
        report.seconds = time.monotonic() - started
        return report

    release_freed_memory_promptly()
    commits = min(options.partial_progress_max_commits, len(groups)) if options.partial_progress else 1
    per_commit = math.ceil(len(groups) / commits)
    properties = {**(snapshot_properties or {}), "sonik.operation": "compaction"}
    pending: list[tuple[FileGroup, list[DataFile]]] = []
    work_dir = Path(tempfile.mkdtemp(prefix="sonik-compaction-", dir=options.work_dir))

    def commit_pending() -> None:
        batch = list(pending)
        pending.clear()  # from here the commit deletes their files if it does not land, and only then
        replaced = [t.file for g, _ in batch for t in g.tasks]
        added = [f for _, files in batch for f in files]
        partitions = {g.partition.partition for g, _ in batch}
        snapshot_id = _commit(
            table, replaced, added, {**properties, "sonik.partitions-rewritten": str(len(partitions))}
        )
        report.snapshot_ids.append(snapshot_id)
        report.groups_committed += len(batch)
        for group, files in batch:
            group.partition.files_after += len(files)
            group.partition.bytes_after += sum(f.file_size_in_bytes for f in files)
            group.partition.rows_verified += sum(f.record_count for f in files)
        progress(f"{name}: committed {len(batch)} file groups in snapshot {snapshot_id}")

    try:
        for number, group in enumerate(groups, start=1):
            new_files = _rewrite_group(table, group, options, work_dir, name)
            pending.append((group, new_files))
            progress(
                f"{name} {group.partition.partition}: group {number}/{len(groups)}, {len(group.tasks)} files "
                f"({group.size_bytes:,} B) -> {len(new_files)} ({sum(f.file_size_in_bytes for f in new_files):,} B), "
                f"{sum(f.record_count for f in new_files):,} rows verified"
            )
            if options.partial_progress and len(pending) == per_commit:
                commit_pending()
        if pending:
            commit_pending()
    except BaseException:
        # Groups never handed to a commit: remove them now rather than leave orphans (only inside the table
        # and warehouse). A commit that failed has dealt with its own files.
        delete_locations(table, [f.file_path for _, files in pending for f in files])
        if report.snapshot_ids:
            progress(f"{name}: failed after committing {report.groups_committed} of {len(groups)} file groups")
        raise
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    report.seconds = time.monotonic() - started
    return report
