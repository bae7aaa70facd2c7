"""Training sets that can be made again: a table's rows over whole days at one snapshot, as Parquet files and
a ``manifest.json``, the snapshot kept from expiry by an Iceberg tag until the set is released.

``export_dataset`` writes a dataset and tags its snapshot ``export-<name>``; ``reexport`` makes a manifest's
dataset again and checks every file's sha256 against it; ``list_exports`` and ``release_export`` show and
drop the tags. Expiry never expires a snapshot a tag (any ref) points at (``maintenance.expiry``), and every
file that snapshot reaches stays; once the tag is released, the snapshot expires like any other.

The same rows in the same order, written with the same options, are the same bytes, so a manifest alone
makes its dataset again after any later ingest, compaction or expiry, as long as its snapshot is kept:

- the rows: the snapshot (read with its own schema), filtered to whole UTC days of the table's day column
  (``day`` for a mart, ``played_at`` for plays);
- the order: the day column, then the exported columns in the table's order. That is each table's natural
  key (played_at, play_id for plays; day, rank or day, user_id, track_id for the marts), and a total order
  of the rows as written: rows equal in all of them are the same bytes whatever their order. DuckDB sorts,
  so a set larger than memory spills to disk;
- the files: ``rows_per_file`` rows each, each written in one call from one contiguous chunk per column
  (Arrow's Parquet writer splits pages where the chunks it is given end), with fixed options. Parquet
  records no time; its ``created_by`` names the PyArrow version, which the manifest records: another
  PyArrow may write other bytes, and a re-export that differs says which.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import importlib.metadata
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import BooleanExpression
from pyiceberg.io.pyarrow import PyArrowFileIO, schema_to_pyarrow
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update.snapshot import ManageSnapshots

from sonik_pipeline.lakehouse.days import (
    PLAYED_AT,
    date_filter,
    date_sql,
    format_days,
    parse_day,
    played_at_filter,
    played_at_sql,
)
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_identifier
from sonik_pipeline.lakehouse.reads import timetravel
from sonik_pipeline.lakehouse.tables.catalog import table_name
from sonik_pipeline.lakehouse.tables.definitions import MARTS, PLAYS, lakehouse_table_names
from sonik_pipeline.lakehouse.tables.iceberg_internals import transaction

TAG_PREFIX = "export-"  # the tag keeping an export's snapshot: export-<name>
RECORD_PROPERTY_PREFIX = "sonik.export."  # table property sonik.export.<name>: when and where it was exported
MANIFEST = "manifest.json"
DATA_FOLDER = "data"  # the Parquet files, apart from the manifest: a folder any Parquet reader reads whole
MANIFEST_FORMAT = "sonik.training-set/1"
DAY_COLUMN = "day"  # the marts' day; plays' day is the UTC day of played_at
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
_SORT_BATCH_ROWS = 64 * 1024  # rows handed over from DuckDB's sort at a time


class ExportError(ValueError):
    """An export or re-export that cannot be done as asked; the message says why in one line."""


@dataclass(frozen=True)
class WriterOptions:
    """How the Parquet files are cut and written: part of the dataset's identity, recorded in its manifest."""

    rows_per_file: int = 1_000_000
    row_group_size: int = 128 * 1024
    compression: str = "zstd"
    compression_level: int = 3
    parquet_version: str = "2.6"
    data_page_version: str = "1.0"
    data_page_size: int = 1024 * 1024
    use_dictionary: bool = True
    write_statistics: bool = True

    def parquet_bytes(self, rows: pa.Table) -> pa.Buffer:
        sink = pa.BufferOutputStream()
        pq.write_table(
            rows.combine_chunks(),  # one chunk per column: the pages then follow the rows alone
            sink,
            row_group_size=self.row_group_size,
            compression=self.compression,
            compression_level=self.compression_level,
            version=self.parquet_version,
            data_page_version=self.data_page_version,
            data_page_size=self.data_page_size,
            use_dictionary=self.use_dictionary,
            write_statistics=self.write_statistics,
        )
        return sink.getvalue()


@dataclass(frozen=True)
class ExportedColumn:
    name: str
    type: str  # the Iceberg type, e.g. long, string, timestamp, date
    required: bool


