"""Which files a table's metadata references, and listing and deleting files under its location."""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pyarrow import fs as pafs
from pyiceberg.expressions import (
    AlwaysFalse,
    AlwaysTrue,
    And,
    BooleanExpression,
    GreaterThanOrEqual,
    In,
    IsNaN,
    IsNull,
    LessThanOrEqual,
    Or,
)
from pyiceberg.expressions.visitors import IN_PREDICATE_LIMIT, manifest_evaluator
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.manifest import DataFileContent, ManifestContent, ManifestFile
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

from sonik_pipeline.lakehouse.tables.attachment import SUPERSEDED_TABLES_PROPERTY
from sonik_pipeline.lakehouse.tables.deletion import check_deletable

DATA, DELETE, MANIFEST, MANIFEST_LIST, METADATA, STATISTICS = (
    "data_files",
    "delete_files",
    "manifests",
    "manifest_lists",
    "metadata_files",
    "statistics_files",
)
EMPTY: Mapping[str, str] = MappingProxyType({})


def file_key(location: str) -> str:
    """A location without its scheme, as the filesystem lists it ('/abs/path' or 'bucket/key')."""
    return PyArrowFileIO.parse_location(location)[2]


def location_of(table: Table, key: str) -> str:
    """The location of a key listed on the table's filesystem (the inverse of ``file_key``)."""
    scheme, netloc, _ = PyArrowFileIO.parse_location(table.location())
    if scheme == "file":
        return key
    return f"{scheme}://{netloc}{key}" if scheme in ("hdfs", "viewfs") else f"{scheme}://{key}"


def snapshot_files(table: Table, snapshots: Iterable[Snapshot], known: Mapping[str, str] = EMPTY) -> dict[str, str]:
    """Every file the given snapshots reach (manifest lists, manifests, data and delete files): key -> kind.

    Manifest lists and manifests already in ``known`` are not read again (nor returned): both are
    immutable, so what they reach is in ``known`` already.
    """
    io = table.io
    reached: dict[str, str] = {}
    seen_manifests: set[str] = set()
    for snapshot in snapshots:
        if file_key(snapshot.manifest_list) in known:
            continue
        reached[file_key(snapshot.manifest_list)] = MANIFEST_LIST
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in seen_manifests or file_key(manifest.manifest_path) in known:
                continue
            seen_manifests.add(manifest.manifest_path)
            reached[file_key(manifest.manifest_path)] = MANIFEST
            reached.update(live_files(table, manifest))
    return reached


def live_files(table: Table, manifest: ManifestFile) -> dict[str, str]:
    """The data and delete files a manifest holds live (added or existing, not deleted): key -> kind."""
    return live_contents(table, manifest)[0]


def live_contents(table: Table, manifest: ManifestFile) -> tuple[dict[str, str], set[tuple]]:
    """``live_files``, and the partitions those files are in (tuples of the manifest's spec)."""
    entries = manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    is_data = manifest.content == ManifestContent.DATA
    files = {
        file_key(e.data_file.file_path): DATA if is_data and e.data_file.content == DataFileContent.DATA else DELETE
        for e in entries
    }
    return files, {tuple(e.data_file.partition) for e in entries}


def listed_manifests(table: Table, snapshots: Iterable[Snapshot]) -> dict[str, ManifestFile]:
    """The manifests the snapshots' manifest lists name, by path: only the lists are read, no manifest."""
    return {m.manifest_path: m for snapshot in snapshots for m in snapshot.manifests(table.io)}


