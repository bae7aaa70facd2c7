"""Snapshot expiry (Iceberg's ``expire_snapshots``) that really reclaims storage.

PyIceberg's ``table.maintenance.expire_snapshots()`` removes snapshots from the metadata and deletes
no file. Here the expiry is committed through that builder, then every file that only expired
snapshots reached (data files, manifests, manifest lists) is deleted, and so are metadata JSON files
that dropped out of the table's metadata log (``write.metadata.previous-versions-max``). Files that
any retained snapshot reaches are never deleted: reachability is computed from the committed metadata.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.table.update import AssertRefSnapshotId

from sonik_pipeline.maintenance.files import (
    METADATA,
    StoredFile,
    delete_files,
    file_key,
    list_table_files,
    snapshot_files,
)

log = logging.getLogger(__name__)

DEFAULT_RETENTION = dt.timedelta(days=30)
DEFAULT_RETAIN_LAST = 5
COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class ExpiryOptions:
    retention: dt.timedelta = DEFAULT_RETENTION  # expire snapshots older than this...
    retain_last: int = DEFAULT_RETAIN_LAST  # ...but always keep the newest N of the current lineage
    dry_run: bool = False
    now: dt.datetime | None = None  # the clock (tests fix it); None: the real time


@dataclass
class ExpiryReport:
    table: str
    snapshots_expired: list[int] = field(default_factory=list)
    snapshots_kept: int = 0
    files_deleted: Counter[str] = field(default_factory=Counter)
    bytes_deleted: Counter[str] = field(default_factory=Counter)
    deleted: list[str] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0


def _lineage(table: Table) -> list[Snapshot]:
    """The current snapshot and its ancestors, newest first."""
    by_id = {s.snapshot_id: s for s in table.snapshots()}
    out, snapshot = [], table.current_snapshot()
    while snapshot is not None:
        out.append(snapshot)
        snapshot = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id is not None else None
    return out


def snapshots_to_expire(table: Table, options: ExpiryOptions) -> list[int]:
    """Older than the retention, not among the newest ``retain_last`` of the lineage, not a branch or tag head."""
    now = options.now or dt.datetime.now(dt.UTC)
    cutoff_ms = int((now - options.retention).timestamp() * 1000)
    protected = {s.snapshot_id for s in _lineage(table)[: options.retain_last]}
    protected |= {ref.snapshot_id for ref in table.metadata.refs.values()}
    return [s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected]


def _metadata_beyond_log(table: Table, stored: list[StoredFile]) -> list[StoredFile]:
    """Metadata JSON files that fell out of the metadata log (``write.metadata.previous-versions-max``).

    Only files older than the oldest logged version qualify, so a concurrent writer's new metadata
    file, written before its commit lands, is never taken.
    """
    log_entries = table.metadata.metadata_log
    live = {file_key(e.metadata_file) for e in log_entries} | {file_key(table.metadata_location)}
    oldest_ms = min((e.timestamp_ms for e in log_entries), default=table.metadata.last_updated_ms)
    oldest = dt.datetime.fromtimestamp(oldest_ms / 1000, dt.UTC)
    return [
        f
        for f in stored
        if f.key.endswith(".metadata.json") and f.key not in live and f.modified.astimezone(dt.UTC) < oldest
    ]


def _commit_expiry(table: Table, snapshot_ids: list[int]) -> None:
    """Expire ``snapshot_ids`` only if no branch or tag moved since they were chosen.

    PyIceberg 0.12's ExpireSnapshots commits with no requirement, and the catalog applies it to the
    metadata current at commit time: a rollback committed in between (``sonik rollback``, rollback_job)
    would have the snapshot it made current expired and the ``main`` branch dropped with it. Asserting
    every ref, as Java's expiry does by committing against its base metadata, makes that a
    CommitFailedException, on which the expiry is planned again. Setting the builder's ``_requirements``
    is the one PyIceberg internal used here; an ExpireSnapshots that asserts its refs would replace it.
    """
    expire = table.maintenance.expire_snapshots().by_ids(snapshot_ids)
    expire._requirements = tuple(
        AssertRefSnapshotId(ref=name, snapshot_id=ref.snapshot_id) for name, ref in table.metadata.refs.items()
    )
    expire.commit()


def expire_snapshots(table: Table, options: ExpiryOptions, progress: Callable[[str], None] = log.info) -> ExpiryReport:
    """Expire old snapshots and delete the files nothing retained can reach any more."""
    started = time.monotonic()
    report = ExpiryReport(table=".".join(table.name()), dry_run=options.dry_run)
    for attempt in range(COMMIT_ATTEMPTS):
        table.refresh()
        expired_ids = snapshots_to_expire(table, options)
        if not expired_ids:
            break
        by_id = {s.snapshot_id: s for s in table.snapshots()}
        reached_by_expired = snapshot_files(table, [by_id[i] for i in expired_ids])
        if options.dry_run:
            retained = snapshot_files(table, [s for s in table.snapshots() if s.snapshot_id not in expired_ids])
            candidates = {k: kind for k, kind in reached_by_expired.items() if k not in retained}
            report.snapshots_expired = expired_ids
            break
        try:
            # An expiry commit only edits metadata, so PyIceberg has nothing to re-apply on a conflict;
            # a writer that committed meanwhile is handled by planning the expiry again.
            _commit_expiry(table, expired_ids)
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            progress(f"{report.table}: a writer committed during expiry; planning it again")
            continue
        report.snapshots_expired = expired_ids
        table.refresh()
        # Reachability from what was committed, including any snapshot a concurrent writer added.
        retained = snapshot_files(table, table.snapshots())
        candidates = {k: kind for k, kind in reached_by_expired.items() if k not in retained}
        break
    else:  # pragma: no cover - the loop always breaks or raises
        raise AssertionError("unreachable")

    if report.snapshots_expired:
        stored = list_table_files(table)
        sizes = {f.key: f.size for f in stored}
        existing = {k: kind for k, kind in candidates.items() if k in sizes}
        existing.update({f.key: METADATA for f in _metadata_beyond_log(table, stored)})
        for key, kind in existing.items():
            report.files_deleted[kind] += 1
            report.bytes_deleted[kind] += sizes[key]
        report.deleted = sorted(existing)
        if not options.dry_run:
            delete_files(table, existing)
        progress(
            f"{report.table}: {'would expire' if options.dry_run else 'expired'} {len(report.snapshots_expired)} "
            f"snapshots, {'would delete' if options.dry_run else 'deleted'} {sum(report.files_deleted.values())} "
            f"files ({sum(report.bytes_deleted.values()):,} B)"
        )
    report.snapshots_kept = len(table.snapshots()) - (len(report.snapshots_expired) if options.dry_run else 0)
    report.seconds = time.monotonic() - started
    return report
