"""Every use of PyIceberg's private API, in one place, each with why and what would replace it.

PyIceberg 0.12 lacks three things this project needs; each is built on a private hook here, and
``sonik_pipeline_tests/lakehouse/tables/test_iceberg_internals.py`` pins every symbol and hook, so an upgrade
that renames or stops calling one fails that test by name instead of changing behaviour silently.

- ``DataFileWriter`` and ``split_by_partition``: staging Parquet data files of a table *before* a
  commit, streamed batch by batch and rolled at the on-storage target size, made as PyIceberg's own
  ``write_file`` makes them (field ids via ``_to_requested_schema``, statistics, partition paths, names);
  rows of several partitions are split with ``_determine_partitions``; the bytes written so far are read
  from ``ParquetFormatWriter._fos``. ``table.append``/``overwrite`` take a whole Arrow table and commit
  at once, so a day could be neither validated before its commit nor written in bounded memory.
  Replaced by a public rolling writer ("write files, commit later": apache/iceberg-python issue #1737
  and the rolling ``ParquetWriter`` that ``bin_pack_arrow_table``'s docstring announces).
- ``RewriteDataFiles`` (an ``_OverwriteFiles``): compaction's commit. It overrides
  ``_validate_concurrency`` (reading ``_commit_window``, ``_transaction._table`` and ``_deleted_data_files``)
  with ``pyiceberg.table.update.validate._validate_data_files_exist`` and
  ``_validate_no_new_deletes_for_data_files``, so it validates like Java's ``RewriteFiles``: an append to
  the partition being compacted is fine, a concurrent delete of a replaced file is a conflict. PyIceberg
  0.12 has no REPLACE data-file operation; replaced by ``table.maintenance.rewrite_data_files`` /
  a ``RewriteFiles`` producer (apache/iceberg-python issue #1092, data file compaction).
- ``ReplaceManifests`` (a ``_SnapshotProducer``): rewriting manifests without changing data, what Java's
  ``RewriteManifests`` / Spark's ``rewrite_manifests`` do. Replaced by ``table.maintenance.rewrite_manifests()``
  once apache/iceberg-python PR #3631 lands.
- ``expire_snapshots_in``: PyIceberg's ``ExpireSnapshots`` builder, made on our own transaction (so the
  record of the history it removes commits with it) and given ref assertions through its
  ``_requirements``: 0.12 commits an expiry with no precondition, so a rollback landing between planning
  and commit would have its snapshot expired and ``main`` dropped. Replaced by an ExpireSnapshots that
  commits against its base metadata, as Java's does.
- ``transaction`` (a ``Transaction`` caching ``table_metadata``): PyIceberg 0.12 recomputes and deep-copies
  the whole table metadata (every snapshot) on each read of ``Transaction.table_metadata``, about 16
  times per commit, so a commit's cost grows with the table's history (apache/iceberg-python issue
  #2673). This caches it per state, keyed on the identity of ``_table.metadata`` and ``_updates`` (both
  are replaced, never mutated), exactly as upstream PR #3784 does; replaced by that PR once released.
- ``discard_uncommitted_manifests``: ``_SnapshotProducer._clean_all_uncommitted``, what PyIceberg calls after
  a conflict, called after a failure PyIceberg cannot judge once ``writes`` knows the commit did not land.
- ``ArrowScan`` reads given data files (``FileScanTask``s) with schema evolution applied; public in
  name but not documented as API, so it is pinned here too.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.fileformat import FileFormatFactory
from pyiceberg.io.pyarrow import (
    ArrowScan,
    ParquetFormatWriter,
    _determine_partitions,
    _to_requested_schema,
    pyarrow_to_schema,
)
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat, ManifestContent, ManifestFile, ManifestWriter
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey, PartitionSpec
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table import FileScanTask, Table, TableMetadata, Transaction
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.refs import SnapshotRef
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update import AssertRefSnapshotId
from pyiceberg.table.update.snapshot import ExpireSnapshots, _OverwriteFiles, _SnapshotProducer
from pyiceberg.table.update.validate import _validate_data_files_exist, _validate_no_new_deletes_for_data_files
from pyiceberg.typedef import EMPTY_DICT, Record

if TYPE_CHECKING:
    from pyiceberg.io import FileIO

# (module or class, attribute) this module relies on; the contract test checks each one exists.
REQUIRED_INTERNALS: tuple[tuple[object, str], ...] = (
    (_SnapshotProducer, "_existing_manifests"),
    (_SnapshotProducer, "_deleted_entries"),
    (_SnapshotProducer, "_summary"),
    (_SnapshotProducer, "_validate_concurrency"),
    (_SnapshotProducer, "new_manifest_writer"),
    (_SnapshotProducer, "_refresh_for_retry"),
    (_SnapshotProducer, "_clean_all_uncommitted"),
    (_OverwriteFiles, "_validate_concurrency"),
    (ArrowScan, "to_record_batches"),
    (ExpireSnapshots, "by_ids"),
    (ParquetFormatWriter, "write"),
    (ParquetFormatWriter, "close"),
)
# Attributes of a Transaction that CachingTransaction keys its cache on (instance attributes, set in __init__).
REQUIRED_TRANSACTION_ATTRIBUTES = ("_table", "_updates")
# Instance attributes read by the overrides (set in _SnapshotProducer.__init__ or by the retry loop).
REQUIRED_PRODUCER_ATTRIBUTES = (
    "_commit_window",
    "_transaction",
    "_deleted_data_files",
    "_target_branch",
    "_parent_snapshot_id",
    "_written_manifests",
    "_uncommitted_manifests",
    "_written_manifest_lists",
)


def missing_internals(producer: _SnapshotProducer | None = None, transaction: Transaction | None = None) -> list[str]:
    """Names of the PyIceberg internals this module uses that the installed PyIceberg lacks (empty: all there).

    Instance attributes exist only on an instance: pass a producer and a transaction to check theirs too.
    """
    missing = [
        f"{getattr(owner, '__name__', owner)}.{name}" for owner, name in REQUIRED_INTERNALS if not hasattr(owner, name)
    ]
    if producer is not None:
        missing += [
            f"_SnapshotProducer().{name}" for name in REQUIRED_PRODUCER_ATTRIBUTES if not hasattr(producer, name)
        ]
    if transaction is not None:
        missing += [
            f"Transaction().{name}" for name in REQUIRED_TRANSACTION_ATTRIBUTES if not hasattr(transaction, name)
        ]
    return missing


# ---------------------------------------------------------------------------------------------
# Staging data files before a commit
# ---------------------------------------------------------------------------------------------


def _single_partition_key(spec: PartitionSpec, schema: Schema, rows: pa.Table) -> PartitionKey | None:
    """The partition all ``rows`` belong to, or None when they span several (or the table is unpartitioned)."""
    if spec.is_unpartitioned():
        return None
    values = []
    for pfield in spec.fields:
        source = schema.find_field(pfield.source_id)
        partition_values = pc.unique(pfield.transform.pyarrow_transform(source.field_type)(rows.column(source.name)))
        if len(partition_values) != 1:
            return None
        values.append(PartitionFieldValue(field=pfield, value=partition_values[0].as_py()))
    return PartitionKey(field_values=values, partition_spec=spec, schema=schema)


def split_by_partition(table: Table, rows: pa.Table) -> list[tuple[PartitionKey | None, pa.Table]]:
    """``rows`` as (partition, rows of it): one piece without copying when they share a partition (a day)."""
    metadata = table.metadata
    spec, schema = metadata.spec(), metadata.schema()
    if spec.is_unpartitioned():
        return [(None, rows)]
    key = _single_partition_key(spec, schema, rows)
    if key is not None:
        return [(key, rows)]
    return [(part.partition_key, part.arrow_table_partition) for part in _determine_partitions(spec, schema, rows)]


# Which columns a table's Parquet files dictionary-encode (comma-separated; absent: every column, PyArrow's
# default). PyArrow tries a dictionary for every column and gives up on one whose values hardly repeat only
# after hashing them all, and PyIceberg has no per-column setting; the property is this project's own.
DICTIONARY_COLUMNS_PROPERTY = "sonik.write.parquet.dictionary-columns"


def dictionary_columns(properties: Mapping[str, str]) -> list[str] | None:
    value = properties.get(DICTIONARY_COLUMNS_PROPERTY)
    return [c.strip() for c in value.split(",") if c.strip()] if value else None


class DataFileWriter:
    """Streams Arrow tables of one partition into Parquet data files of ``table``, rolling at the target size.

    ``write_file``, PyIceberg's writer, takes a whole file's rows at once and measures the target size in
    in-memory Arrow bytes (its files come out 3-10x smaller than the target). This keeps one Parquet
    writer open and starts the next file when the bytes *on storage* reach ``target_bytes``, so memory
    holds one batch whatever the day's size, and files have the size the table asks for. Files, paths,
    field ids and statistics are made exactly as ``write_file`` makes them.
    """

    def __init__(
        self,
        table: Table,
        partition_key: PartitionKey | None,
        write_uuid: uuid.UUID,
        counter: itertools.count,
        target_bytes: int,
    ) -> None:
        self._metadata = table.metadata
        self._io = table.io
        self._key = partition_key
        self._uuid = write_uuid
        self._counter = counter
        self._target = target_bytes
        schema = self._metadata.schema()
        self._file_schema = sanitized if (sanitized := sanitize_column_names(schema)) != schema else schema
        self._format = FileFormatFactory.get(FileFormat.PARQUET)
        self._locations = load_location_provider(self._metadata.location, self._metadata.properties)
        self._writer: ParquetFormatWriter | None = None
        self._output = None
        self._path = ""
        self.data_files: list[DataFile] = []

    def write(self, rows: pa.Table) -> None:
        if rows.num_rows == 0:
            return
        if self._writer is None:
            name = f"00000-{next(self._counter)}-{self._uuid}.{self._format.file_extension()}"
            self._path = self._locations.new_data_location(data_file_name=name, partition_key=self._key)
            self._output = self._io.new_output(self._path)
            self._writer = self._format.create_writer(self._output, self._file_schema, self._metadata.properties)
            if columns := dictionary_columns(self._metadata.properties):
                self._writer._parquet_writer_kwargs["use_dictionary"] = columns
        task_schema = pyarrow_to_schema(rows.schema, name_mapping=self._metadata.schema().name_mapping)
        batches = [
            _to_requested_schema(
                requested_schema=self._file_schema,
                file_schema=task_schema,
                batch=batch,
                include_field_ids=True,
                format_model=self._format,
            )
            for batch in rows.to_batches()
        ]
        self._writer.write(pa.Table.from_batches(batches))
        if self._writer._fos.tell() >= self._target:  # bytes on storage so far
            self._roll()

    def close(self) -> list[DataFile]:
        self._roll()
        return self.data_files

    def _roll(self) -> None:
        if self._writer is None:
            return
        statistics = self._writer.close()
        data_file = DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=self._path,
            file_format=FileFormat.PARQUET,
            partition=self._key.partition if self._key else Record(),
            file_size_in_bytes=len(self._output),
            sort_order_id=None,
            equality_ids=None,
            key_metadata=None,
            **statistics.to_serialized_dict(),
        )
        # from_args leaves spec_id unset (a manifest sets it when read back); readers of new files need it
        data_file.spec_id = self._metadata.default_spec_id
        self.data_files.append(data_file)
        self._writer = None

    def abandon(self) -> list[str]:
        """Close without recording the open file; returns every path written (for the caller to delete)."""
        paths = [f.file_path for f in self.data_files]
        if self._writer is not None:
            try:
                self._writer.close()
            except Exception:  # an unfinished file is deleted anyway
                pass
            paths.append(self._path)
            self._writer = None
        return paths


def iter_data_file_batches(table: Table, tasks: list[FileScanTask]) -> Iterator[pa.RecordBatch]:
    """The rows of the given data files, read with the table's current schema (evolution applied), batch by
    batch, so memory does not grow with the files.

    One file at a time: ``ArrowScan.to_record_batches`` over many tasks submits them all to a thread
    pool that materialises each file, so its memory grows with the number of files.
    """
    scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
    for task in tasks:
        yield from scan.to_record_batches([task])


# ---------------------------------------------------------------------------------------------
# Snapshot producers PyIceberg 0.12 lacks
# ---------------------------------------------------------------------------------------------


class RewriteDataFiles(_OverwriteFiles):
    """An overwrite that validates like Iceberg's RewriteFiles: the replaced files must still be live.

    PyIceberg 0.12 has no rewrite operation; its overwrite would treat any concurrent append as a
    conflict under serializable isolation, failing compaction whenever ingest runs. A rewrite changes
    no data, so only the disappearance of (or new deletes against) the files it replaces can conflict.
    """

    validations = 0  # how often PyIceberg called the hook (the contract test checks it is called)

    def __init__(self, transaction: Transaction, io: FileIO, snapshot_properties: dict[str, str]) -> None:
        super().__init__(
            operation=Operation.OVERWRITE, transaction=transaction, io=io, snapshot_properties=snapshot_properties
        )

    def _validate_concurrency(self) -> None:
        self.validations += 1
        window = self._commit_window
        if window is None or window.is_empty() or window.head is None:
            return
        table = self._transaction._table
        _validate_data_files_exist(table, window.head, self._deleted_data_files, window.base)
        _validate_no_new_deletes_for_data_files(table, window.head, None, self._deleted_data_files, window.base)


# Given the head's data manifests and a factory of manifest writers for a spec, return the data manifests
# that replace them (written through the factory, so PyIceberg tracks and cleans them up on failure).
RebuildDataManifests = Callable[[list[ManifestFile], Callable[["PartitionSpec"], ManifestWriter]], list[ManifestFile]]

# Snapshot-summary totals that a rewrite carries over unchanged from its parent.
_TOTALS = (
    "total-data-files",
    "total-delete-files",
    "total-records",
    "total-files-size",
    "total-position-deletes",
    "total-equality-deletes",
)


class ReplaceManifests(_SnapshotProducer["ReplaceManifests"]):
    """A ``replace`` snapshot whose data manifests are rebuilt from the branch head; data is unchanged.

    Hooks used: ``_existing_manifests`` (the manifests of the new snapshot), ``_deleted_entries`` (none),
    ``_summary`` (PyIceberg 0.12's ``update_snapshot_summaries`` rejects ``replace``), and
    ``_validate_concurrency``. On a commit conflict PyIceberg refreshes the table and calls
    ``_existing_manifests`` again, so the rebuild always starts from the latest head and a concurrent
    append is carried into the new manifests rather than lost; there is nothing left to validate.
    """

    def __init__(
        self,
        transaction: Transaction,
        io: FileIO,
        rebuild: RebuildDataManifests,
        snapshot_properties: dict[str, str] = EMPTY_DICT,
    ) -> None:
        super().__init__(Operation.REPLACE, transaction, io, snapshot_properties=snapshot_properties)
        self._rebuild = rebuild
        self.attempts = 0

    def _existing_manifests(self) -> list[ManifestFile]:
        self.attempts += 1
        head = self._transaction.table_metadata.snapshot_by_name(self._target_branch)
        if head is None:
            return []
        manifests = head.manifests(self._io)
        data = [m for m in manifests if m.content == ManifestContent.DATA]
        deletes = [m for m in manifests if m.content != ManifestContent.DATA]
        return [*self._rebuild(data, self.new_manifest_writer), *deletes]

    def _deleted_entries(self) -> list:
        return []

    def _validate_concurrency(self) -> None:
        """Nothing to validate: each attempt rebuilds from the refreshed head (see the class docstring)."""

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        metadata = self._transaction.table_metadata
        parent = metadata.snapshot_by_id(self._parent_snapshot_id) if self._parent_snapshot_id is not None else None
        previous = parent.summary if parent is not None and parent.summary is not None else {}
        totals = {key: previous[key] for key in _TOTALS if previous.get(key) is not None}
        return Summary(operation=Operation.REPLACE, **totals, **snapshot_properties)

    def written_manifests(self) -> list[str]:
        """Manifest files this producer wrote (all attempts), for a caller that aborts before committing."""
        return [*self._written_manifests, *self._uncommitted_manifests]


def expire_snapshots_in(txn: Transaction, snapshot_ids: list[int], refs: dict[str, SnapshotRef]) -> None:
    """Stage the expiry of ``snapshot_ids`` on ``txn``, valid only while every ref is where ``refs`` says."""
    expire = ExpireSnapshots(txn).by_ids(snapshot_ids)
    expire._requirements = tuple(
        AssertRefSnapshotId(ref=name, snapshot_id=ref.snapshot_id) for name, ref in refs.items()
    )
    expire.commit()


class CachingTransaction(Transaction):
    """A Transaction whose ``table_metadata`` is built once per state rather than on every read (see above)."""

    def __init__(self, table: Table, autocommit: bool = False) -> None:
        super().__init__(table, autocommit)
        self._cached_for: tuple[object, object] | None = None
        self._cached_metadata: TableMetadata | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        if self._cached_for is None or self._cached_for[0] is not base or self._cached_for[1] is not updates:
            self._cached_metadata = Transaction.table_metadata.fget(self)
            self._cached_for = (base, updates)
        return self._cached_metadata


SnapshotProducer = _SnapshotProducer  # for type hints elsewhere: the private class is named in this module only


def discard_uncommitted_manifests(producer: _SnapshotProducer) -> None:
    """Delete the manifests and manifest lists a producer wrote for a commit that did not land.

    PyIceberg 0.12 does this itself only on a conflict (``CommitFailedException``, ``ValidationException``),
    where it knows the commit did not land; on any other failure (a full disk, a catalog locked past its
    timeout) it leaves them, as the outcome may be unknown. ``writes`` calls this once it knows.
    """
    producer._clean_all_uncommitted()


def transaction(table: Table) -> Transaction:
    """``table.transaction()``, with a commit whose cost does not grow with the table's history."""
    return CachingTransaction(table)
