"""Snapshot expiry (Iceberg's ``expire_snapshots``) that really reclaims storage.

PyIceberg's ``table.maintenance.expire_snapshots()`` removes snapshots from the metadata and deletes
no file. Here the expiry is committed through that builder, then every file that only expired
snapshots reached (data files, manifests, manifest lists) is deleted, and so are metadata JSON files
that dropped out of the table's metadata log (``write.metadata.previous-versions-max``). Files that
any retained snapshot reaches are never deleted: reachability is computed from the committed metadata.

What only expired snapshots reached is found as Java's ``ReachableFileCleanup`` finds it (the manifests
expired snapshots list and no retained one does; their live files, less those a retained manifest still
holds live), except that a retained manifest is read only if its partition summaries in the manifest
list may hold a candidate (``plan_cleanup``). A night's expiry so reads the manifest lists of the
retained snapshots (as many as the retention keeps, each one entry longer a month), the manifests the
expired ones dropped and the few retained ones covering the same partitions, and looks up only the
candidates and the metadata folder, not every manifest and every file of the table.

The same commit records when the expired snapshots were current (``snapshots.ExpiredHistory``, the
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
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import ManifestFile
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.tables.catalog import table_name
from sonik_pipeline.lakehouse.tables.deletion import is_within
from sonik_pipeline.lakehouse.tables.iceberg_internals import expire_snapshots_in, transaction
from sonik_pipeline.lakehouse.tables.snapshots import EXPIRED_HISTORY, expired_history_after, lineage
from sonik_pipeline.maintenance.files import (
    MANIFEST,
    MANIFEST_LIST,
    METADATA,
    DeletionReport,
    StoredFile,
    check_keys_deletable,
    delete_files,
    file_key,
    list_folders,
    listed_manifests,
    live_contents,
    live_files,
    manifests_that_may_hold,
    other_tables_metadata,
    stat_files,
)

log = logging.getLogger(__name__)

# Iceberg's own retention properties, set on every table (lakehouse/tables/definitions.py) and read here.
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
    now: dt.datetime | None = None  # the one clock expiry reads (tests fix it); None: the real time

    def current_time(self) -> dt.datetime:
        """Now, by this expiry's clock: what retention is counted back from and the expired history ends at."""
        return self.now or dt.datetime.now(dt.UTC)

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
    manifests_read: int = 0  # opened to plan the clean-up: dropped ones, and retained ones that may hold a candidate


def snapshots_to_expire(table: Table, options: ExpiryOptions) -> list[int]:
    """Older than the retention, not among the newest ``retain_last`` of the lineage, not a branch or tag head."""
    retention, retain_last = options.for_table(table)
    cutoff_ms = int((options.current_time() - retention).timestamp() * 1000)
    protected = {s.snapshot_id for s in itertools.islice(lineage(table), retain_last)}
    protected |= {ref.snapshot_id for ref in table.metadata.refs.values()}
    return [s.snapshot_id for s in table.snapshots() if s.timestamp_ms < cutoff_ms and s.snapshot_id not in protected]


def _metadata_folders(table: Table) -> set[str]:
    """The folders (keys) the table's metadata JSON files are in, under its location."""
    locations = [table.metadata_location, *(e.metadata_file for e in table.metadata.metadata_log)]
    return {file_key(location).rsplit("/", 1)[0] for location in locations if is_within(location, table.location())}


def _metadata_beyond_log(table: Table, stored: list[StoredFile]) -> list[StoredFile]:
    """Metadata JSON files that fell out of the metadata log (``write.metadata.previous-versions-max``).

    Only files older than the oldest logged version qualify, so a concurrent writer's new metadata
    file, written before its commit lands, is never taken; nor is another table's, when this one was
    created over a table the catalog lost (``lakehouse.attachment``): without them it could not be re-attached.
    """
    log_entries = table.metadata.metadata_log
    live = {file_key(e.metadata_file) for e in log_entries} | {file_key(table.metadata_location)}
    oldest_ms = min((e.timestamp_ms for e in log_entries), default=table.metadata.last_updated_ms)
    oldest = dt.datetime.fromtimestamp(oldest_ms / 1000, dt.UTC)
    beyond = [
        f
        for f in stored
        if f.key.endswith(".metadata.json") and f.key not in live and f.modified.astimezone(dt.UTC) < oldest
    ]
    foreign = other_tables_metadata(table, [f.key for f in beyond], committed_only=False)
    others = {key for keys in foreign.values() for key in keys}
    return [f for f in beyond if f.key not in others]


@dataclass(frozen=True)
class CleanupPlan:
    """The files expiring some snapshots frees, and what finding them read.

    Only manifest lists are read in full (their number is bounded by the retention). A manifest is
    opened only if expired snapshots list it and no retained one does (``dropped``: its live files are
    the candidates), or a retained snapshot lists it and its partition summaries may hold a candidate
    (``checked``: a candidate it holds live is kept). The nightly cost so follows what changed since
    the expired snapshots, not the table's age.
    """

    retained_lists: frozenset[str]  # manifest lists of the retained snapshots (keys)
    retained: Mapping[str, ManifestFile]  # manifests the retained snapshots list, by path
    dropped: Mapping[str, Mapping[str, str]]  # manifests only expired snapshots list -> their live files
    checked: tuple[str, ...]  # retained manifests read for candidates they hold live (paths)
    candidates: Mapping[str, str]  # what only expired snapshots reach: key -> kind


