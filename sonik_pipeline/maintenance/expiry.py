"""Snapshot expiry (Iceberg's ``expire_snapshots``) that really reclaims storage.

PyIceberg's ``table.maintenance.expire_snapshots()`` removes snapshots from the metadata and deletes
no file. Here the expiry is committed through that builder, then every file that only expired
snapshots reached (data files, manifests, manifest lists) is deleted, and so are metadata JSON files
that dropped out of the table's metadata log (``write.metadata.previous-versions-max``). Files that
any retained snapshot reaches are never deleted: reachability is computed from the committed metadata.

The same commit records when the expired snapshots were current (``timetravel.ExpiredHistory``, the
table property ``sonik.expired-history``): PyIceberg drops their snapshot-log entries and nothing
else, so without it "as of T" would silently read an older snapshot for those times. To make it one
commit, PyIceberg's ``ExpireSnapshots`` builder is made on our own transaction rather than through
``table.maintenance`` (which commits alone); a PyIceberg that cleared the history as Java Iceberg
does would make the record redundant, and test_time_travel pins both behaviours.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.catalog import table_name
from sonik_pipeline.lakehouse.iceberg_internals import expire_snapshots_in, transaction
from sonik_pipeline.lakehouse.snapshots import lineage
from sonik_pipeline.lakehouse.timetravel import EXPIRED_HISTORY, expired_history_after
from sonik_pipeline.maintenance.files import (
    METADATA,
    DeletionReport,
    StoredFile,
    check_keys_deletable,
    delete_files,
    file_key,
    list_table_files,
    snapshot_files,
)

log = logging.getLogger(__name__)

# Iceberg's own retention properties, set on every table (lakehouse/tables.py) and read here.
MAX_SNAPSHOT_AGE_PROPERTY = "history.expire.max-snapshot-age-ms"
MIN_SNAPSHOTS_PROPERTY = "history.expire.min-snapshots-to-keep"
DEFAULT_RETENTION = dt.timedelta(days=30)
DEFAULT_RETAIN_LAST = 5
COMMIT_ATTEMPTS = 5


@dataclass(frozen=True)
class ExpiryOptions:
    retention: dt.timedelta | None = None  # expire snapshots older than this (None: the table's property)...
    retain_last: int | None = None  # ...but keep the newest N of the current lineage (None: the property)
    dry_run: bool = False
    now: dt.datetime | None = None  # the clock (tests fix it); None: the real time

    def for_table(self, table: Table) -> tuple[dt.timedelta, int]:
        """(retention, retain_last) for ``table``: these options, else its history.expire.* properties."""
        properties = table.properties
        age_ms = properties.get(MAX_SNAPSHOT_AGE_PROPERTY)
        if self.retention is not None:
            retention = self.retention
        else:
            retention = dt.timedelta(milliseconds=int(age_ms)) if age_ms else DEFAULT_RETENTION
        keep = self.retain_last if self.retain_last is not None else properties.get(MIN_SNAPSHOTS_PROPERTY)
        return retention, int(keep) if keep is not None else DEFAULT_RETAIN_LAST


@dataclass
class ExpiryReport(DeletionReport):
    snapshots_expired: list[int] = field(default_factory=list)


def snapshots_to_expire(table: Table, options: ExpiryOptions) -> list[int]:
    """Older than the retention, not among the newest ``retain_last`` of the lineage, not a branch or tag head."""
    now = options.now or dt.datetime.now(dt.UTC)
    retention, retain_last = options.for_table(table)
    cutoff_ms = int((now - retention).timestamp() * 1000)
    protected = {s.snapshot_id for s in itertools.islice(lineage(table), retain_last)}
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


def _commit_expiry(table: Table, snapshot_ids: list[int], history: str) -> None:
    """Expire ``snapshot_ids`` and record the history they leave, in one commit, only if no ref moved.

    PyIceberg 0.12's ExpireSnapshots commits with no requirement, and the catalog applies it to the
    metadata current at commit time: a rollback committed in between (``sonik rollback``, rollback_job)
    would have the snapshot it made current expired and the ``main`` branch dropped with it. Asserting
    every ref (``iceberg_internals.expire_snapshots_in``), as Java's expiry does by committing against
    its base metadata, makes that a CommitFailedException, on which the expiry is planned again.
    """
    with transaction(table) as txn:
        expire_snapshots_in(txn, snapshot_ids, table.metadata.refs)
        txn.set_properties({EXPIRED_HISTORY: history})


def expire_snapshots(table: Table, options: ExpiryOptions, progress: Callable[[str], None] = log.info) -> ExpiryReport:
    """Expire old snapshots and delete the files nothing retained can reach any more."""
    started = time.monotonic()
    report = ExpiryReport(table=table_name(table), dry_run=options.dry_run)
    for attempt in range(COMMIT_ATTEMPTS):
        table.refresh()
        expired_ids = snapshots_to_expire(table, options)
        if not expired_ids:
            break
        by_id = {s.snapshot_id: s for s in table.snapshots()}
        retained = snapshot_files(table, [s for s in table.snapshots() if s.snapshot_id not in expired_ids])
        # A manifest a retained snapshot shares (most, after rewrite_manifests) is not read a second time.
        reached_by_expired = snapshot_files(table, [by_id[i] for i in expired_ids], known=retained)
        candidates = {k: kind for k, kind in reached_by_expired.items() if k not in retained}
        # Checked before the commit: a refused deletion leaves the metadata unchanged too.
        check_keys_deletable(table, candidates)
        if options.dry_run:
            report.snapshots_expired = expired_ids
            break
        try:
            # An expiry commit only edits metadata, so PyIceberg has nothing to re-apply on a conflict;
            # a writer that committed meanwhile is handled by planning the expiry again; the record of the
            # history it removes commits with it (see timetravel.expired_history_after).
            history = expired_history_after(table.metadata, set(expired_ids), int(time.time() * 1000))
            _commit_expiry(table, expired_ids, history.to_property())
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            progress(f"{report.table}: a writer committed during expiry; planning it again")
            continue
        report.snapshots_expired = expired_ids
        table.refresh()
        # Reachability from what was committed, including any snapshot a concurrent writer added
        # (manifests already read are immutable, so only the new ones are read).
        retained.update(snapshot_files(table, table.snapshots(), known=retained))
        candidates = {k: kind for k, kind in candidates.items() if k not in retained}
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
    report.seconds = time.monotonic() - started
    return report
