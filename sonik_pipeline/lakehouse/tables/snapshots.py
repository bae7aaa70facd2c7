"""A table's snapshot lineage: the current snapshot and its ancestors, the history readers and maintenance follow."""

from __future__ import annotations

from collections.abc import Iterator

from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot


def lineage(table: Table) -> Iterator[Snapshot]:
    """The current snapshot, then its parent, and so on (newest first); snapshots off the lineage are skipped.

    A rolled-back table's abandoned snapshots are not in it, and an expired parent ends it.
    """
    by_id = {s.snapshot_id: s for s in table.snapshots()}
    snapshot = table.current_snapshot()
    while snapshot is not None:
        yield snapshot
        snapshot = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id is not None else None