@dataclass(frozen=True)
class ExportedFile:
    name: str
    rows: int
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ExportManifest:
    """What a dataset is and how to make it again: ``manifest.json``."""

    name: str
    table: str
    table_uuid: str
    snapshot_id: int
    snapshot_committed_at: str
    tag: str
    day_column: str
    first_day: dt.date
    last_day: dt.date
    filter: str  # the rows read, as SQL on the table
    columns: tuple[ExportedColumn, ...]
    order_by: tuple[str, ...]
    rows: int
    files: tuple[ExportedFile, ...]
    writer: WriterOptions
    pyarrow_version: str
    pipeline_version: str
    created_at: str
    format: str = MANIFEST_FORMAT

    def to_json(self) -> str:
        fields = dataclasses.asdict(self)
        fields["first_day"], fields["last_day"] = self.first_day.isoformat(), self.last_day.isoformat()
        return json.dumps({"format": fields.pop("format"), **fields}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> ExportManifest:
        fields = json.loads(text)
        if fields.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"not a {MANIFEST_FORMAT} manifest (format {fields.get('format')!r})")
        return cls(
            **{
                **fields,
                "first_day": parse_day(fields["first_day"]),
                "last_day": parse_day(fields["last_day"]),
                "columns": tuple(ExportedColumn(**c) for c in fields["columns"]),
                "order_by": tuple(fields["order_by"]),
                "files": tuple(ExportedFile(**f) for f in fields["files"]),
                "writer": WriterOptions(**fields["writer"]),
            }
        )


@dataclass(frozen=True)
class Reexport:
    """A dataset made again from its manifest, every file's sha256 checked."""

    manifest: ExportManifest
    out: str
    tag_held: bool  # whether the export's tag still keeps the snapshot (it may be released and not yet expired)


@dataclass(frozen=True)
class ExportRecord:
    """An export whose tag keeps its snapshot: what ``sonik export --list`` shows."""

    name: str
    table: str
    snapshot_id: int
    created_at: str
    days: str
    out: str


# ---------------------------------------------------------------------------------------------
# Where a dataset is written: a local folder or an object-store prefix
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Folder:
    """A folder on any filesystem PyArrow reaches, with the catalog's ``s3.*`` settings (as the landing zone)."""

    filesystem: pafs.FileSystem
    scheme: str
    path: str

    @classmethod
    def at(cls, location: str, properties: dict[str, str]) -> _Folder:
        scheme, netloc, path = PyArrowFileIO.parse_location(str(location))
        return cls(PyArrowFileIO(dict(properties)).fs_by_scheme(scheme, netloc), scheme, path.rstrip("/") or "/")

    @property
    def shown(self) -> str:
        return self.path if self.scheme == "file" else f"{self.scheme}://{self.path}"

    def check_empty(self) -> None:
        info = self.filesystem.get_file_info(self.path)
        if info.type == pafs.FileType.File:
            raise ExportError(f"{self.shown} is a file: give a folder, new or empty, for the dataset")
        listed = self.filesystem.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        if listed:
            raise ExportError(
                f"{self.shown} is not empty: give a new or empty folder, so no file of another dataset mixes in"
            )

    def write(self, name: str, data: pa.Buffer | bytes) -> None:
        path = f"{self.path}/{name}"
        if self.scheme == "file":
            self.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
        with self.filesystem.open_output_stream(path) as stream:
            stream.write(data)

    def delete(self, names: Sequence[str]) -> None:
        """Delete files written here, and the data folder if that leaves it empty (an object store has none)."""
        for name in names:
            self.filesystem.delete_file(f"{self.path}/{name}")
        data = f"{self.path}/{DATA_FOLDER}"
        if self.scheme == "file" and self.filesystem.get_file_info(data).type == pafs.FileType.Directory:
            if not self.filesystem.get_file_info(pafs.FileSelector(data)):
                self.filesystem.delete_dir(data)


