"""Audits that say what changed: a table's days between two snapshots, and one day's history, from metadata only.

``diff_table`` compares two snapshots of a table day by day (rows and files before and after, files
added and removed) and names the commits between them that made each change, with their Dagster run,
partition and ``sonik.operation``; ``schema_changes`` says which columns were added, dropped, renamed
or retyped. ``day_history`` lists every retained snapshot that changed one day, oldest first.

Nothing here reads a data file. Manifests are immutable, so two snapshots that list the same manifest
share its files: only the manifests one of them lists and the other does not are read to find what
changed, and only manifests whose partition summary can hold a changed day are read to count that
day's rows. A commit's own changes are the ADDED and DELETED entries (stamped with its snapshot id) of
the manifests it wrote; manifests with neither (a manifest rewrite's) are not opened. Rows are the
data files' record counts: the lakehouse writes copy-on-write, without delete files.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import ManifestContent, ManifestEntry, ManifestEntryStatus, ManifestFile
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema, index_by_id, index_name_by_id
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import DateType
from pyiceberg.utils.concurrent import ExecutorFactory

from sonik_pipeline.lakehouse.days import as_day, epoch_millis, is_day_field
from sonik_pipeline.lakehouse.reads.timetravel import Found, TimeTravelError, commit_time, parse_time, read_as_of
from sonik_pipeline.lakehouse.tables.catalog import table_name

Day = dt.date | None  # None: the files of an unpartitioned table (or of a spec without a day field)


class AuditError(TimeTravelError):
    """A diff or history that cannot be answered as asked; the message says why and what is available."""


@dataclass(frozen=True)
class Commit:
    """A snapshot as an audit names it: when, what operation, and the Dagster run that made it."""

    snapshot_id: int
    committed_at: str
    operation: str  # Iceberg's: append, overwrite, replace, delete
    dagster_run_id: str
    dagster_partition: str
    sonik_operation: str  # compaction, manifest-rewrite, ... ("" for ingest and marts)
    undone: bool = False  # on --from's side of a non-linear lineage: its change is no longer in --to

    @classmethod
    def of(cls, snapshot: Snapshot, undone: bool = False) -> Commit:
        summary = snapshot.summary
        return cls(
            snapshot_id=snapshot.snapshot_id,
            committed_at=commit_time(snapshot.timestamp_ms),
            operation=summary.operation.value if summary else "",
            dagster_run_id=(summary.get("dagster.run-id") or "") if summary else "",
            dagster_partition=(summary.get("dagster.partition") or "") if summary else "",
            sonik_operation=(summary.get("sonik.operation") or "") if summary else "",
            undone=undone,
        )

    def describe(self) -> str:
        """One line: ``run RUN (partition P, compaction) at T``, as the diff table prints it."""
        what = ", ".join(
            x for x in (self.dagster_partition and f"partition {self.dagster_partition}", self.sonik_operation) if x
        )
        who = f"run {self.dagster_run_id}" if self.dagster_run_id else f"snapshot {self.snapshot_id} (no run)"
        return f"{'undone: ' if self.undone else ''}{who}{f' ({what})' if what else ''}"


@dataclass
class FileChange:
    """Data files (and their rows) added and removed for one day."""

    files_added: int = 0
    files_removed: int = 0
    rows_added: int = 0
    rows_removed: int = 0

    def add(self, entry: ManifestEntry, removed: bool) -> None:
        if removed:
            self.files_removed += 1
            self.rows_removed += entry.data_file.record_count
        else:
            self.files_added += 1
            self.rows_added += entry.data_file.record_count


@dataclass(frozen=True)
class DayDiff:
    """One day that differs between the two snapshots, and the commits between them that changed it."""

    day: Day
    rows_before: int
    rows_after: int
    files_before: int
    files_after: int
    files_added: int
    files_removed: int
    commits: tuple[Commit, ...]

    @property
    def rows_change(self) -> int:
        return self.rows_after - self.rows_before


@dataclass(frozen=True)
class SchemaChange:
    kind: str  # added, dropped, renamed, type, required, optional
    field: str  # the column's full name (after the change; before it for a drop)
    before: str
    after: str


@dataclass(frozen=True)
class TableDiff:
    """What changed in a table from one snapshot to another, day by day (only days that differ)."""

    table: str
    from_snapshot: int | None  # None: the table before its first commit
    to_snapshot: int | None
    lineage: str  # linear | not-linear | unknown (see LINEAGES)
    note: str  # in words, when the lineage is not linear
    days: list[DayDiff]
    schema_changes: list[SchemaChange]
    commits: list[Commit]  # every commit between them, oldest first (undone ones too)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The diff as JSON-ready data (what ``sonik diff --format json`` prints)."""
        return {
            "table": self.table,
            "from_snapshot": self.from_snapshot,
            "to_snapshot": self.to_snapshot,
            "lineage": self.lineage,
            "note": self.note,
            "warnings": list(self.warnings),
            "days": [
                {
                    "day": d.day.isoformat() if d.day else None,
                    "rows_before": d.rows_before,
                    "rows_after": d.rows_after,
                    "rows_change": d.rows_change,
                    "files_before": d.files_before,
                    "files_after": d.files_after,
                    "files_added": d.files_added,
                    "files_removed": d.files_removed,
                    "commits": [c.__dict__ for c in d.commits],
                }
                for d in self.days
            ],
            "schema_changes": [c.__dict__ for c in self.schema_changes],
            "commits": [c.__dict__ for c in self.commits],
        }


