"""Which files a table's metadata references, and listing and deleting files under its location."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.manifest import DataFileContent, ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

from sonik_pipeline.lakehouse.deletion import check_deletable

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


_METADATA_NAME = re.compile(r"(\d+)-[^/]*\.metadata\.json")  # what PyIceberg's location provider writes


def metadata_version(key: str) -> int | None:
    """The version in a metadata file's name (``00022-<uuid>.metadata.json`` -> 22); None for other names."""
    match = _METADATA_NAME.fullmatch(key.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


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
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                is_data = manifest.content == ManifestContent.DATA and entry.data_file.content == DataFileContent.DATA
                reached[file_key(entry.data_file.file_path)] = DATA if is_data else DELETE
    return reached


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


def list_table_files(table: Table) -> list[StoredFile]:
    """Every file stored under the table's location (data/ and metadata/)."""
    filesystem, root = _filesystem(table, table.location())
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return [
        StoredFile(info.path, info.size or 0, info.mtime or dt.datetime.now(dt.UTC))
        for info in infos
        if info.type == pafs.FileType.File
    ]


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