def _read_manifest(location: str, properties: dict[str, str]) -> tuple[ExportManifest, bytes]:
    """The manifest at ``location`` (its file, or the dataset folder holding it) and its bytes."""
    location = location if location.endswith(".json") else f"{location.rstrip('/')}/{MANIFEST}"
    folder = _Folder.at(location, properties)
    try:
        with folder.filesystem.open_input_stream(folder.path) as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ExportError(f"no manifest at {folder.shown}") from None
    try:
        return ExportManifest.from_json(text.decode()), text
    except (ValueError, KeyError, TypeError) as exc:
        raise ExportError(f"{folder.shown} is not a training-set manifest: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Which rows, in which order
# ---------------------------------------------------------------------------------------------


def exportable_table(catalog: Catalog, name: str) -> str:
    """The full name of an exportable table: music.plays or a mart (``plays`` and a mart's short name will do)."""
    names = lakehouse_table_names(catalog)
    if "." not in name:
        candidates = [n for n in names if n.split(".", 1)[1] == name]
        name = candidates[0] if len(candidates) == 1 else name
    exportable = [n for n in names if n == PLAYS.identifier or n.startswith(f"{MARTS}.")]
    if name not in names:
        raise ExportError(f"unknown table {name!r} (exportable: {', '.join(exportable) or 'none yet'})")
    if name not in exportable:
        raise ExportError(f"{name}: only {PLAYS.identifier} and the marts ({MARTS}.*) are exported")
    return name


def _snapshot_schema(table: Table, snapshot: Snapshot) -> Schema:
    if snapshot.schema_id is not None and snapshot.schema_id in table.schemas():
        return table.schemas()[snapshot.schema_id]
    return table.schema()


def _day_column(schema: Schema, name: str) -> str:
    names = {f.name for f in schema.fields}
    if DAY_COLUMN in names:
        return DAY_COLUMN
    if PLAYED_AT in names:
        return PLAYED_AT
    raise ExportError(f"{name} has neither a {DAY_COLUMN} nor a {PLAYED_AT} column: it cannot be read by days")


def _day_filter(day_column: str, first: dt.date, last: dt.date) -> tuple[BooleanExpression, str]:
    if day_column == PLAYED_AT:
        return played_at_filter(first, last), played_at_sql(first, last)
    return date_filter(day_column, first, last), date_sql(day_column, first, last)


def _columns(schema: Schema, wanted: Sequence[str] | None, name: str, snapshot_id: int) -> list[str]:
    """The exported columns in the table's order; an unknown or repeated one is refused."""
    names = [f.name for f in schema.fields]
    if not wanted:
        return names
    unknown = [c for c in wanted if c not in names]
    if unknown:
        raise ExportError(
            f"{name} has no column {', '.join(map(repr, unknown))} at snapshot {snapshot_id} "
            f"(columns: {', '.join(names)})"
        )
    if len(set(wanted)) != len(wanted):
        raise ExportError(f"a column is named twice in {', '.join(wanted)}")
    return [n for n in names if n in wanted]


def _plain(field: pa.Field) -> pa.Field:
    """A column as written: no Iceberg field metadata, ordinary (not large) strings and binaries."""
    kind = {pa.large_string(): pa.string(), pa.large_binary(): pa.binary()}.get(field.type, field.type)
    return pa.field(field.name, kind, nullable=field.nullable)


def _arrow_schema(schema: Schema, columns: Sequence[str]) -> pa.Schema:
    arrow = schema_to_pyarrow(schema.select(*columns), include_field_ids=False)
    return pa.schema([_plain(arrow.field(c)) for c in columns])


@dataclass(frozen=True)
class _Plan:
    """Everything that decides a dataset's bytes, but the snapshot's rows themselves."""

    day_column: str
    first: dt.date
    last: dt.date
    columns: tuple[str, ...]
    order_by: tuple[str, ...]
    writer: WriterOptions


def _sorted_batches(
    con: duckdb.DuckDBPyConnection, table: Table, snapshot: Snapshot, plan: _Plan
) -> Iterator[pa.RecordBatch]:
    """The plan's rows of the snapshot in the plan's order: PyIceberg reads, DuckDB sorts (spilling if it must)."""
    row_filter, _ = _day_filter(plan.day_column, plan.first, plan.last)
    read = tuple(dict.fromkeys((plan.day_column, *plan.columns)))
    scan = table.scan(row_filter=row_filter, snapshot_id=snapshot.snapshot_id, selected_fields=read)
    view = "sonik_export_rows"
    con.register(view, scan.to_arrow_batch_reader())
    try:
        select = ", ".join(sql_identifier(c) for c in plan.columns)
        order = ", ".join(f"{sql_identifier(c)} ASC NULLS LAST" for c in plan.order_by)
        yield from con.sql(f"SELECT {select} FROM {view} ORDER BY {order}").to_arrow_reader(_SORT_BATCH_ROWS)
    finally:
        con.unregister(view)


def _files(batches: Iterator[pa.RecordBatch], schema: pa.Schema, writer: WriterOptions) -> Iterator[pa.Table]:
    """The rows cut into files of exactly ``rows_per_file`` rows (the last one fewer), whatever the batches."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        while count >= writer.rows_per_file:
            rows = pa.Table.from_batches(pending)
            yield rows.slice(0, writer.rows_per_file).cast(schema)
            rest = rows.slice(writer.rows_per_file)
            pending, count = rest.to_batches(), rest.num_rows
    if count:
        yield pa.Table.from_batches(pending).cast(schema)


def _write(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    snapshot: Snapshot,
    schema: Schema,
    plan: _Plan,
    out: _Folder,
    expected: Sequence[ExportedFile] | None = None,
) -> list[ExportedFile]:
    """Write the plan's files to ``out``; with ``expected``, each must have the same name, rows and sha256.

    Nothing is left in ``out`` when it fails: a dataset is written whole or not at all.
    """
    written: list[ExportedFile] = []
    try:
        rows = _files(_sorted_batches(con, table, snapshot, plan), _arrow_schema(schema, plan.columns), plan.writer)
        for index, part in enumerate(rows):
            data = plan.writer.parquet_bytes(part)
            file_name = f"{DATA_FOLDER}/part-{index:05d}.parquet"
            made = ExportedFile(file_name, part.num_rows, data.size, hashlib.sha256(data).hexdigest())
            if expected is not None:
                _check_same(made, expected[index] if index < len(expected) else None)
            out.write(made.name, data)
            written.append(made)
        if expected is not None and len(written) != len(expected):
            raise ExportError(f"made {len(written)} files where the manifest lists {len(expected)}")
    except BaseException:
        out.delete([f.name for f in written])
        raise
    return written


def _check_same(made: ExportedFile, want: ExportedFile | None) -> None:
    if want is None:
        raise ExportError(f"made {made.name}, which the manifest does not list")
    if (made.name, made.rows, made.sha256) != (want.name, want.rows, want.sha256):
        raise ExportError(
            f"{made.name} differs from the manifest: {made.rows:,} rows, sha256 {made.sha256} "
            f"where it lists {want.rows:,} rows, sha256 {want.sha256}"
        )


def _pipeline_version() -> str:
    try:
        return importlib.metadata.version("sonik_pipeline")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------------------------------------
# The tags
# ---------------------------------------------------------------------------------------------


def _tag_holder(catalog: Catalog, tag: str) -> tuple[Table, int] | None:
    """The exportable table holding tag ``tag`` and the snapshot it points at, if any."""
    for name in lakehouse_table_names(catalog):
        if name != PLAYS.identifier and not name.startswith(f"{MARTS}."):
            continue
        table = catalog.load_table(name)
        ref = table.metadata.refs.get(tag)
        if ref is not None and ref.snapshot_ref_type == SnapshotRefType.TAG:
            return table, ref.snapshot_id
    return None


def _tag(table: Table, snapshot_id: int, name: str, record: dict[str, str]) -> None:
    """Create tag export-<name> on ``snapshot_id``, and the record of the export, in one commit."""
    with transaction(table) as txn:
        # No max-ref-age: the tag keeps its snapshot until it is released.
        ManageSnapshots(txn).create_tag(snapshot_id, TAG_PREFIX + name).commit()
        txn.set_properties({RECORD_PROPERTY_PREFIX + name: json.dumps(record, sort_keys=True)})


def _untag(table: Table, name: str) -> None:
    with transaction(table) as txn:
        ManageSnapshots(txn).remove_tag(TAG_PREFIX + name).commit()
        if RECORD_PROPERTY_PREFIX + name in table.properties:
            txn.remove_properties(RECORD_PROPERTY_PREFIX + name)


def default_name(table: str, first: dt.date, last: dt.date, snapshot_id: int) -> str:
    return f"{table.split('.', 1)[1]}-{first}-{last}-{snapshot_id}"


# ---------------------------------------------------------------------------------------------
# What the `sonik export` command does
# ---------------------------------------------------------------------------------------------


def export_dataset(
    catalog: Catalog,
    table: str,
    first: dt.date,
    last: dt.date,
    out: str,
    *,
    columns: Sequence[str] | None = None,
    snapshot_id: int | None = None,
    as_of: dt.datetime | None = None,
    name: str | None = None,
    writer: WriterOptions = WriterOptions(),
    con: duckdb.DuckDBPyConnection | None = None,
    now: dt.datetime | None = None,
) -> ExportManifest:
    """Write days ``first``..``last`` of ``table`` at one snapshot (the current one, ``snapshot_id`` or the one
    current at ``as_of``) to the folder ``out``, and tag that snapshot ``export-<name>``.

    The tag is committed before any row is read, so an expiry running meanwhile keeps the snapshot; if
    the export then fails, the tag it made is dropped and no file is left in ``out``.
    """
    if first > last:
        raise ExportError(f"the first day {first} is after the last day {last}")
    if snapshot_id is not None and as_of is not None:
        raise ExportError("give a snapshot id or a time, not both")
    identifier = exportable_table(catalog, table)
    iceberg_table = timetravel.load(catalog, identifier)
    if snapshot_id is not None:
        snapshot = timetravel.snapshot_by_id(iceberg_table, snapshot_id)
    elif as_of is not None:
        snapshot = timetravel.snapshot_as_of(iceberg_table, as_of, ": give the snapshot to export with --snapshot ID")
    else:
        snapshot = iceberg_table.current_snapshot()
        if snapshot is None:
            raise ExportError(f"{identifier} has no snapshot yet: nothing to export")
    schema = _snapshot_schema(iceberg_table, snapshot)
    day_column = _day_column(schema, identifier)
    chosen = _columns(schema, columns, identifier, snapshot.snapshot_id)
    row_filter, filter_sql = _day_filter(day_column, first, last)
    days = format_days(first, last)
    if not any(True for _ in iceberg_table.scan(row_filter=row_filter, snapshot_id=snapshot.snapshot_id).plan_files()):
        raise ExportError(f"{identifier} has no rows in {days} at snapshot {snapshot.snapshot_id}")
    name = name or default_name(identifier, first, last, snapshot.snapshot_id)
    if not _NAME.fullmatch(name):
        raise ExportError(f"{name!r} is not a dataset name: letters, digits, '.', '_' and '-', at most 100")
    folder = _Folder.at(out, catalog.properties)
    folder.check_empty()
    created = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")

    holder = _tag_holder(catalog, TAG_PREFIX + name)
    tagged_here = holder is None
    if holder is not None and (table_name(holder[0]), holder[1]) != (identifier, snapshot.snapshot_id):
        raise ExportError(
            f"an export named {name!r} already keeps snapshot {holder[1]} of {table_name(holder[0])}: "
            f"choose another --name, or release it first (sonik export --release {name})"
        )
    if tagged_here:
        record = {"created_at": created, "days": days, "out": folder.shown}
        _tag(iceberg_table, snapshot.snapshot_id, name, record)
    plan = _Plan(day_column, first, last, tuple(chosen), (day_column, *(c for c in chosen if c != day_column)), writer)
    own = con is None
    con = duckdb.connect() if con is None else con
    files: list[ExportedFile] = []
    try:
        files = _write(con, iceberg_table, snapshot, schema, plan, folder)
        manifest = ExportManifest(
            name=name,
            table=identifier,
            table_uuid=str(iceberg_table.metadata.table_uuid),
            snapshot_id=snapshot.snapshot_id,
            snapshot_committed_at=dt.datetime.fromtimestamp(snapshot.timestamp_ms / 1000, dt.UTC).isoformat(),
            tag=TAG_PREFIX + name,
            day_column=day_column,
            first_day=first,
            last_day=last,
            filter=filter_sql,
            columns=tuple(
                ExportedColumn(c, str(schema.find_field(c).field_type), schema.find_field(c).required) for c in chosen
            ),
            order_by=plan.order_by,
            rows=sum(f.rows for f in files),
            files=tuple(files),
            writer=writer,
            pyarrow_version=pa.__version__,
            pipeline_version=_pipeline_version(),
            created_at=created,
        )
        folder.write(MANIFEST, manifest.to_json().encode())
    except BaseException:
        folder.delete([f.name for f in files])  # written, but no manifest (_write cleans up after itself)
        if tagged_here:
            _untag(iceberg_table.refresh(), name)
        raise
    finally:
        if own:
            con.close()
    return manifest


def reexport(
    catalog: Catalog, manifest_location: str, out: str, *, con: duckdb.DuckDBPyConnection | None = None
) -> Reexport:
    """Make the dataset of the manifest at ``manifest_location`` again in ``out``, byte for byte.

    Every file is checked against the manifest's name, rows and sha256 before it is written; the
    manifest itself is copied as it is, so the two folders are the same. A snapshot no longer in the
    table (its tag released, then expired), a different table of the same name, or a file that comes
    out different is an ``ExportError``, and nothing is left in ``out``.
    """
    manifest, text = _read_manifest(manifest_location, catalog.properties)
    table = timetravel.load(catalog, manifest.table)
    if str(table.metadata.table_uuid) != manifest.table_uuid:
        raise ExportError(
            f"{manifest.table} is not the table {manifest.name} was exported from (uuid {table.metadata.table_uuid}, "
            f"the manifest's {manifest.table_uuid})"
        )
    snapshot = table.snapshot_by_id(manifest.snapshot_id)
    ref = table.metadata.refs.get(manifest.tag)
    tag_held = ref is not None and ref.snapshot_id == manifest.snapshot_id
    if snapshot is None:
        why = "its tag is gone" if not tag_held else "it was removed"
        raise ExportError(
            f"{manifest.table}: snapshot {manifest.snapshot_id} of {manifest.name} is no longer in the table "
            f"({why}, and expiry reclaimed it): the dataset cannot be made again"
        )
    schema = _snapshot_schema(table, snapshot)
    columns = tuple(c.name for c in manifest.columns)
    plan = _Plan(
        manifest.day_column, manifest.first_day, manifest.last_day, columns, manifest.order_by, manifest.writer
    )
    folder = _Folder.at(out, catalog.properties)
    folder.check_empty()
    own = con is None
    con = duckdb.connect() if con is None else con
    try:
        _write(con, table, snapshot, schema, plan, folder, expected=manifest.files)
    except ExportError as exc:
        if manifest.pyarrow_version != pa.__version__:
            raise ExportError(
                f"{exc} (the manifest was written with PyArrow {manifest.pyarrow_version}, this is {pa.__version__})"
            ) from None
        raise
    finally:
        if own:
            con.close()
    folder.write(MANIFEST, text)
    return Reexport(manifest, folder.shown, tag_held)


def list_exports(catalog: Catalog) -> list[ExportRecord]:
    """Every export whose tag is held, oldest first."""
    records = []
    for name in lakehouse_table_names(catalog):
        if name != PLAYS.identifier and not name.startswith(f"{MARTS}."):
            continue
        table = catalog.load_table(name)
        for ref_name, ref in table.metadata.refs.items():
            if ref.snapshot_ref_type != SnapshotRefType.TAG or not ref_name.startswith(TAG_PREFIX):
                continue
            export = ref_name.removeprefix(TAG_PREFIX)
            record = json.loads(table.properties.get(RECORD_PROPERTY_PREFIX + export) or "{}")
            records.append(
                ExportRecord(
                    export,
                    name,
                    ref.snapshot_id,
                    record.get("created_at", ""),
                    record.get("days", ""),
                    record.get("out", ""),
                )
            )
    return sorted(records, key=lambda r: (r.created_at, r.name))


def release_export(catalog: Catalog, name: str) -> ExportRecord:
    """Drop export ``name``'s tag: its snapshot then expires like any other (its files already written stay)."""
    held = {r.name: r for r in list_exports(catalog)}
    if name not in held:
        known = ", ".join(held) or "none"
        raise ExportError(f"no export named {name!r} holds a snapshot (exports: {known})")
    record = held[name]
    _untag(catalog.load_table(record.table), name)
    return record