LINEAGES = {
    "linear": "--from is --to or one of its ancestors: the commits between them made the change",
    "not-linear": "--from is not an ancestor of --to (a rollback, or a branch): the two states are compared",
    "unknown": "an expired snapshot breaks the lineage between them: the commits listed may be incomplete",
}


class _Manifests:
    """Reads manifest entries once per audit, and knows each partition spec's day field."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._entries: dict[str, list[ManifestEntry]] = {}
        self._day_positions: dict[int, int | None] = {}
        self._schema = table.schema()

    def data_manifests(self, snapshot: Snapshot | None) -> list[ManifestFile]:
        if snapshot is None:
            return []
        return [m for m in snapshot.manifests(self.table.io) if m.content == ManifestContent.DATA]

    def prefetch(self, manifests: Iterable[ManifestFile]) -> None:
        """Read these manifests' entries in parallel (PyIceberg's own executor, as its scans do)."""
        wanted = list({m.manifest_path: m for m in manifests if m.manifest_path not in self._entries}.values())
        if len(wanted) < 2:
            return
        read = ExecutorFactory.get_or_create().map(lambda m: m.fetch_manifest_entry(self.table.io, False), wanted)
        for manifest, entries in zip(wanted, read, strict=True):
            self._entries[manifest.manifest_path] = entries

    def entries(self, manifest: ManifestFile) -> list[ManifestEntry]:
        """Every entry, DELETED ones included."""
        found = self._entries.get(manifest.manifest_path)
        if found is None:
            found = self._entries[manifest.manifest_path] = manifest.fetch_manifest_entry(self.table.io, False)
        return found

    def live(self, manifest: ManifestFile) -> Iterable[ManifestEntry]:
        return (e for e in self.entries(manifest) if e.status != ManifestEntryStatus.DELETED)

    def day_position(self, spec_id: int) -> int | None:
        if spec_id not in self._day_positions:
            spec: PartitionSpec = self.table.specs()[spec_id]
            self._day_positions[spec_id] = next(
                (i for i, f in enumerate(spec.fields) if _is_day_field(f, self._schema)), None
            )
        return self._day_positions[spec_id]

    def day_of(self, entry: ManifestEntry) -> Day:
        position = self.day_position(entry.data_file.spec_id)
        value = entry.data_file.partition[position] if position is not None else None
        return as_day(value) if value is not None else None

    def may_hold(self, manifest: ManifestFile, days: set[Day] | None) -> bool:
        """Whether the manifest's partition summary allows a file of one of ``days`` (None: any day)."""
        if days is None:
            return True
        position = self.day_position(manifest.partition_spec_id)
        if position is None or not manifest.partitions or position >= len(manifest.partitions):
            return True
        summary = manifest.partitions[position]
        if None in days and (summary.contains_null or summary.lower_bound is None):
            return True
        if summary.lower_bound is None or summary.upper_bound is None:
            return False
        low = as_day(from_bytes(DateType(), summary.lower_bound))
        high = as_day(from_bytes(DateType(), summary.upper_bound))
        return any(d is not None and low <= d <= high for d in days)

    def totals(self, snapshot: Snapshot | None, days: set[Day]) -> dict[Day, tuple[int, int]]:
        """(rows, data files) of each of ``days`` in ``snapshot``."""
        rows: dict[Day, int] = defaultdict(int)
        files: dict[Day, int] = defaultdict(int)
        manifests = [m for m in self.data_manifests(snapshot) if self.may_hold(m, days)]
        self.prefetch(manifests)
        for manifest in manifests:
            for entry in self.live(manifest):
                day = self.day_of(entry)
                if day in days:
                    rows[day] += entry.data_file.record_count
                    files[day] += 1
        return {day: (rows[day], files[day]) for day in days}

    def changes_of(self, snapshot: Snapshot, days: set[Day] | None = None) -> dict[Day, FileChange]:
        """The files ``snapshot`` itself added and removed, by day (only ``days``, when given)."""
        mine = [
            m
            for m in self.data_manifests(snapshot)
            if m.added_snapshot_id == snapshot.snapshot_id
            and (m.added_files_count or m.deleted_files_count or m.added_files_count is None)
            and self.may_hold(m, days)
        ]
        self.prefetch(mine)
        changes: dict[Day, FileChange] = defaultdict(FileChange)
        for manifest in mine:
            for entry in self.entries(manifest):
                if entry.snapshot_id != snapshot.snapshot_id or entry.status == ManifestEntryStatus.EXISTING:
                    continue
                day = self.day_of(entry)
                if days is None or day in days:
                    changes[day].add(entry, removed=entry.status == ManifestEntryStatus.DELETED)
        return dict(changes)

    def state_changes(
        self, before: Snapshot | None, after: Snapshot | None, days: set[Day] | None = None
    ) -> dict[Day, FileChange]:
        """Files live in ``after`` and not in ``before`` (added) and the reverse (removed), by day.

        Only manifests one snapshot lists and the other does not are read: a shared manifest holds the
        same live files in both. A file that moved between manifests (a manifest rewrite) is unchanged.
        """
        old, new = self.data_manifests(before), self.data_manifests(after)
        old_paths, new_paths = {m.manifest_path for m in old}, {m.manifest_path for m in new}
        only_old = [m for m in old if m.manifest_path not in new_paths and self.may_hold(m, days)]
        only_new = [m for m in new if m.manifest_path not in old_paths and self.may_hold(m, days)]
        self.prefetch([*only_old, *only_new])
        removed = {e.data_file.file_path: e for m in only_old for e in self.live(m)}
        added = {e.data_file.file_path: e for m in only_new for e in self.live(m)}
        changes: dict[Day, FileChange] = defaultdict(FileChange)
        for entries, is_removed, other in ((removed, True, added), (added, False, removed)):
            for path, entry in entries.items():
                if path in other:
                    continue
                day = self.day_of(entry)
                if days is None or day in days:
                    changes[day].add(entry, removed=is_removed)
        return dict(changes)


