"""Audits that say what changed: ``diff_table``, ``diff`` and ``day_history`` on real commits, from metadata only."""

import datetime as dt
import time

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table
from pyiceberg.types import LongType, StringType

from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.reads import audit
from sonik_pipeline.lakehouse.reads.timetravel import rollback
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.maintenance.compaction import CompactionOptions, compact_table
from sonik_pipeline.maintenance.expiry import ExpiryOptions, expire_snapshots

A, B, C, D = (dt.date(2026, 4, 17) + dt.timedelta(days=i) for i in range(4))


def _ingest(catalog: Catalog, day: dt.date, run_id: str, *batches) -> None:
    events = [ArrowRows(batch, f"file {i}") for i, batch in enumerate(batches or [synthetic_batch(day, 100)])]
    ingest_day(catalog, day, events, run_id=run_id, max_shrink_share=1.0)
    time.sleep(0.002)  # commits a few ms apart, so times between them are unambiguous


def _lakehouse(catalog: Catalog) -> Table:
    """Day A as six small appended files (compaction's work), days B, C and D ingested by run r1."""
    table, _ = ensure_table(catalog, PLAYS)
    for i in range(6):
        table.append(synthetic_batch(A, 100, batch=i).cast(table.schema().as_arrow()))
    for day in (B, C, D):
        _ingest(catalog, day, "r1")
    return catalog.load_table("music.plays")


def _late_and_rerun_and_compaction(catalog: Catalog) -> Table:
    """Day B ingested again with the same events (r2), day C again with a late file of 30 more (r3), then
    a compaction (r4), which rewrites day A's six files into one."""
    _ingest(catalog, B, "r2")
    _ingest(catalog, C, "r3", synthetic_batch(C, 100), synthetic_batch(C, 30, seed=7))
    table = catalog.load_table("music.plays")
    report = compact_table(table, CompactionOptions(), {"dagster.run-id": "r4"})
    assert [p.partition for p in report.partitions] == [f"played_day={A}"]
    return catalog.load_table("music.plays")


def _figures(result: audit.TableDiff) -> list[tuple]:
    return [
        (d.day, d.rows_before, d.rows_after, d.files_before, d.files_after, d.files_added, d.files_removed)
        for d in result.days
    ]


def _runs(result: audit.TableDiff) -> dict:
    return {d.day: [(c.dagster_run_id, c.dagster_partition, c.sonik_operation) for c in d.commits] for d in result.days}


