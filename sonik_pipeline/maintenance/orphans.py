"""Orphan file removal (Iceberg's ``remove_orphan_files``): what a crashed writer left behind.

A writer stages Parquet and manifest files before its commit; if it dies first, those files are in
the table's folder but in no metadata. Files that nothing references and that are older than a safety
window (default 3 days, so an in-flight write is never taken) are deleted. A window under
``MINIMUM_SAFETY_WINDOW`` is refused unless the caller states that no writer is running.

Whatever the window, a commit in flight is never taken once its metadata JSON is written: a writer
writes data files, manifests, manifest list and metadata JSON, then swaps the catalog's pointer, and
until the swap all of them are unreferenced. A metadata file newer than the current one keeps itself
and everything it references. What no window can protect is a writer that has not written its
metadata JSON yet: only its files' age tells them from a crashed writer's, hence the minimum.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.tables.attachment import metadata_version
from sonik_pipeline.lakehouse.tables.catalog import table_name
from sonik_pipeline.lakehouse.tables.deletion import UnsafeDeletion
from sonik_pipeline.maintenance.files import (
    DeletionReport,
    StoredFile,
    check_keys_deletable,
    delete_files,
    file_key,
    kind_of_unreferenced,
    list_table_files,
    location_of,
    metadata_references,
    other_tables_metadata,
    referenced_files,
)

log = logging.getLogger(__name__)

DEFAULT_SAFETY_WINDOW = dt.timedelta(days=3)
# A file younger than the window may belong to a write still in flight. The longest writes that stage
# files before committing are a whole-table compaction and a long backfill day (hours), and file
# times come from the storage server's clock, not the maintenance host's (minutes of skew). 24 hours
# covers both with room, and is the floor Iceberg's Spark remove_orphan_files procedure enforces.
MINIMUM_SAFETY_WINDOW = dt.timedelta(hours=24)


class OtherTableAtLocation(UnsafeDeletion):
    """The table's location also holds another table's committed metadata: nothing is an orphan there."""


class OrphanWindowTooShort(ValueError):
    """A safety window under the minimum, without the statement that no writer is running."""


@dataclass(frozen=True)
class OrphanOptions:
    older_than: dt.timedelta = DEFAULT_SAFETY_WINDOW
    dry_run: bool = False
    now: dt.datetime | None = None
    # The caller knows no writer runs (a test, a quiet maintenance window): a shorter window is allowed.
    i_know_no_writer_is_running: bool = False

    def __post_init__(self) -> None:
        if self.older_than < MINIMUM_SAFETY_WINDOW and not self.i_know_no_writer_is_running:
            raise OrphanWindowTooShort(
                f"an orphan window of {_hours(self.older_than)}h is under the {_hours(MINIMUM_SAFETY_WINDOW)}h "
                "minimum: a write still in flight (compaction, a backfill day) would lose its files; "
                "set i_know_no_writer_is_running to use it anyway"
            )


def _hours(delta: dt.timedelta) -> str:
    return f"{delta.total_seconds() / 3600:g}"


@dataclass
class OrphanReport(DeletionReport):
    in_flight: list[str] = field(default_factory=list)  # unreferenced but kept: a commit in flight needs them


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC)


def _in_flight(table: Table, stored: list[StoredFile], referenced: Mapping[str, str]) -> set[str]:
    """Unreferenced files a commit in flight needs.

    That is a metadata JSON newer than the current one (a higher version in its name, or written
    later) and everything it references; when such a file cannot be read (still being written),
    every file written since the current metadata file.
    """
    current = file_key(table.metadata_location)
    current_version = metadata_version(current)
    modified = {f.key: _utc(f.modified) for f in stored}
    since = modified.get(current) or dt.datetime.fromtimestamp(table.metadata.last_updated_ms / 1000, dt.UTC)
    kept: set[str] = set()
    for key in sorted(k for k in modified if k.endswith(".metadata.json") and k not in referenced):
        version = metadata_version(key)
        newer_version = version is not None and current_version is not None and version > current_version
        if not newer_version and modified[key] <= since:
            continue  # an older commit's metadata, or one that lost a commit race: a true orphan
        kept.add(key)
        try:
            pending = FromInputFile.table_metadata(table.io.new_input(location_of(table, key)))
        except Exception:  # half-written or unreadable, whatever the error: keep all that may belong to it
            kept |= {k for k, when in modified.items() if when >= since and k not in referenced}
            continue
        if str(pending.table_uuid) != str(table.metadata.table_uuid):
            kept.discard(key)  # a superseded table's (``sonik reattach --replace``): no commit of this one
            continue
        kept |= set(metadata_references(table, pending, location_of(table, key), known=referenced))
    return kept - referenced.keys()


def refuse_other_tables(table: Table, unreferenced_metadata: list[StoredFile]) -> None:
    """Stop before deleting anything when another table's metadata shares the location (a lost catalog)."""
    others = other_tables_metadata(table, [f.key for f in unreferenced_metadata])
    if not others:
        return
    uuid, keys = max(others.items(), key=lambda item: len(item[1]))
    raise OtherTableAtLocation(
        f"{table_name(table)} (uuid {table.metadata.table_uuid}) shares its location {table.location()} with "
        f"another table (uuid {uuid}: {len(keys)} metadata files, the newest {max(keys).rsplit('/', 1)[-1]}): "
        "the catalog was lost or replaced and this table created over that one, whose files are not orphans; "
        f"nothing was deleted; get it back with `sonik reattach {table_name(table)} --replace` (this table's "
        "files then become its orphans), or move its files away"
    )


def remove_orphan_files(
    table: Table, options: OrphanOptions, progress: Callable[[str], None] = log.info
) -> OrphanReport:
    """Delete files under the table's location that no metadata references and that are old enough."""
    started = time.monotonic()
    report = OrphanReport(table=table_name(table), dry_run=options.dry_run)
    # List first, then read references: a file committed in between is then referenced, never orphaned.
    stored = list_table_files(table)
    table.refresh()
    referenced = referenced_files(table)
    cutoff = (options.now or dt.datetime.now(dt.UTC)) - options.older_than
    unreferenced = [f for f in stored if f.key not in referenced]
    refuse_other_tables(table, [f for f in unreferenced if f.key.endswith(".metadata.json")])
    in_flight = _in_flight(table, stored, referenced) if unreferenced else set()
    orphans = [f for f in unreferenced if f.key not in in_flight and _utc(f.modified) < cutoff]
    # A commit may have landed while this ran: what the newest metadata references is not an orphan.
    seen = table.metadata_location
    table.refresh()
    if orphans and table.metadata_location != seen:
        landed = metadata_references(table, table.metadata, table.metadata_location, known=referenced)
        orphans = [f for f in orphans if f.key not in landed]
    report.in_flight = sorted(in_flight & {f.key for f in stored})
    for orphan in orphans:
        kind = kind_of_unreferenced(orphan.key)
        report.files_deleted[kind] += 1
        report.bytes_deleted[kind] += orphan.size
    report.deleted = check_keys_deletable(table, sorted(f.key for f in orphans))  # a dry run says so too
    if orphans and not options.dry_run:
        delete_files(table, report.deleted)
    if orphans:
        progress(
            f"{report.table}: {'would delete' if options.dry_run else 'deleted'} {len(orphans)} orphan files "
            f"({sum(report.bytes_deleted.values()):,} B)"
        )
    if report.in_flight:
        progress(f"{report.table}: kept {len(report.in_flight)} unreferenced files a commit in flight needs")
    report.seconds = time.monotonic() - started
    return report
