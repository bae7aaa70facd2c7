"""Which files a table's metadata references, and listing and deleting files under its location."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.manifest import DataFileContent, ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

DATA, DELETE, MANIFEST, MANIFEST_LIST, METADATA, STATISTICS = (
    "data_files",
    "delete_files",
    "manifests",
    "manifest_lists",
    "metadata_files",
    "statistics_files",
)
KINDS = (DATA, DELETE, MANIFEST, MANIFEST_LIST, METADATA, STATISTICS)


def file_key(location: str) -> str:
    """A location without its scheme, as the filesystem lists it ('/abs/path' or 'bucket/key')."""
    return PyArrowFileIO.parse_location(location)[2]


def snapshot_files(table: Table, snapshots: Iterable[Snapshot]) -> dict[str, str]:
    """Every file the given snapshots reach (manifest lists, manifests, data and delete files): key -> kind."""
    io = table.io
    reached: dict[str, str] = {}
    seen_manifests: set[str] = set()
    for snapshot in snapshots:
        reached[file_key(snapshot.manifest_list)] = MANIFEST_LIST
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in seen_manifests:
                continue
            seen_manifests.add(manifest.manifest_path)
            reached[file_key(manifest.manifest_path)] = MANIFEST
            for entry in manifest.fetch_manifest_entry(io, discard_deleted=True):
                is_data = manifest.content == ManifestContent.DATA and entry.data_file.content == DataFileContent.DATA
                reached[file_key(entry.data_file.file_path)] = DATA if is_data else DELETE
    return reached


def metadata_files(table: Table) -> dict[str, str]:
    """The current metadata JSON, those in its log, and statistics files: key -> kind."""
    metadata = table.metadata
    files = {file_key(table.metadata_location): METADATA}
    files.update({file_key(entry.metadata_file): METADATA for entry in metadata.metadata_log})
    for stats in [*metadata.statistics, *metadata.partition_statistics]:
        files[file_key(stats.statistics_path)] = STATISTICS
    return files


def referenced_files(table: Table) -> dict[str, str]:
    """Everything the table's current metadata can reach, through any snapshot or the metadata log."""
    return {**snapshot_files(table, table.snapshots()), **metadata_files(table)}


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


def delete_files(table: Table, keys: Iterable[str]) -> None:
    """Delete by key through the table's filesystem (the same credentials and endpoint it writes with)."""
    filesystem, _ = _filesystem(table, table.location())
    for key in keys:
        try:
            filesystem.delete_file(key)
        except FileNotFoundError:
            pass  # already gone: deleting is idempotent
