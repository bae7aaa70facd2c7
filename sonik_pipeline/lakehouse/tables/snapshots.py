"""A table's snapshot history: its lineage (the current snapshot and its ancestors), and what expiry took
out of its snapshot log (``ExpiredHistory``), which readers and maintenance both follow."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass

from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot

EXPIRED_HISTORY = "sonik.expired-history"


def lineage(table: Table) -> Iterator[Snapshot]:
    """The current snapshot, then its parent, and so on (newest first); snapshots off the lineage are skipped.

    A rolled-back table's abandoned snapshots are not in it, and an expired parent ends it.
    """
    by_id = {s.snapshot_id: s for s in table.snapshots()}
    snapshot = table.current_snapshot()
    while snapshot is not None:
        yield snapshot
        snapshot = by_id.get(snapshot.parent_snapshot_id) if snapshot.parent_snapshot_id is not None else None


@dataclass(frozen=True)
class ExpiredHistory:
    """What expiry took out of a table's snapshot log, kept in the table property ``sonik.expired-history``.

    ``gaps`` are the merged intervals ``[start, end)`` (epoch ms) during which a since-expired snapshot
    was current, after the oldest retained log entry (before it, everything is "history expired");
    ``first_commit_ms`` is when the table's first snapshot became current, where known.
    """

    first_commit_ms: int | None = None
    gaps: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, metadata: TableMetadata) -> ExpiredHistory | None:
        text = metadata.properties.get(EXPIRED_HISTORY)
        if not text:
            return None
        value = json.loads(text)
        return cls(value.get("first-commit-ms"), tuple((int(a), int(b)) for a, b in value.get("gaps", [])))

    def to_property(self) -> str:
        return json.dumps({"first-commit-ms": self.first_commit_ms, "gaps": [list(g) for g in self.gaps]})

    def gap_at(self, timestamp_ms: int) -> tuple[int, int] | None:
        return next((g for g in self.gaps if g[0] <= timestamp_ms < g[1]), None)


def expired_history_after(metadata: TableMetadata, expired_ids: Collection[int], now_ms: int) -> ExpiredHistory:
    """The ``ExpiredHistory`` once ``expired_ids`` are expired from ``metadata``: the expiry commits it.

    Each log entry of an expired snapshot was current from its timestamp until the next entry's;
    those intervals join the ones already recorded, and the ones older than the oldest entry that
    stays are dropped (a time before that entry is "history expired", whatever it was).
    """
    log = metadata.snapshot_log
    recorded = ExpiredHistory.of(metadata) or ExpiredHistory()
    first = recorded.first_commit_ms
    if first is None and log:
        oldest = metadata.snapshot_by_id(log[0].snapshot_id)
        if oldest is not None and oldest.sequence_number == 1:  # the table's very first snapshot (format v2)
            first = log[0].timestamp_ms
    gaps = list(recorded.gaps)
    for i, entry in enumerate(log):
        if entry.snapshot_id in expired_ids:
            gaps.append((entry.timestamp_ms, log[i + 1].timestamp_ms if i + 1 < len(log) else now_ms))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(gaps):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    kept = [e.timestamp_ms for e in log if e.snapshot_id not in expired_ids]
    oldest_kept = min(kept, default=now_ms)
    return ExpiredHistory(first, tuple(g for g in merged if g[1] > oldest_kept))