def _is_day_field(pfield, schema: Schema) -> bool:
    try:
        return is_day_field(pfield, schema)
    except ValueError:  # its source column was dropped from the current schema: not a day we can name
        return False


# ---------------------------------------------------------------------------------------------
# Lineage
# ---------------------------------------------------------------------------------------------


def _ancestors(table: Table, snapshot: Snapshot | None) -> tuple[list[Snapshot], bool]:
    """``snapshot`` and its ancestors, newest first, and whether the chain ends at the table's first commit
    (False: an expired parent cuts it)."""
    chain = []
    while snapshot is not None:
        chain.append(snapshot)
        if snapshot.parent_snapshot_id is None:
            return chain, True
        parent = table.snapshot_by_id(snapshot.parent_snapshot_id)
        if parent is None:
            return chain, False
        snapshot = parent
    return chain, True


def _between(table: Table, before: Snapshot | None, after: Snapshot | None) -> tuple[str, str, list[Commit]]:
    """(lineage, note, commits oldest first) from ``before`` to ``after``."""
    to_chain, to_complete = _ancestors(table, after)
    if before is None:
        if to_complete:
            return "linear", "", [Commit.of(s) for s in reversed(to_chain)]
        return "unknown", f"the history before snapshot {to_chain[-1].snapshot_id} was expired", []
    to_ids = [s.snapshot_id for s in to_chain]
    if before.snapshot_id in to_ids:
        applied = to_chain[: to_ids.index(before.snapshot_id)]
        return "linear", "", [Commit.of(s) for s in reversed(applied)]
    from_chain, _ = _ancestors(table, before)
    to_index = {sid: i for i, sid in enumerate(to_ids)}
    common = next(((i, s) for i, s in enumerate(from_chain) if s.snapshot_id in to_index), None)
    if common is None:
        if not to_complete:
            note = (
                f"snapshot {before.snapshot_id} was not found on the lineage of {after.snapshot_id if after else None}"
                f", which an expired snapshot cuts at {to_chain[-1].snapshot_id}: the two states are compared"
            )
            return "unknown", note, []
        note = f"snapshots {before.snapshot_id} and {after.snapshot_id if after else None} share no retained ancestor"
        return "not-linear", f"{note}: the two states are compared", []
    i, ancestor = common
    undone = [Commit.of(s, undone=True) for s in reversed(from_chain[:i])]
    applied = [Commit.of(s) for s in reversed(to_chain[: to_index[ancestor.snapshot_id]])]
    to_id = after.snapshot_id if after else None
    why = (
        f"the table was rolled back to {to_id}"
        if ancestor.snapshot_id == to_id
        else f"the table was rolled back or branched after their common ancestor {ancestor.snapshot_id}"
    )
    note = (
        f"the lineage is not linear: {before.snapshot_id} is not an ancestor of {to_id} ({why}); the two "
        f"states are compared: {len(undone)} commits on --from's side are undone, {len(applied)} on --to's applied"
    )
    return "not-linear", note, sorted([*undone, *applied], key=lambda c: (c.committed_at, c.undone))


