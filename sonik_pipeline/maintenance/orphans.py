"""Orphan file removal (Iceberg's ``remove_orphan_files``): what a crashed writer left behind.

A writer stages Parquet and manifest files before its commit; if it dies first, those files are in
the table's folder but in no metadata. Files that nothing references and that are older than a safety
window (default 3 days, so an in-flight write is never taken) are deleted. A window under
``MINIMUM_SAFETY_WINDOW`` is refused unless the caller states that no writer is running.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from pyiceberg.table import Table

from sonik_pipeline.maintenance.files import delete_files, kind_of_unreferenced, list_table_files, referenced_files

log = logging.getLogger(__name__)

DEFAULT_SAFETY_WINDOW = dt.timedelta(days=3)
# A file younger than the window may belong to a write still in flight. The longest writes that stage
# files before committing are a whole-table compaction and a long backfill day (hours), and file
# times come from the storage server's clock, not the maintenance host's (minutes of skew). 24 hours
# covers both with room, and is the floor Iceberg's Spark remove_orphan_files procedure enforces.
MINIMUM_SAFETY_WINDOW = dt.timedelta(hours=24)


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
class OrphanReport:
    table: str
    files_deleted: Counter[str] = field(default_factory=Counter)
    bytes_deleted: Counter[str] = field(default_factory=Counter)
    deleted: list[str] = field(default_factory=list)
    dry_run: bool = False
    seconds: float = 0.0


def remove_orphan_files(
    table: Table, options: OrphanOptions, progress: Callable[[str], None] = log.info
) -> OrphanReport:
    """Delete files under the table's location that no metadata references and that are old enough."""
    started = time.monotonic()
    report = OrphanReport(table=".".join(table.name()), dry_run=options.dry_run)
    # List first, then read references: a file committed in between is then referenced, never orphaned.
    stored = list_table_files(table)
    table.refresh()
    referenced = referenced_files(table)
    cutoff = (options.now or dt.datetime.now(dt.UTC)) - options.older_than
    orphans = [f for f in stored if f.key not in referenced and f.modified.astimezone(dt.UTC) < cutoff]
    for orphan in orphans:
        kind = kind_of_unreferenced(orphan.key)
        report.files_deleted[kind] += 1
        report.bytes_deleted[kind] += orphan.size
    report.deleted = sorted(f.key for f in orphans)
    if orphans and not options.dry_run:
        delete_files(table, report.deleted)
    if orphans:
        progress(
            f"{report.table}: {'would delete' if options.dry_run else 'deleted'} {len(orphans)} orphan files "
            f"({sum(report.bytes_deleted.values()):,} B)"
        )
    report.seconds = time.monotonic() - started
    return report
