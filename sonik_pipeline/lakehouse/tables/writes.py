"""Writing to Iceberg: stage Parquet data files in bounded memory, then replace a partition in one commit.

A day is replaced by a single OVERWRITE snapshot that removes the day's old files and adds the new
ones, so readers see either the old day or the new day, never both and never neither. Conflicts with
other writers are retried by PyIceberg itself (``commit.retry.*`` table properties) on the refreshed
table; only a concurrent change to the *same* partition makes the plan stale, and then the replace is
planned again against the fresh table with the same staged files (last writer wins, one copy).
A replace that fails without landing deletes what it wrote, staged data files included.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import BooleanExpression
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionKey
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.types import DateType

from sonik_pipeline.lakehouse.days import date_filter, epoch_day, format_days
from sonik_pipeline.lakehouse.tables.attachment import metadata_files_at, metadata_version, read_metadata
from sonik_pipeline.lakehouse.tables.catalog import CatalogLocked, table_name
from sonik_pipeline.lakehouse.tables.deletion import delete_locations
from sonik_pipeline.lakehouse.tables.iceberg_internals import (
    DataFileWriter,
    SnapshotProducer,
    discard_uncommitted_manifests,
    iter_data_file_batches,
    split_by_partition,
    transaction,
)

log = logging.getLogger(__name__)

# How many times a replace is re-planned when another writer changed the same partition meanwhile.
MAX_REPLANS = 10


@dataclass(frozen=True)
class CommitReport:
    """What one commit did, read back from its snapshot."""

    snapshot_id: int
    operation: str
    files_added: int
    bytes_added: int
    files_removed: int
    rows_added: int
    rows_removed: int
    table_rows: int


def target_file_size(table: Table) -> int:
    """The table's ``write.target-file-size-bytes``: how big a data file the writers aim for."""
    return int(
        table.properties.get(
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
        )
    )