# ---------------------------------------------------------------------------------------------
# Schemas
# ---------------------------------------------------------------------------------------------


def schema_changes(before: Schema, after: Schema) -> list[SchemaChange]:
    """Columns added, dropped, renamed, retyped or made (non-)required from ``before`` to ``after``, by field id."""
    old, new = index_by_id(before), index_by_id(after)
    old_names, new_names = index_name_by_id(before), index_name_by_id(after)
    changes = []
    for field_id in sorted(old.keys() | new.keys()):
        if field_id not in old:
            changes.append(SchemaChange("added", new_names[field_id], "", str(new[field_id].field_type)))
            continue
        if field_id not in new:
            changes.append(SchemaChange("dropped", old_names[field_id], str(old[field_id].field_type), ""))
            continue
        a, b = old[field_id], new[field_id]
        name = new_names[field_id]
        if old_names[field_id] != name:
            changes.append(SchemaChange("renamed", name, old_names[field_id], name))
        if a.field_type.is_primitive and b.field_type.is_primitive and a.field_type != b.field_type:
            changes.append(SchemaChange("type", name, str(a.field_type), str(b.field_type)))
        if a.required != b.required:
            kind = "required" if b.required else "optional"
            changes.append(SchemaChange(kind, name, _req(a.required), _req(b.required)))
    return changes


def _req(required: bool) -> str:
    return "required" if required else "optional"


def _schema_of(table: Table, snapshot: Snapshot) -> Schema:
    schemas = table.schemas()
    return schemas.get(snapshot.schema_id, table.schema()) if snapshot.schema_id is not None else table.schema()


# ---------------------------------------------------------------------------------------------
# Diff
# ---------------------------------------------------------------------------------------------


def _snapshot(table: Table, value: Snapshot | int | None) -> Snapshot | None:
    if value is None or isinstance(value, Snapshot):
        return value
    found = table.snapshot_by_id(value)
    if found is None:
        raise AuditError(_unknown_snapshot(table, value))
    return found


