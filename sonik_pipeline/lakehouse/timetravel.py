"""Time travel and rollback: read any table as it was, and undo a bad ingest.

Shared by the ``sonik`` command and the Dagster rollback job. Errors are ``TimeTravelError`` with a
message a user can act on (unknown table, unknown snapshot, a time before the first snapshot).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from sonik_pipeline.lakehouse.marts import MARTS
from sonik_pipeline.lakehouse.tables import MUSIC

NAMESPACES = (MUSIC, MARTS)


class TimeTravelError(ValueError):
    """A table, snapshot or time that does not exist; the message says which."""


def parse_time(text: str) -> dt.datetime:
    """An ISO-8601 time; without an offset it is UTC (as every time in the lakehouse)."""
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise TimeTravelError(f"not a time: {text!r} (expected ISO-8601, e.g. 2026-04-20T12:00:00)") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def table_names(catalog: Catalog) -> list[str]:
    names = []
    for namespace in NAMESPACES:
        try:
            names += [".".join(t) for t in catalog.list_tables(namespace)]
        except NoSuchNamespaceError:
            continue
    return sorted(names)


def load(catalog: Catalog, name: str) -> Table:
    try:
        return catalog.load_table(name)
    except (NoSuchTableError, NoSuchNamespaceError, ValueError):
        known = ", ".join(table_names(catalog)) or "none yet"
        raise TimeTravelError(f"unknown table {name!r} (tables: {known})") from None


def snapshot_by_id(table: Table, snapshot_id: int) -> Snapshot:
    snapshot = table.snapshot_by_id(snapshot_id)
    if snapshot is None:
        raise TimeTravelError(f"unknown snapshot {snapshot_id} for {'.'.join(table.name())}")
    return snapshot


def snapshot_as_of(table: Table, when: dt.datetime) -> Snapshot:
    """The snapshot that was current at ``when`` (following the table's history, so rollbacks count)."""
    snapshot = table.snapshot_as_of_timestamp(int(when.timestamp() * 1000))
    if snapshot is None:
        first = min((s.timestamp_ms for s in table.snapshots()), default=None)
        since = f"; its first snapshot is from {_iso(first)}" if first else " (it has no snapshot yet)"
        raise TimeTravelError(f"{'.'.join(table.name())} did not exist yet at {when.isoformat()}{since}")
    return snapshot


def _iso(timestamp_ms: int) -> str:
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
                committed_at=_iso(s.timestamp_ms),
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


def create_views(
    con: duckdb.DuckDBPyConnection,
    catalog: Catalog,
    as_of: dt.datetime | None = None,
    snapshot_id: int | None = None,
) -> dict[str, int]:
    """A DuckDB view per lakehouse table (``music.plays``, ``music_marts.daily_top_tracks``, ...).

    With ``as_of``, every table reads the snapshot current at that time (tables younger than that are
    left out); with ``snapshot_id``, the table holding that snapshot reads it and the rest are current.
    Returns the snapshot each view reads.
    """
    tables = {name: load(catalog, name) for name in table_names(catalog)}
    if snapshot_id is not None and not any(t.snapshot_by_id(snapshot_id) for t in tables.values()):
        raise TimeTravelError(f"unknown snapshot {snapshot_id}: no lakehouse table has it")
    pinned: dict[str, int] = {}
    for name, table in tables.items():
        if snapshot_id is not None and table.snapshot_by_id(snapshot_id):
            snapshot = snapshot_by_id(table, snapshot_id)
        elif as_of is not None:
            snapshot = table.snapshot_as_of_timestamp(int(as_of.timestamp() * 1000))
            if snapshot is None:
                continue
        else:
            snapshot = table.current_snapshot()
            if snapshot is None:
                continue
        namespace, short = name.split(".", 1)
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "{namespace}"')
        con.execute(
            f'CREATE OR REPLACE VIEW "{namespace}"."{short}" AS SELECT * FROM '
            f"iceberg_scan('{table.metadata_location}', snapshot_from_id={snapshot.snapshot_id})"
        )
        pinned[name] = snapshot.snapshot_id
    if as_of is not None and not pinned:
        raise TimeTravelError(f"no table existed yet at {as_of.isoformat()}")
    return pinned


@dataclass(frozen=True)
class Rollback:
    table: str
    before: int | None
    after: int


def rollback(table: Table, target: Snapshot) -> Rollback:
    """Make ``target`` the table's current snapshot again, in one commit; history is kept (time travel still works)."""
    before = table.current_snapshot()
    if before is not None and before.snapshot_id == target.snapshot_id:
        return Rollback(".".join(table.name()), before.snapshot_id, target.snapshot_id)
    table.manage_snapshots().set_current_snapshot(snapshot_id=target.snapshot_id).commit()
    return Rollback(".".join(table.name()), before.snapshot_id if before else None, target.snapshot_id)