def plan_cleanup(table: Table, expired_ids: Iterable[int]) -> CleanupPlan:
    """What expiring ``expired_ids`` leaves unreachable, from the current metadata (Java's reachable cleanup,
    with retained manifests pruned by partition before any is read)."""
    expired_ids = set(expired_ids)
    expired = [s for s in table.snapshots() if s.snapshot_id in expired_ids]
    retained_snapshots = [s for s in table.snapshots() if s.snapshot_id not in expired_ids]
    retained_lists = frozenset(file_key(s.manifest_list) for s in retained_snapshots)
    retained = listed_manifests(table, retained_snapshots)
    dropped_manifests = [m for m in listed_manifests(table, expired).values() if m.manifest_path not in retained]
    dropped: dict[str, dict[str, str]] = {}
    partitions: dict[int, set[tuple]] = defaultdict(set)
    for manifest in dropped_manifests:
        dropped[manifest.manifest_path], manifest_partitions = live_contents(table, manifest)
        partitions[manifest.partition_spec_id] |= manifest_partitions
    candidates = {key: kind for files in dropped.values() for key, kind in files.items()}
    checked = manifests_that_may_hold(table, retained.values(), partitions) if candidates else []
    for manifest in checked:
        for key in live_files(table, manifest):
            candidates.pop(key, None)
    candidates.update({file_key(path): MANIFEST for path in dropped})
    candidates.update({k: MANIFEST_LIST for s in expired if (k := file_key(s.manifest_list)) not in retained_lists})
    return CleanupPlan(
        retained_lists, retained, dropped, tuple(m.manifest_path for m in checked), MappingProxyType(candidates)
    )


def still_unreachable(table: Table, plan: CleanupPlan) -> dict[str, str]:
    """The plan's candidates that no snapshot of ``table`` added since the plan reaches.

    A concurrent writer's snapshot lists retained manifests (already accounted for), manifests it
    wrote (read here), or, in principle, a dropped manifest (its files are then kept with it).
    """
    candidates = dict(plan.candidates)
    for snapshot in table.snapshots():
        if file_key(snapshot.manifest_list) in plan.retained_lists:
            continue
        candidates.pop(file_key(snapshot.manifest_list), None)
        for manifest in snapshot.manifests(table.io):
            if manifest.manifest_path in plan.retained:
                continue
            candidates.pop(file_key(manifest.manifest_path), None)
            reached = plan.dropped.get(manifest.manifest_path)
            for key in reached if reached is not None else live_files(table, manifest):
                candidates.pop(key, None)
    return candidates


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
        plan = plan_cleanup(table, expired_ids)
        candidates = dict(plan.candidates)
        report.manifests_read += len(plan.dropped) + len(plan.checked)
        # Checked before the commit: a refused deletion leaves the metadata unchanged too.
        check_keys_deletable(table, candidates)
        if options.dry_run:
            report.snapshots_expired = expired_ids
            break
        try:
            # An expiry commit only edits metadata, so PyIceberg has nothing to re-apply on a conflict;
            # a writer that committed meanwhile is handled by planning the expiry again; the record of the
            # history it removes commits with it (see snapshots.expired_history_after).
            now_ms = int(options.current_time().timestamp() * 1000)
            history = expired_history_after(table.metadata, set(expired_ids), now_ms)
            _commit_expiry(table, expired_ids, history.to_property())
        except CommitFailedException:
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            progress(f"{report.table}: a writer committed during expiry; planning it again")
            continue
        report.snapshots_expired = expired_ids
        table.refresh()
        # Reachability from what was committed, including any snapshot a concurrent writer added
        # (manifests are immutable, so only those new to the plan are read).
        candidates = still_unreachable(table, plan)
        break
    else:  # pragma: no cover - the loop always breaks or raises
        raise AssertionError("unreachable")

    if report.snapshots_expired:
        # The candidates and the metadata folders are looked up, not the whole table: a listing of every
        # data file would grow with the table's age.
        sizes = {f.key: f.size for f in stat_files(table, candidates)}
        existing = {k: kind for k, kind in candidates.items() if k in sizes}
        for stored in _metadata_beyond_log(table, list_folders(table, _metadata_folders(table))):
            existing[stored.key], sizes[stored.key] = METADATA, stored.size
        for key, kind in existing.items():
            report.files_deleted[kind] += 1
            report.bytes_deleted[kind] += sizes[key]
        report.deleted = sorted(existing)
        if not options.dry_run:
            delete_files(table, existing)
        progress(
            f"{report.table}: {'would expire' if options.dry_run else 'expired'} {len(report.snapshots_expired)} "
            f"snapshots, {'would delete' if options.dry_run else 'deleted'} {sum(report.files_deleted.values())} "
            f"files ({sum(report.bytes_deleted.values()):,} B), having read {report.manifests_read} manifests"
        )
    report.seconds = time.monotonic() - started
    return report