def diff_table(
    table: Table, from_snapshot: Snapshot | int | None, to_snapshot: Snapshot | int | None = None
) -> TableDiff:
    """What changed in ``table`` from ``from_snapshot`` to ``to_snapshot`` (default: the current one).

    Snapshots or their ids; ``from_snapshot`` None is the table before its first commit. Only the days
    whose files differ are listed, with the commits between the two that changed them. When ``to`` is
    the current snapshot, schema changes are against the table's current schema (a column added since
    the last commit counts).
    """
    current = table.current_snapshot()
    before = _snapshot(table, from_snapshot)
    after = _snapshot(table, to_snapshot) if to_snapshot is not None else current
    reader = _Manifests(table)
    lineage, note, commits = _between(table, before, after)
    changes = reader.state_changes(before, after)
    days = set(changes)
    old, new = reader.totals(before, days), reader.totals(after, days)
    touched: dict[Day, list[Commit]] = defaultdict(list)
    by_id = {s.snapshot_id: s for s in table.snapshots()}
    for commit in commits:
        for day in reader.changes_of(by_id[commit.snapshot_id], days):
            touched[day].append(commit)
    day_diffs = [
        DayDiff(
            day=day,
            rows_before=old[day][0],
            rows_after=new[day][0],
            files_before=old[day][1],
            files_after=new[day][1],
            files_added=changes[day].files_added,
            files_removed=changes[day].files_removed,
            commits=tuple(touched[day]),
        )
        for day in sorted(days, key=lambda d: (d is not None, d or dt.date.min))
    ]
    schemas: list[SchemaChange] = []
    if before is not None and after is not None:
        later = table.schema() if current is not None and after.snapshot_id == current.snapshot_id else None
        schemas = schema_changes(_schema_of(table, before), later or _schema_of(table, after))
    return TableDiff(
        table=table_name(table),
        from_snapshot=before.snapshot_id if before else None,
        to_snapshot=after.snapshot_id if after else None,
        lineage=lineage,
        note=note,
        days=day_diffs,
        schema_changes=schemas,
        commits=commits,
    )


@dataclass(frozen=True)
class Point:
    """Where a diff starts or ends, as the user named it: a snapshot (None: before the first commit) and when."""

    snapshot: Snapshot | None
    when_ms: int  # the moment it stands for (a time given, or when the snapshot was current)
    label: str
    warning: str = ""


def _available(table: Table) -> str:
    """What a user can still ask for: the retained snapshots' span, in a few words."""
    snapshots = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    if not snapshots:
        return f"{table_name(table)} has no snapshot yet"
    first, last = snapshots[0], snapshots[-1]
    return (
        f"{len(snapshots)} snapshots are retained, from {first.snapshot_id} ({commit_time(first.timestamp_ms)}) to "
        f"{last.snapshot_id} ({commit_time(last.timestamp_ms)}); `sonik snapshots {table_name(table)}` lists them"
    )


def _unknown_snapshot(table: Table, snapshot_id: int) -> str:
    return f"{table_name(table)} has no snapshot {snapshot_id} (expired, or never its snapshot): {_available(table)}"


def resolve(table: Table, text: str | None, option: str = "--from") -> Point:
    """A snapshot id or an ISO time (None: the current snapshot) as a ``Point``, or a one-line ``AuditError``.

    A time reads the snapshot current then (following rollbacks); before the table's first commit it is
    the empty table. A snapshot id stands for when it became current (for ``--to``: the last time it did).
    """
    if text is None:
        current = table.current_snapshot()
        return Point(current, epoch_millis(dt.datetime.now(dt.UTC)), "the current snapshot")
    if text.strip().lstrip("-").isdigit():
        snapshot = table.snapshot_by_id(int(text))
        if snapshot is None:
            raise AuditError(f"{option} {text}: {_unknown_snapshot(table, int(text))}")
        became = [e.timestamp_ms for e in table.metadata.snapshot_log if e.snapshot_id == snapshot.snapshot_id]
        when = (max(became) if option == "--to" else min(became)) if became else snapshot.timestamp_ms
        return Point(snapshot, when, f"snapshot {snapshot.snapshot_id}")
    when = parse_time(text)
    found = read_as_of(table, when)
    if found.found is Found.NOT_YET and option == "--from":
        return Point(None, epoch_millis(when), f"{when.isoformat()} (before the first commit)")
    if found.snapshot is None:
        raise AuditError(f"{option} {text}: {found.reason}; {_available(table)}")
    label = f"snapshot {found.snapshot.snapshot_id} (current at {when.isoformat()})"
    return Point(found.snapshot, epoch_millis(when), label, "" if found.exact else f"{option}: {found.warning}")


def diff(table: Table, from_text: str, to_text: str | None = None) -> TableDiff:
    """``sonik diff``: ``diff_table`` between two points named as a user names them (snapshot ids or times)."""
    start, end = resolve(table, from_text, "--from"), resolve(table, to_text, "--to")
    if start.when_ms > end.when_ms:
        raise AuditError(
            f"--from {from_text} ({start.label}, {commit_time(start.when_ms)}) is after --to "
            f"{to_text if to_text is not None else '(current)'} ({end.label}, {commit_time(end.when_ms)}): swap them"
        )
    if end.snapshot is None:
        raise AuditError(f"{table_name(table)} has no snapshot yet: nothing to compare")
    result = diff_table(table, start.snapshot, end.snapshot)
    result.warnings.extend(w for w in (start.warning, end.warning) if w)
    return result


