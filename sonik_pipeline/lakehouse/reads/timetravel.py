"""Time travel and rollback: read any table as it was, and undo a bad ingest.

Shared by the ``sonik`` command and the Dagster rollback job. Errors are ``TimeTravelError`` with a
message a user can act on (unknown table, unknown snapshot, a time before the first snapshot).

Reading "as of T" says what it read (``AsOf``). PyIceberg's snapshot expiry drops the snapshot-log
entries of expired snapshots and keeps the rest, so where an expired snapshot was current the log
shows the entry before it instead and ``Table.snapshot_as_of_timestamp`` answers from that older
snapshot without a word (Java Iceberg clears the history before the newest removed entry instead,
so a gap never looks like another snapshot was current). Our expiry records, in the expiry's commit,
the intervals during which an expired snapshot was current (``tables.snapshots.ExpiredHistory``, the
table property ``sonik.expired-history``); for tables another engine expired, gaps in the log's
sequence numbers give a weaker "may differ".
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestFile
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot, SnapshotLogEntry
from pyiceberg.utils.concurrent import ExecutorFactory

from sonik_pipeline.lakehouse.days import epoch_millis
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_identifier, sql_string
from sonik_pipeline.lakehouse.tables.catalog import TableUnreadable, load_table, table_name
from sonik_pipeline.lakehouse.tables.definitions import CODE_TABLES, lakehouse_table_names
from sonik_pipeline.lakehouse.tables.snapshots import ExpiredHistory

if TYPE_CHECKING:  # DuckDB is imported where views are made: `sonik tables` and the rollback job need none of it
    import duckdb


class TimeTravelError(ValueError):
    """A table, snapshot or time that does not exist; the message says which."""


def parse_time(text: str) -> dt.datetime:
    """An ISO-8601 time; without an offset it is UTC (as every time in the lakehouse)."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeTravelError(f"not a time: {text!r} (expected ISO-8601, e.g. 2026-04-20T12:00:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def load(catalog: Catalog, name: str) -> Table:
    """The table ``name``: an unknown one is a ``TimeTravelError``, one with damaged metadata ``TableUnreadable``."""
    try:
        return load_table(catalog, name)
    except (NoSuchTableError, NoSuchNamespaceError, ValueError):
        known = ", ".join(lakehouse_table_names(catalog)) or "none yet"
        raise TimeTravelError(f"unknown table {name!r} (tables: {known})") from None


def snapshot_by_id(table: Table, snapshot_id: int) -> Snapshot:
    snapshot = table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise TimeTravelError(f"unknown snapshot {snapshot_id} for {table_name(table)}")
    return snapshot


class Found(enum.Enum):
    """How the snapshot read "as of T" relates to the one current at T."""

    EXACT = "exact"  # the snapshot current at T
    OLDER = "older"  # the one current at T was expired: the newest retained one before T
    UNCERTAIN = "uncertain"  # another engine expired a snapshot around T: it may not be the one current then
    HISTORY_EXPIRED = "history-expired"  # T is before the oldest retained snapshot, whose history was expired
    NOT_YET = "not-yet"  # T is before the table's first commit


@dataclass(frozen=True)
class AsOf:
    """What reading a table "as of T" reads, and in words why it is not the snapshot current then."""

    table: str
    when: dt.datetime
    found: Found
    snapshot: Snapshot | None  # None: nothing to read (HISTORY_EXPIRED, NOT_YET)
    reason: str = ""  # what is wrong, e.g. "music.plays: the snapshot current at T was expired"
    fallback: str = ""  # the snapshot read instead, e.g. "the newest retained snapshot before T, S, committed at X"

    @property
    def exact(self) -> bool:
        return self.found is Found.EXACT

    @property
    def warning(self) -> str:
        return f"{self.reason}; reading {self.fallback}" if self.fallback else self.reason


def read_as_of(table: Table, when: dt.datetime) -> AsOf:
    """The snapshot current at ``when`` (following the table's history, so rollbacks count), and how sure that is."""
    name, at, t_ms = table_name(table), when.isoformat(), epoch_millis(when)
    log: list[SnapshotLogEntry] = table.metadata.snapshot_log
    recorded = ExpiredHistory.of(table.metadata)
    index = next((i for i in range(len(log) - 1, -1, -1) if log[i].timestamp_ms <= t_ms), None)
    if index is None:
        oldest = table.snapshot_by_id(log[0].snapshot_id) if log else None
        if oldest is None:
            return AsOf(name, when, Found.NOT_YET, None, f"{name} did not exist yet at {at} (it has no snapshot yet)")
        first = recorded.first_commit_ms if recorded else None
        expired_before = (first is not None and first < log[0].timestamp_ms) or (oldest.sequence_number or 0) > 1
        if expired_before and (first is None or t_ms >= first):
            return AsOf(
                name,
                when,
                Found.HISTORY_EXPIRED,
                None,
                f"{name}: the history before its oldest retained snapshot {oldest.snapshot_id} (current from "
                f"{commit_time(log[0].timestamp_ms)}) was expired, so its state at {at} is not known",
            )
        since = commit_time(first if first is not None else log[0].timestamp_ms)
        message = f"{name} did not exist yet at {at}; its first snapshot is from {since}"
        return AsOf(name, when, Found.NOT_YET, None, message)

    entry = log[index]
    snapshot = table.snapshot_by_id(entry.snapshot_id)
    if snapshot is None:  # a log naming a missing snapshot: nothing honest to read
        raise TimeTravelError(f"{name}: the snapshot current at {at}, {entry.snapshot_id}, is not in the table")
    if recorded is not None:
        if recorded.gap_at(t_ms):
            return AsOf(
                name,
                when,
                Found.OLDER,
                snapshot,
                f"{name}: the snapshot current at {at} was expired",
                f"the newest retained snapshot before {at}, {snapshot.snapshot_id}, "
                f"committed at {commit_time(snapshot.timestamp_ms)}",
            )
        return AsOf(name, when, Found.EXACT, snapshot)
    following = table.snapshot_by_id(log[index + 1].snapshot_id) if index + 1 < len(log) else None
    if following is not None and _expired_between(table, snapshot, following):
        return AsOf(
            name,
            when,
            Found.UNCERTAIN,
            snapshot,
            f"{name}: a snapshot committed between {snapshot.snapshot_id} "
            f"(current from {commit_time(entry.timestamp_ms)}) and {following.snapshot_id} "
            f"(current from {commit_time(log[index + 1].timestamp_ms)}) was expired; the answer may differ",
            f"{snapshot.snapshot_id}",
        )
    return AsOf(name, when, Found.EXACT, snapshot)


def _expired_between(table: Table, current: Snapshot, following: Snapshot) -> bool:
    """Whether a snapshot that could have been current between two consecutive log entries is gone.

    For tables expired without our record: the same snapshot twice in a row means another one was
    current in between; a sequence number between the two that no retained snapshot carries means
    a snapshot committed then was expired.
    """
    if current.snapshot_id == following.snapshot_id:
        return True
    low, high = current.sequence_number or 0, following.sequence_number or 0
    held = {s.sequence_number for s in table.snapshots()}
    return any(n not in held for n in range(low + 1, high))


def snapshot_as_of(table: Table, when: dt.datetime, instead: str = "") -> Snapshot:
    """Exactly the snapshot current at ``when``, for a rollback: a guess is refused, ``instead`` says what to do."""
    found = read_as_of(table, when)
    if found.snapshot is None:
        raise TimeTravelError(found.reason)
    if not found.exact:
        raise TimeTravelError(f"{found.reason}; not rolling back to a guess ({found.fallback}){instead}")
    return found.snapshot


def commit_time(timestamp_ms: int) -> str:
    """A snapshot's commit time as every command shows it (UTC, ISO-8601, milliseconds)."""
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class SnapshotRow:
    snapshot_id: int
    committed_at: str
    operation: str
    records: int
    added_records: int
    deleted_records: int
    dagster_run_id: str
    partition: str
    is_current: bool


def snapshot_rows(table: Table) -> list[SnapshotRow]:
    current = table.current_snapshot()
    rows = []
    for s in sorted(table.snapshots(), key=lambda s: s.timestamp_ms):
        summary = s.summary
        rows.append(
            SnapshotRow(
                snapshot_id=s.snapshot_id,
                committed_at=commit_time(s.timestamp_ms),
                operation=summary.operation.value if summary else "",
                records=int(summary.get("total-records") or 0) if summary else 0,
                added_records=int(summary.get("added-records") or 0) if summary else 0,
                deleted_records=int(summary.get("deleted-records") or 0) if summary else 0,
                dagster_run_id=(summary.get("dagster.run-id") or "") if summary else "",
                partition=(summary.get("dagster.partition") or summary.get("sonik.operation") or "") if summary else "",
                is_current=current is not None and s.snapshot_id == current.snapshot_id,
            )
        )
    return rows


def check_manifests(table: Table, snapshot: Snapshot) -> list[ManifestFile]:
    """Refuse, as one ``TableUnreadable``, a snapshot whose manifests are missing or not their recorded size;
    return them, checked (``table_health`` takes them rather than reading the manifest list again).

    DuckDB 1.5.5's iceberg extension does not raise on a missing, truncated or damaged manifest: it
    aborts the whole process (C++ ``terminate``, exit 134), so it must not be asked to read one. The
    manifest list records each manifest's length: PyIceberg reads the list (whose own damage it
    reports as an error) and one size per manifest is looked up, in parallel, before DuckDB opens any.
    A manifest damaged in place without a change of size still gets past this check.
    """
    name = table_name(table)
    try:
        manifests = snapshot.manifests(table.io)
    except Exception as exc:  # missing (OSError), cut short (EOFError), garbled (ValueError, zlib.error, ...)
        problem = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableUnreadable(
            f"{name}: its manifest list {snapshot.manifest_list} cannot be read ({problem}); restore it from a "
            "backup, or roll the table back to a snapshot that does not use it"
        ) from exc
    sizes = ExecutorFactory.get_or_create().map(lambda m: _size(table.io, m.manifest_path), manifests)
    for manifest, size in zip(manifests, sizes, strict=True):
        if size == manifest.manifest_length:
            continue
        recorded = manifest.manifest_length
        found = "is missing" if size is None else f"is {size:,} bytes, but the manifest list says {recorded:,}"
        raise TableUnreadable(
            f"{name}: its manifest {manifest.manifest_path} {found}: it is truncated or damaged, and DuckDB's "
            "iceberg reader would abort on it; restore it from a backup, or roll the table back to a snapshot "
            "that does not use it"
        )
    return manifests


def _size(io: FileIO, location: str) -> int | None:
    """A file's size in bytes (a stat, or a HEAD on object storage), None when it is missing."""
    try:
        return len(io.new_input(location))
    except FileNotFoundError:
        return None


def _duckdb_problem(table: Table, exc: duckdb.Error) -> str:
    """What DuckDB could not do with a table, in one line naming it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "Unterminated quote" in text:  # iceberg_scan tries its argument as a table name first
        return (
            f"{table_name(table)}: DuckDB's iceberg_scan cannot read a table whose metadata path holds an unpaired "
            f'double quote ("): {table.metadata_location}; rename the table (and so its location) to read it here'
        )
    return f"{table_name(table)}: DuckDB cannot read it ({text})"


def _is_read(name: str, reads: Collection[tuple[str, str]] | None) -> bool:
    """Whether a query reading ``reads`` ((schema, table), schema "" when not written) reads table ``name``."""
    if reads is None:
        return True
    namespace, short = name.lower().split(".", 1)
    return any(table == short and schema in ("", namespace) for schema, table in reads)


@dataclass(frozen=True)
class Views:
    """The snapshot each view reads; for ``as_of``, the tables not read exactly as they were then; the
    tables that could not be read at all, each with its one-line problem (they have no view); and for
    ``snapshot_id``, the table holding it (which the query may not read)."""

    pinned: dict[str, int]
    inexact: list[AsOf]
    unreadable: dict[str, str] = field(default_factory=dict)
    holder: str | None = None


def create_views(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    as_of: dt.datetime | None = None,
    snapshot_id: int | None = None,
    reads: Collection[tuple[str, str]] | None = None,
) -> Views:
    """A DuckDB view per lakehouse table (``music.plays``, ``music_marts.daily_top_tracks``, ...) a query reads.

    ``reads`` are the (schema, table) names the query reads, lower case, schema "" where it was not
    written (``_tables_read`` in cli/sql.py); None makes a view of every table. Only those tables are
    opened at all, so a damaged table never stops a query of the others; a table that cannot be read
    (its metadata or manifests damaged, a location DuckDB cannot take) gets no view and is listed in
    ``unreadable`` with its problem. With ``as_of``, every table reads the snapshot current at that
    time (tables younger than that are left out, and so are tables whose history then was expired,
    listed in ``inexact`` with those read from an older snapshot); with ``snapshot_id``, the table
    holding that snapshot reads it and the rest are current.
    """
    import duckdb

    from sonik_pipeline.lakehouse.duckdb_io.file_scan import empty_select

    names = lakehouse_table_names(catalog)
    wanted = [name for name in names if _is_read(name, reads)]
    tables: dict[str, Table] = {}
    unreadable: dict[str, str] = {}
    for name in wanted if snapshot_id is None else names:  # the snapshot's holder is looked for everywhere
        try:
            tables[name] = load(catalog, name)
        except TableUnreadable as exc:
            unreadable[name] = str(exc)
    holder = None
    if snapshot_id is not None:
        holder = next((name for name, table in tables.items() if table.snapshot_by_id(snapshot_id)), None)
    if snapshot_id is not None and holder is None:
        unknown = f"unknown snapshot {snapshot_id}: no lakehouse table has it"
        raise TimeTravelError(f"{unknown} ({'; '.join(unreadable.values())})" if unreadable else unknown)
    unreadable = {name: problem for name, problem in unreadable.items() if name in wanted}
    pinned: dict[str, int] = {}
    inexact: list[AsOf] = []
    for name in wanted:
        if name not in tables:
            continue
        table = tables[name]
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id):
            snapshot = snapshot_by_id(table, snapshot_id)
        elif as_of is not None:
            found = read_as_of(table, as_of)
            if not found.exact and found.found is not Found.NOT_YET:
                inexact.append(found)
            if found.snapshot is None:
                continue
            snapshot = found.snapshot
        else:
            snapshot = table.current_snapshot()
            if snapshot is None:  # created, nothing committed yet: zero rows, with its columns
                _view(con, name, empty_select(table.schema()))
                continue
        try:
            check_manifests(table, snapshot)
            scan = f"iceberg_scan({sql_string(table.metadata_location)}, snapshot_from_id={snapshot.snapshot_id})"
            _view(con, name, f"SELECT * FROM {scan}")
        except TableUnreadable as exc:
            unreadable[name] = str(exc)
            continue
        except duckdb.Error as exc:  # binding reads the metadata and manifests: any error DuckDB does raise
            unreadable[name] = _duckdb_problem(table, exc)
            continue
        pinned[name] = snapshot.snapshot_id
    if as_of is None and snapshot_id is None:
        for table_def in CODE_TABLES:  # not created yet (no ingest, no reject, no mart run): zero rows too
            if table_def.identifier not in names and _is_read(table_def.identifier, reads):
                _view(con, table_def.identifier, empty_select(table_def.schema))
    if as_of is not None and not pinned and not unreadable and tables.keys() & set(wanted):
        if inexact:
            raise TimeTravelError("; ".join(f.reason for f in inexact))
        firsts = [_first_commit(name, tables[name]) for name in wanted if name in tables]
        raise TimeTravelError(f"no table existed yet at {as_of.isoformat()}: {'; '.join(firsts)}")
    return Views(pinned, inexact, unreadable, holder)


def _first_commit(name: str, table: Table) -> str:
    """When a table's history starts, as a table too young for a time is told."""
    snapshots = table.snapshots()
    if not snapshots:
        return f"{name} has no snapshot yet"
    return f"{name}'s oldest snapshot was committed at {commit_time(min(s.timestamp_ms for s in snapshots))}"


def _view(con: duckdb.DuckDBPyConnection, name: str, select: str) -> None:
    namespace, short = name.split(".", 1)
    con.execute(f"CREATE SCHEMA IF NOT EXISTS {sql_identifier(namespace)}")
    con.execute(f"CREATE OR REPLACE VIEW {sql_identifier(namespace)}.{sql_identifier(short)} AS {select}")


@dataclass(frozen=True)
class Rollback:
    table: str
    before: int | None
    after: int


def rollback(table: Table, target: Snapshot) -> Rollback:
    """Make ``target`` the table's current snapshot again, in one commit; history is kept (time travel still works)."""
    before = table.current_snapshot()
    if before is not None and before.snapshot_id == target.snapshot_id:
        return Rollback(table_name(table), before.snapshot_id, target.snapshot_id)
    table.manage_snapshots().set_current_snapshot(snapshot_id=target.snapshot_id).commit()
    return Rollback(table_name(table), before.snapshot_id if before else None, target.snapshot_id)