class FileStager:
    """Streams Arrow batches into target-sized Parquet data files of ``table``, not yet committed.

    Each partition the rows touch (one, for a day of plays) has one open ``DataFileWriter`` that rolls
    to a new file when the bytes on storage reach ``write.target-file-size-bytes``, so memory holds one
    batch however large the day. The files are exactly what PyIceberg's own writer would have made
    (field ids, column statistics, partition paths); they become visible only when committed.
    """

    MAX_OPEN_WRITERS = 8  # a multi-day mart run touches many partitions; the oldest writer is closed first

    def __init__(self, table: Table, target_bytes: int | None = None):
        self._table = table
        self._arrow_schema = table.schema().as_arrow()
        self._target_bytes = target_bytes or target_file_size(table)
        self._write_uuid = uuid.uuid4()
        self._counter = itertools.count(0)
        self._writers: dict[tuple, DataFileWriter] = {}
        self.data_files: list[DataFile] = []

    @property
    def rows(self) -> int:
        """Rows in the files finished so far (all of them after ``finish``)."""
        return sum(f.record_count for f in self.data_files)

    def add(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        rows = rows.select(self._arrow_schema.names).cast(self._arrow_schema)
        for key, part in split_by_partition(self._table, rows):
            self._writer_for(key).write(part)

    def _writer_for(self, key: PartitionKey | None) -> DataFileWriter:
        ident = tuple(key.partition) if key is not None else ()
        writer = self._writers.pop(ident, None)
        if writer is None:
            if len(self._writers) >= self.MAX_OPEN_WRITERS:
                oldest = next(iter(self._writers))
                self.data_files += self._writers.pop(oldest).close()
            writer = DataFileWriter(self._table, key, self._write_uuid, self._counter, self._target_bytes)
        self._writers[ident] = writer  # most recently used last
        return writer

    def finish(self) -> list[DataFile]:
        for writer in self._writers.values():
            self.data_files += writer.close()
        self._writers = {}
        return self.data_files

    def discard(self) -> None:
        """Delete staged files that will never be committed (they would otherwise be orphans).

        Like every deletion, only files under the table's location and the warehouse (see ``deletion``).
        """
        paths = [data_file.file_path for data_file in self.data_files]
        for writer in self._writers.values():
            paths += writer.abandon()
        self._writers = {}
        self.data_files = []
        delete_locations(self._table, paths)


def stage_files(table: Table, chunks: Iterable[pa.Table]) -> list[DataFile]:
    stager = FileStager(table)
    for chunk in chunks:
        stager.add(chunk)
    return stager.finish()


def _files_in(table: Table, partition_filter: BooleanExpression) -> list[DataFile]:
    return [task.file for task in table.scan(row_filter=partition_filter).plan_files()]


# Called with (the files the partition holds now, the files that would replace them) before every commit
# attempt, on the attempt's own plan; raises to refuse the replace.
ReplaceGuard = Callable[[list[DataFile], list[DataFile]], None]


class CommitOfStagedFiles:
    """One commit of staged files, over its attempts: if it fails without landing, nothing it wrote stays.

    Used as ``with CommitOfStagedFiles(table, files) as commit:`` around the attempts; each attempt
    registers its producer (``attempt``) and says when the transaction is about to ask the catalog
    (``committing``). On failure, what the commit wrote (the staged data files, the attempts' manifests
    and manifest lists, a metadata file the catalog wrote before its swap failed) is deleted when the
    commit certainly did not land, and left (and said so) when that cannot be told: deleting the files of
    a commit that did land would break the table.

    PyIceberg 0.12 cleans a failed commit's manifests only after a conflict; a full disk or a catalog
    locked past its timeout would otherwise leave the files until orphan removal's window, on a disk that
    may already be full.
    """

    def __init__(self, table: Table, staged: Iterable[DataFile]):
        self._table = table
        self._staged = [f.file_path for f in staged]
        self._attempts: list[SnapshotProducer] = []
        self._base_metadata = table.metadata_location
        self._catalog_asked = False  # a failure may have come after the catalog was asked to commit

    def attempt(self, producer: SnapshotProducer) -> SnapshotProducer:
        self._attempts.append(producer)
        self._base_metadata = self._table.metadata_location
        self._catalog_asked = False
        return producer

    def committing(self) -> None:
        self._catalog_asked = True

    def staged_more(self, files: Iterable[DataFile]) -> None:
        """Files staged for the coming attempt only (``replace_days``' rewritten remainders)."""
        self._staged += [f.file_path for f in files]

    def unstaged(self, files: Iterable[DataFile]) -> None:
        """Files of a stale attempt, deleted by the caller: no longer this commit's."""
        gone = {f.file_path for f in files}
        self._staged = [path for path in self._staged if path not in gone]

    def planned_again(self) -> None:
        """The last attempt was refused while planning (a stale plan): the catalog was not asked."""
        self._catalog_asked = False

    def __enter__(self) -> CommitOfStagedFiles:
        return self

    def __exit__(self, kind, failure, trace) -> None:
        if failure is None:
            for stale in self._attempts[:-1]:  # stale plans' manifests, never committed
                discard_uncommitted_manifests(stale)
            return
        try:
            landed = self._landed(failure)
        except Exception:  # never hide the commit's own failure behind the clean-up's
            landed = None
        name = table_name(self._table)
        if landed is None:
            log.warning("%s: the commit failed and whether it landed cannot be told; its files are left", name)
        elif not landed:
            try:
                for attempt in self._attempts:
                    discard_uncommitted_manifests(attempt)
                delete_locations(self._table, [*self._metadata_written(), *self._staged])
            except Exception as cleanup:  # as above
                log.warning("%s: could not delete a failed commit's files (%s); orphan removal will", name, cleanup)
            else:
                log.info(
                    "%s: the commit did not land; deleted its %d staged files and manifests", name, len(self._staged)
                )

    def _landed(self, failure: BaseException) -> bool | None:
        """False or True when known, None when it cannot be told."""
        import requests  # here, not at the top: only a failed commit needs it (and `sonik tables` imports this module)

        if not self._attempts or not self._catalog_asked:
            return False  # refused or failed before the catalog was asked
        if isinstance(failure, CommitFailedException | ValidationException):
            return False  # PyIceberg raises these only when nothing landed
        if isinstance(failure, CatalogLocked):
            return False  # SQLite: the statement did not run
        if isinstance(failure, OSError) and not isinstance(failure, requests.RequestException):
            return False  # writing a manifest or metadata file failed: the catalog's swap comes after both
        try:
            self._table.refresh()
        except Exception:  # the catalog cannot say
            return None
        return self._table.snapshot_by_id(self._attempts[-1].snapshot_id) is not None

    def _metadata_written(self) -> list[str]:
        """The metadata JSON a SQL catalog wrote for an attempt before its swap failed: newer than the base,
        and current at one of the attempts' snapshots (never another writer's)."""
        base_version = metadata_version(self._base_metadata)
        if not self._attempts or base_version is None:
            return []
        ours = {attempt.snapshot_id for attempt in self._attempts}
        written = []
        for file in metadata_files_at(self._table.catalog, self._table.location()):
            if file.version is None or file.version <= base_version:
                continue
            try:
                metadata = read_metadata(self._table.catalog, file.location)
            except Exception:  # half-written: not provably ours
                continue
            if metadata.current_snapshot_id in ours:
                written.append(file.location)
        return written


def replace_partition(
    table: Table,
    partition_filter: BooleanExpression,
    new_files: list[DataFile],
    snapshot_properties: Mapping[str, str],
    guard: ReplaceGuard | None = None,
) -> CommitReport:
    """Atomically swap the files of the partition(s) matched by ``partition_filter`` for ``new_files``.

    ``partition_filter`` must select whole partitions (for plays: one day of ``played_at``). ``guard``
    sees the partition as each attempt plans it, so a refusal also holds against a concurrent writer.
    ``new_files`` are the caller's, staged for this commit: if it fails without landing they are deleted
    with everything it wrote (``CommitOfStagedFiles``).
    """
    properties = {k: str(v) for k, v in snapshot_properties.items()}
    with CommitOfStagedFiles(table, new_files) as commit:
        for replans in range(MAX_REPLANS + 1):
            table.refresh()
            old_files = _files_in(table, partition_filter)
            if guard is not None:
                guard(old_files, new_files)
            if not old_files and not new_files:
                snapshot = table.current_snapshot()
                return commit_report(table, snapshot.snapshot_id if snapshot else 0, committed=False)
            try:
                with transaction(table) as txn:
                    # Always an overwrite producer, even for an empty day: unlike a fast append it validates
                    # that no other writer added files to this partition meanwhile (serializable isolation).
                    producer = commit.attempt(txn.update_snapshot(snapshot_properties=properties).overwrite())
                    with producer:
                        # Scopes conflict detection to this partition: writers of other days never conflict.
                        producer.delete_by_predicate(partition_filter)
                        for data_file in old_files:
                            producer.delete_data_file(data_file)
                        for data_file in new_files:
                            producer.append_data_file(data_file)
                    commit.committing()  # the transaction commits as this block ends
                snapshot_id = producer.snapshot_id
            except ValidationException as stale_plan:
                commit.planned_again()
                if replans == MAX_REPLANS:
                    raise CommitFailedException(
                        f"{table_name(table)}: gave up replacing the partition after {MAX_REPLANS} concurrent "
                        f"changes to it: {stale_plan}"
                    ) from stale_plan
                log.warning(
                    "%s: partition changed concurrently (%s); planning the replace again", table_name(table), stale_plan
                )
                continue
            return commit_report(table, snapshot_id)
    raise AssertionError("unreachable")


def data_file_days(data_file: DataFile, field_id: int) -> tuple[int, int] | None:
    """A data file's lower and upper bound of a date column, as days since the epoch (None: no bounds kept)."""
    lower = (data_file.lower_bounds or {}).get(field_id)
    upper = (data_file.upper_bounds or {}).get(field_id)
    if lower is None or upper is None:
        return None
    return from_bytes(DateType(), lower), from_bytes(DateType(), upper)


def _stage_remainders(
    table: Table, files: list[DataFile], column: str, first: dt.date, last: dt.date
) -> list[DataFile]:
    """The rows outside first..last of ``files`` that also hold rows of other days, staged as new files.

    Their order is kept (a sorted file stays sorted); files whose bounds lie within first..last are whole
    days being replaced and are not read at all.
    """
    field_id = table.schema().find_field(column).field_id
    lo, hi = epoch_day(first), epoch_day(last)
    partial = [
        f for f in files if (bounds := data_file_days(f, field_id)) is None or not lo <= bounds[0] <= bounds[1] <= hi
    ]
    if not partial:
        return []
    stager = FileStager(table)
    try:
        for batch in iter_data_file_batches(table, [FileScanTask(f) for f in partial]):
            days = batch.column(column)  # a boolean mask keeps the rows' order (an expression filter may not)
            stager.add(pa.Table.from_batches([batch.filter(pc.or_(pc.less(days, first), pc.greater(days, last)))]))
        return stager.finish()
    except BaseException:
        stager.discard()
        raise


def replace_days(
    table: Table,
    column: str,
    first: dt.date,
    last: dt.date,
    new_files: list[DataFile],
    snapshot_properties: Mapping[str, str],
) -> CommitReport:
    """Atomically make ``new_files`` the rows of days ``first``..``last`` (date ``column``) of a table whose
    partitions hold more than a day (a month, a bucket of users), in one OVERWRITE snapshot as ``replace_partition``.

    A file holding only those days is removed; one that also holds other days (a compacted file) is
    rewritten without them (copy-on-write), so a re-run replaces the days, never doubles them. A concurrent
    change to the same rows makes the plan stale: the rewritten remainders are deleted and it is planned
    again. If the commit fails without landing, everything it wrote is deleted (``CommitOfStagedFiles``).
    """
    properties = {k: str(v) for k, v in snapshot_properties.items()}
    days = date_filter(column, first, last)
    with CommitOfStagedFiles(table, new_files) as commit:
        for replans in range(MAX_REPLANS + 1):
            table.refresh()
            old_files = _files_in(table, days)
            if not old_files and not new_files:
                snapshot = table.current_snapshot()
                return commit_report(table, snapshot.snapshot_id if snapshot else 0, committed=False)
            remainders = _stage_remainders(table, old_files, column, first, last)
            commit.staged_more(remainders)
            try:
                with transaction(table) as txn:
                    producer = commit.attempt(txn.update_snapshot(snapshot_properties=properties).overwrite())
                    with producer:
                        producer.delete_by_predicate(days)  # conflicts only with writers of these days' files
                        for data_file in old_files:
                            producer.delete_data_file(data_file)
                        for data_file in [*remainders, *new_files]:
                            producer.append_data_file(data_file)
                    commit.committing()
                snapshot_id = producer.snapshot_id
            except ValidationException as stale_plan:
                commit.planned_again()
                commit.unstaged(remainders)
                delete_locations(table, [f.file_path for f in remainders])
                if replans == MAX_REPLANS:
                    raise CommitFailedException(
                        f"{table_name(table)}: gave up replacing {format_days(first, last)} after {MAX_REPLANS} "
                        f"concurrent changes to it: {stale_plan}"
                    ) from stale_plan
                log.warning("%s: days changed concurrently (%s); planning again", table_name(table), stale_plan)
                continue
            return commit_report(table, snapshot_id)
    raise AssertionError("unreachable")


def commit_report(table: Table, snapshot_id: int, committed: bool = True) -> CommitReport:
    """What commit ``snapshot_id`` did, from its summary (not ``committed``: nothing, with the table's totals)."""
    # No refresh: a committed transaction leaves ``table`` at the metadata it committed, which holds the snapshot.
    snapshot = table.snapshot_by_id(snapshot_id) if committed else None
    summary = snapshot.summary if snapshot else None

    def count(key: str) -> int:
        return int(summary.get(key) or 0) if summary is not None else 0

    # Table totals as of this commit (a later writer's totals would be someone else's story).
    reference = snapshot or table.current_snapshot()
    totals = reference.summary if reference and reference.summary else {}
    return CommitReport(
        snapshot_id=snapshot_id,
        operation=summary.operation.value if summary else "none",
        files_added=count("added-data-files"),
        bytes_added=count("added-files-size"),
        files_removed=count("deleted-data-files"),
        rows_added=count("added-records"),
        rows_removed=count("deleted-records"),
        table_rows=int(totals.get("total-records") or 0),
    )