# ---------------------------------------------------------------------------------------------
# One day's history
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayChange:
    """A snapshot that changed one day, or a rollback that did (operation ``rollback``), and the day after it."""

    committed_at: str
    snapshot_id: int
    operation: str
    rows_after: int
    files_after: int
    rows_added: int
    rows_removed: int
    files_added: int
    files_removed: int
    dagster_run_id: str
    dagster_partition: str
    sonik_operation: str
    on_lineage: bool  # False: a later rollback abandoned it (not the current snapshot or one of its ancestors)


def day_history(table: Table, day: dt.date) -> list[DayChange]:
    """Every retained snapshot that changed ``day``, and every rollback that did, oldest first.

    A snapshot's change is what its own manifests added and deleted for the day; a rollback's is the
    difference between the snapshot it replaced and the one it made current (from the snapshot log).
    Only manifests whose partition summary can hold the day are read.
    """
    reader = _Manifests(table)
    if all(reader.day_position(spec_id) is None for spec_id in table.specs()):
        raise AuditError(f"{table_name(table)} is not partitioned by day: it has no day history")
    days: set[Day] = {day}
    on_lineage = {s.snapshot_id for s in _ancestors(table, table.current_snapshot())[0]}
    events: list[tuple[int, int, DayChange]] = []
    for snapshot in table.snapshots():
        change = reader.changes_of(snapshot, days).get(day)
        if change is None:
            continue
        events.append((snapshot.timestamp_ms, 0, _day_change(reader, snapshot, day, change, Commit.of(snapshot))))
    for rollback_ms, replaced, target in _rollbacks(table):
        change = reader.state_changes(replaced, target, days).get(day)
        if change is None:
            continue
        commit = Commit(target.snapshot_id, commit_time(rollback_ms), "rollback", "", "", "")
        events.append((rollback_ms, 1, _day_change(reader, target, day, change, commit)))
    ordered = sorted(events, key=lambda x: (x[0], x[1]))
    return [replace(e, on_lineage=e.snapshot_id in on_lineage) for _, _, e in ordered]


def _day_change(reader: _Manifests, snapshot: Snapshot, day: dt.date, change: FileChange, commit: Commit) -> DayChange:
    rows, files = reader.totals(snapshot, {day})[day]
    return DayChange(
        committed_at=commit.committed_at,
        snapshot_id=snapshot.snapshot_id,
        operation=commit.operation,
        rows_after=rows,
        files_after=files,
        rows_added=change.rows_added,
        rows_removed=change.rows_removed,
        files_added=change.files_added,
        files_removed=change.files_removed,
        dagster_run_id=commit.dagster_run_id,
        dagster_partition=commit.dagster_partition,
        sonik_operation=commit.sonik_operation,
        on_lineage=True,
    )


def _rollbacks(table: Table) -> list[tuple[int, Snapshot, Snapshot]]:
    """(when, snapshot replaced, snapshot made current) for each snapshot-log entry that made an older,
    non-child snapshot current: a rollback (both must be retained)."""
    log = table.metadata.snapshot_log
    found = []
    for previous, entry in zip(log, log[1:], strict=False):
        replaced, target = table.snapshot_by_id(previous.snapshot_id), table.snapshot_by_id(entry.snapshot_id)
        if replaced is None or target is None or target.parent_snapshot_id == replaced.snapshot_id:
            continue
        if target.timestamp_ms < entry.timestamp_ms and target.snapshot_id != replaced.snapshot_id:
            found.append((entry.timestamp_ms, replaced, target))
    return found


def timed_diff(table: Table, from_snapshot: Snapshot | int | None, repeat: int = 1) -> tuple[TableDiff, float]:
    """``diff_table`` from ``from_snapshot`` to the current snapshot, and its best wall time in seconds of
    ``repeat`` runs (for ``benchmarks/uses.py``)."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = diff_table(table, from_snapshot)
        best = min(best, time.perf_counter() - started)
    return result, best