def test_diff_reports_exactly_the_days_a_rerun_a_late_file_and_a_compaction_changed(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a lakehouse, then a re-ingest, a late file and a compaction
    before = _lakehouse(catalog).current_snapshot()
    table = _late_and_rerun_and_compaction(catalog)
    opened: list[str] = []
    real_new_input = type(table.io).new_input
    monkeypatch.setattr(type(table.io), "new_input", lambda io, path: opened.append(path) or real_new_input(io, path))

    # When the table is compared with its state before them
    result = audit.diff_table(table, before.snapshot_id)

    # Then exactly those days changed: compaction changed files, not rows; the late file added 30 rows
    assert _figures(result) == [
        (A, 600, 600, 6, 1, 1, 6),
        (B, 100, 100, 1, 1, 1, 1),
        (C, 100, 130, 1, 1, 1, 1),
    ]
    assert _runs(result) == {
        A: [("r4", "", "compaction")],
        B: [("r2", str(B), "")],
        C: [("r3", str(C), "")],
    }
    assert (result.lineage, result.note, result.schema_changes) == ("linear", "", [])
    assert [c.dagster_run_id for c in result.commits] == ["r2", "r3", "r4"]
    assert (result.from_snapshot, result.to_snapshot) == (before.snapshot_id, table.current_snapshot().snapshot_id)
    # from metadata alone: no data file opened
    assert opened and not [p for p in opened if p.endswith(".parquet")]


def test_diff_to_an_earlier_point_and_between_equal_snapshots(catalog: Catalog) -> None:
    table = _lakehouse(catalog)
    after_r1 = table.current_snapshot()
    table = _late_and_rerun_and_compaction(catalog)
    after_r2 = [s for s in table.snapshots() if (s.summary or {}).get("dagster.run-id") == "r2"][0]

    up_to_r2 = audit.diff_table(table, after_r1, after_r2.snapshot_id)
    nothing = audit.diff_table(table, after_r2, after_r2)

    assert _figures(up_to_r2) == [(B, 100, 100, 1, 1, 1, 1)]
    assert [c.dagster_run_id for c in up_to_r2.commits] == ["r2"]
    assert (nothing.days, nothing.commits, nothing.lineage) == ([], [], "linear")


def test_diff_from_before_the_first_commit_lists_every_day_as_added(catalog: Catalog) -> None:
    _ingest(catalog, B, "r1")
    table = catalog.load_table("music.plays")
    first = min(s.timestamp_ms for s in table.snapshots())
    long_ago = dt.datetime.fromtimestamp((first - 60_000) / 1000, dt.UTC).isoformat()

    result = audit.diff(table, long_ago)

    assert (result.from_snapshot, result.lineage) == (None, "linear")
    assert _figures(result) == [(B, 0, 100, 0, 1, 1, 0)]


def test_schema_changes_are_reported_by_field_id(catalog: Catalog) -> None:
    # Given a snapshot, then a column added, one retyped and one renamed, and a new commit
    table = _lakehouse(catalog)
    before = table.current_snapshot()
    with table.update_schema() as update:
        update.add_column("mood", StringType(), doc="how the listener felt")
        update.update_column("duration_seconds", field_type=LongType())
        update.rename_column("device", "device_kind")
    table = catalog.load_table("music.plays")
    rows = synthetic_batch(D, 10).rename_columns(
        ["device_kind" if n == "device" else n for n in PLAYS.schema.column_names]
    )
    rows = rows.append_column("mood", pa.nulls(10, pa.string()))
    table.append(rows.cast(table.schema().as_arrow()))
    table = catalog.load_table("music.plays")

    result = audit.diff_table(table, before)

    assert [(c.kind, c.field, c.before, c.after) for c in result.schema_changes] == [
        ("type", "duration_seconds", "int", "long"),
        ("renamed", "device_kind", "device", "device_kind"),
        ("added", "mood", "", "string"),
    ]
    assert [d.day for d in result.days] == [D]
    # ...and the same column changes seen back to front are a drop, a rename and a narrowing
    back = audit.diff_table(table, table.current_snapshot(), before)
    assert [c.kind for c in back.schema_changes] == ["type", "renamed", "dropped"]


def test_a_rollback_makes_the_lineage_not_linear_and_undoes_the_commits(catalog: Catalog) -> None:
    # Given the re-ingest, late file and compaction rolled back to the state before them
    good = _lakehouse(catalog).current_snapshot()
    table = _late_and_rerun_and_compaction(catalog)
    abandoned = table.current_snapshot()
    time.sleep(0.002)
    rollback(table, good)
    table = catalog.load_table("music.plays")

    # When the abandoned state is compared with the current one
    result = audit.diff(table, str(abandoned.snapshot_id))

    # Then the two states are compared and the commits are listed as undone
    assert result.lineage == "not-linear"
    assert f"the table was rolled back to {good.snapshot_id}" in result.note
    assert _figures(result) == [
        (A, 600, 600, 1, 6, 6, 1),
        (B, 100, 100, 1, 1, 1, 1),
        (C, 130, 100, 1, 1, 1, 1),
    ]
    assert [(c.dagster_run_id, c.undone) for c in result.commits] == [("r2", True), ("r3", True), ("r4", True)]


def test_history_of_a_day_lists_its_snapshots_oldest_first_and_a_rollback(catalog: Catalog) -> None:
    # Given day C ingested (r1), again with a late file (r3), then rolled back to before the late file
    table = _lakehouse(catalog)
    good = table.current_snapshot()
    table = _late_and_rerun_and_compaction(catalog)
    time.sleep(0.002)
    rollback(table, good)
    table = catalog.load_table("music.plays")

    history = audit.day_history(table, C)

    assert [
        (h.operation, h.rows_after, h.rows_added, h.rows_removed, h.files_added, h.files_removed, h.dagster_run_id)
        for h in history
    ] == [
        ("overwrite", 100, 100, 0, 1, 0, "r1"),
        ("overwrite", 130, 130, 100, 1, 1, "r3"),
        ("rollback", 100, 100, 130, 1, 1, ""),
    ]
    assert [h.on_lineage for h in history] == [True, False, True]
    assert [h.committed_at for h in history] == sorted(h.committed_at for h in history)
    assert history[2].snapshot_id == good.snapshot_id
    # a day nothing touched after the first ingest; the compacted day shows its compaction
    assert [h.dagster_run_id for h in audit.day_history(table, D)] == ["r1"]
    assert [(h.sonik_operation, h.rows_after, h.files_after) for h in audit.day_history(table, A)][-2:] == [
        ("compaction", 600, 1),
        ("", 600, 6),  # the rollback put the six files back
    ]


def test_unknown_expired_and_backwards_points_are_one_line_errors(catalog: Catalog) -> None:
    table = _lakehouse(catalog)
    first = table.current_snapshot()
    table = _late_and_rerun_and_compaction(catalog)
    current = table.current_snapshot()

    with pytest.raises(audit.AuditError, match=r"^--from 123: music.plays has no snapshot 123 \(expired, or never"):
        audit.diff(table, "123")
    with pytest.raises(audit.AuditError, match=rf"^--from {current.snapshot_id} .* is after --to {first.snapshot_id}"):
        audit.diff(table, str(current.snapshot_id), str(first.snapshot_id))

    # Given everything but the current snapshot expired
    expire_snapshots(table, ExpiryOptions(retention=dt.timedelta(0), retain_last=1))
    table = catalog.load_table("music.plays")
    with pytest.raises(audit.AuditError) as expired:
        audit.diff(table, str(first.snapshot_id))
    message = str(expired.value)
    assert "\n" not in message
    assert message.startswith(f"--from {first.snapshot_id}: music.plays has no snapshot {first.snapshot_id}")
    assert f"1 snapshots are retained, from {current.snapshot_id}" in message
    long_ago = dt.datetime.fromtimestamp((current.timestamp_ms - 1) / 1000, dt.UTC).isoformat()
    with pytest.raises(audit.AuditError, match=r"was expired, so its state at .* is not known; 1 snapshots are"):
        audit.diff(table, long_ago)