def manifests_that_may_hold(
    table: Table, manifests: Iterable[ManifestFile], partitions: Mapping[int, Collection[tuple]]
) -> list[ManifestFile]:
    """Of ``manifests``, those that may hold a file in one of ``partitions`` (spec id -> partition tuples).

    Decided from the manifest list's partition summaries alone (PyIceberg's ``manifest_evaluator``, as a
    scan prunes manifests), so the manifests left out are never opened. When in doubt a manifest is kept:
    one of a spec not in ``partitions``, one without summaries, or any whose spec cannot be evaluated.
    """
    evaluators = {spec_id: _partition_evaluator(table, spec_id, values) for spec_id, values in partitions.items()}
    kept = []
    for manifest in manifests:
        evaluator = evaluators.get(manifest.partition_spec_id)
        if evaluator is None or _may_match(evaluator, manifest):
            kept.append(manifest)
    return kept


def _partition_evaluator(
    table: Table, spec_id: int, values: Collection[tuple]
) -> Callable[[ManifestFile], bool] | None:
    """A test of a manifest's summaries against ``values``, per field (a box around them); None if not possible."""
    try:
        spec = table.specs()[spec_id]
        fields = spec.partition_type(table.schema()).fields
        predicates = [_field_predicate(f.name, [v[i] for v in values]) for i, f in enumerate(fields)]
        return manifest_evaluator(spec, table.schema(), functools.reduce(And, predicates, AlwaysTrue()))
    except Exception:  # an unreadable spec prunes nothing: every manifest of it is read
        return None


def _field_predicate(name: str, column: list) -> BooleanExpression:
    """The values one partition field takes: In (or their range, past PyIceberg's In limit), null, NaN."""
    nan = {v for v in column if isinstance(v, float) and math.isnan(v)}
    present = {v for v in column if v is not None} - nan
    predicates: list[BooleanExpression] = []
    if present:
        many = len(present) > IN_PREDICATE_LIMIT  # PyIceberg's evaluator would not prune a longer In
        in_range = And(GreaterThanOrEqual(name, min(present)), LessThanOrEqual(name, max(present)))
        predicates.append(in_range if many else In(name, present))
    if None in column:
        predicates.append(IsNull(name))
    if nan:
        predicates.append(IsNaN(name))
    return functools.reduce(Or, predicates, AlwaysFalse())


def _may_match(evaluator: Callable[[ManifestFile], bool], manifest: ManifestFile) -> bool:
    try:
        return evaluator(manifest)
    except Exception:  # summaries that cannot be compared prove nothing: read the manifest
        return True


def metadata_files(table: Table, metadata: TableMetadata | None = None, location: str | None = None) -> dict[str, str]:
    """A metadata JSON (by default the current one), those in its log, and statistics files: key -> kind."""
    metadata = metadata or table.metadata
    files = {file_key(location or table.metadata_location): METADATA}
    files.update({file_key(entry.metadata_file): METADATA for entry in metadata.metadata_log})
    for stats in [*metadata.statistics, *metadata.partition_statistics]:
        files[file_key(stats.statistics_path)] = STATISTICS
    return files


def referenced_files(table: Table) -> dict[str, str]:
    """Everything the table's current metadata can reach, through any snapshot or the metadata log."""
    return {**snapshot_files(table, table.snapshots()), **metadata_files(table)}


def metadata_references(
    table: Table, metadata: TableMetadata, location: str, known: Mapping[str, str] = EMPTY
) -> dict[str, str]:
    """What a metadata file of ``table`` reaches, committed or not; manifests in ``known`` are not read again."""
    return {**snapshot_files(table, metadata.snapshots, known), **metadata_files(table, metadata, location)}


