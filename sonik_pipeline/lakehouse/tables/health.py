"""A table's health in a few numbers (small files, manifests, snapshots, metadata size), read from its metadata.

What tells an operator whether maintenance keeps up: small files climb with each ingest and fall after
compaction, manifests after their rewrite, snapshots and the oldest one's age after expiry. Read from
metadata only (the current snapshot's manifests, never a data file), so it costs the same on any day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pyiceberg.manifest import ManifestContent, ManifestFile
from pyiceberg.table import Table
from pyiceberg.utils.concurrent import ExecutorFactory

from sonik_pipeline.lakehouse.tables.writes import target_file_size

# A data file is small below this share of the table's target size: compaction's own default.
SMALL_FILE_RATIO = 0.75
MIB = 1024 * 1024


@dataclass(frozen=True)
class TableHealth:
    table: str
    data_files: int
    small_files: int  # under SMALL_FILE_RATIO of write.target-file-size-bytes
    avg_file_mb: float
    delete_files: int
    snapshots: int
    manifests: int
    metadata_json_bytes: int
    data_bytes: int
    oldest_snapshot_age_hours: float

    def figures(self) -> dict[str, int | float]:
        """The numbers under their plain names (what the Dagster UI plots and `sonik tables` shows)."""
        return {key: value for key, value in asdict(self).items() if key != "table"}


def table_health(
    table: Table,
    now: dt.datetime,
    small_file_ratio: float = SMALL_FILE_RATIO,
    current_manifests: Sequence[ManifestFile] | None = None,
) -> TableHealth:
    """The health of ``table`` at its current snapshot; ``now`` is the clock the snapshots' age is read against.

    ``current_manifests``: the current snapshot's manifests, when the caller has listed them already
    (``sonik tables`` checks them first), so that the manifest list is read once.
    """
    identifier = ".".join(table.name())
    snapshots = table.metadata.snapshots
    oldest_ms = min((s.timestamp_ms for s in snapshots), default=None)
    age_hours = 0.0 if oldest_ms is None else max(0.0, (now.timestamp() * 1000 - oldest_ms) / 3_600_000)
    data_files = small = delete_files = data_bytes = manifests = 0
    if (current := table.current_snapshot()) is not None:
        small_below = small_file_ratio * target_file_size(table)
        listed = list(current_manifests) if current_manifests is not None else current.manifests(table.io)
        manifests = len(listed)
        # One size per live file: the manifests are read in parallel, as PyIceberg's own planning does.
        sizes = ExecutorFactory.get_or_create().map(lambda m: _live_file_sizes(table, m), listed)
        for manifest, files in zip(listed, sizes, strict=True):
            if manifest.content == ManifestContent.DELETES:
                delete_files += len(files)
                continue
            data_files += len(files)
            data_bytes += sum(files)
            small += sum(1 for size in files if size < small_below)
    return TableHealth(
        table=identifier,
        data_files=data_files,
        small_files=small,
        avg_file_mb=round(data_bytes / data_files / MIB, 3) if data_files else 0.0,
        delete_files=delete_files,
        snapshots=len(snapshots),
        manifests=manifests,
        metadata_json_bytes=len(table.io.new_input(table.metadata_location)),
        data_bytes=data_bytes,
        oldest_snapshot_age_hours=round(age_hours, 2),
    )


def _live_file_sizes(table: Table, manifest: ManifestFile) -> list[int]:
    return [e.data_file.file_size_in_bytes for e in manifest.fetch_manifest_entry(table.io, discard_deleted=True)]