def other_tables_metadata(table: Table, keys: Iterable[str], committed_only: bool = True) -> dict[str, list[str]]:
    """Of the metadata JSON files ``keys`` under the table's location, those of other tables that recorded a
    commit: table uuid -> keys. Such files mean the table was created over a table the catalog lost
    (``lakehouse.attachment``); they and everything they reach are that table's, not orphans. Tables this one
    was re-attached in place of (``sonik reattach --replace``) are not others: their files are its orphans.

    With ``committed_only=False``, also other tables' files that recorded no commit (a creation that never
    held data). A file that cannot be read (half-written) is left to the callers' own rules for such files.
    """
    own = {str(table.metadata.table_uuid), *table.properties.get(SUPERSEDED_TABLES_PROPERTY, "").split(",")}
    others: dict[str, list[str]] = {}
    for key in keys:
        try:
            metadata = FromInputFile.table_metadata(table.io.new_input(location_of(table, key)))
        except Exception:  # unreadable: not evidence of another table
            continue
        if str(metadata.table_uuid) not in own and (metadata.snapshots or not committed_only):
            others.setdefault(str(metadata.table_uuid), []).append(key)
    return others


@dataclass(frozen=True)
class StoredFile:
    key: str
    size: int
    modified: dt.datetime


def _filesystem(table: Table, location: str) -> tuple[pafs.FileSystem, str]:
    io = table.io
    if not isinstance(io, PyArrowFileIO):
        raise TypeError(f"listing files needs PyArrowFileIO, the table uses {type(io).__name__}")
    scheme, netloc, path = PyArrowFileIO.parse_location(location)
    return io.fs_by_scheme(scheme, netloc), path


def stat_files(table: Table, keys: Iterable[str]) -> list[StoredFile]:
    """Those of ``keys`` that exist, with size and time: one look-up each, whatever else the table stores."""
    filesystem, _ = _filesystem(table, table.location())
    infos = filesystem.get_file_info(list(keys))
    return [_stored(info) for info in infos if info.type == pafs.FileType.File]


def list_folders(table: Table, folders: Iterable[str]) -> list[StoredFile]:
    """The files directly in ``folders`` (keys), not in their sub-folders; a missing folder lists nothing."""
    filesystem, _ = _filesystem(table, table.location())
    stored: list[StoredFile] = []
    for folder in folders:
        infos = filesystem.get_file_info(pafs.FileSelector(folder, recursive=False, allow_not_found=True))
        stored += [_stored(info) for info in infos if info.type == pafs.FileType.File]
    return stored


def _stored(info: pafs.FileInfo) -> StoredFile:
    return StoredFile(info.path, info.size or 0, info.mtime or dt.datetime.now(dt.UTC))


def list_table_files(table: Table) -> list[StoredFile]:
    """Every file stored under the table's location (data/ and metadata/)."""
    filesystem, root = _filesystem(table, table.location())
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return [_stored(info) for info in infos if info.type == pafs.FileType.File]


def kind_of_unreferenced(key: str) -> str:
    """Classify a file that no metadata references, by its name (Iceberg's naming conventions)."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith(".metadata.json"):
        return METADATA
    if name.startswith("snap-") and name.endswith(".avro"):
        return MANIFEST_LIST
    if name.endswith(".avro"):
        return MANIFEST
    if name.endswith((".stats", ".puffin")):
        return STATISTICS
    return DATA


def check_keys_deletable(table: Table, keys: Iterable[str]) -> list[str]:
    """The keys, once all are checked to lie under the table's location and the warehouse (else UnsafeDeletion)."""
    keys = list(keys)
    check_deletable(table, [location_of(table, key) for key in keys])
    return keys


def delete_files(table: Table, keys: Iterable[str]) -> None:
    """Delete by key through the table's filesystem (the same credentials and endpoint it writes with).

    Every key is checked before any is deleted: a file outside the table or the warehouse stops them all.
    """
    keys = check_keys_deletable(table, keys)
    filesystem, _ = _filesystem(table, table.location())
    for key in keys:
        try:
            filesystem.delete_file(key)
        except FileNotFoundError:
            pass  # already gone: deleting is idempotent


@dataclass
class DeletionReport:
    """What a clean-up deleted (or, in a dry run, would delete) from one table, by kind of file."""

    table: str
    files_deleted: Counter[str] = field(default_factory=Counter)
    bytes_deleted: Counter[str] = field(default_factory=Counter)
    deleted: list[str] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0
