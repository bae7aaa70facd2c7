import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions.visitors import IN_PREDICATE_LIMIT
from pyiceberg.manifest import ManifestFile

from sonik_pipeline.lakehouse.days import partition_day, played_at_filter
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.reads import timetravel
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.writes import replace_partition, stage_files
from sonik_pipeline.maintenance import expiry, orphans
from sonik_pipeline.maintenance.expiry import ExpiryOptions, expire_snapshots
from sonik_pipeline.maintenance.files import file_key, manifests_that_may_hold, referenced_files
from sonik_pipeline.maintenance.manifests import rewrite_manifests
from sonik_pipeline.maintenance.orphans import (
    MINIMUM_SAFETY_WINDOW,
    OrphanOptions,
    OrphanWindowTooShort,
    remove_orphan_files,
)
from sonik_pipeline.settings import Settings
from sonik_pipeline_tests.conftest import record_manifest_reads

DAY = dt.date(2026, 4, 20)
NO_RETENTION = dt.timedelta(0)
NO_WINDOW = OrphanOptions(older_than=dt.timedelta(0), i_know_no_writer_is_running=True)  # no writer runs here


def _warehouse_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _stored(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _write_snapshots(catalog: Catalog, count: int):
    """``count`` snapshots: re-writes of a few days, so most old files become unreachable over time."""
    table, _ = ensure_table(catalog, PLAYS)
    for i in range(count):
        day = DAY - dt.timedelta(days=i % 4)
        files = stage_files(table, [synthetic_batch(day, 300, batch=i)])
        replace_partition(table, played_at_filter(day), files, {})
    return catalog.load_table("music.plays")


def _all_referenced_exist(table, root: Path) -> bool:
    return all(Path(key).exists() for key in referenced_files(table) if key.startswith(str(root)))


def test_expiry_keeps_the_last_5_deletes_the_rest_and_reclaims_the_bytes(catalog: Catalog, sonik_home: Path) -> None:
    # Given 40 snapshots
    table = _write_snapshots(catalog, 40)
    warehouse = sonik_home / "warehouse"
    stored_before = _stored(warehouse)
    assert len(table.snapshots()) == 40

    # When snapshots expire with no retention, keeping the last 5
    report = expire_snapshots(table, ExpiryOptions(retention=NO_RETENTION, retain_last=5))

    # Then 5 remain, each reads completely, and the folder shrank by exactly the bytes reported
    table = catalog.load_table("music.plays")
    assert len(table.snapshots()) == 5
    assert len(report.snapshots_expired) == 35
    for snapshot in table.snapshots():
        assert table.scan(snapshot_id=snapshot.snapshot_id).count() == int(snapshot.summary["total-records"])
        assert table.scan(snapshot_id=snapshot.snapshot_id).to_arrow().num_rows == int(
            snapshot.summary["total-records"]
        )
    stored_after = _stored(warehouse)
    gone = set(stored_before) - set(stored_after)
    assert sum(stored_before[p] for p in gone) == sum(report.bytes_deleted.values())
    assert {str(p) for p in gone} == set(report.deleted)
    new = set(stored_after) - set(stored_before)  # only the metadata file of the expiry commit itself
    assert [p.name.endswith(".metadata.json") for p in new] == [True]
    assert sum(stored_before.values()) - sum(stored_after.values()) == sum(report.bytes_deleted.values()) - sum(
        stored_after[p] for p in new
    )
    assert report.files_deleted["data_files"] > 0
    assert report.files_deleted["manifest_lists"] == 35
    assert report.files_deleted["manifests"] > 0
    assert _all_referenced_exist(table, warehouse)


def test_expiry_respects_retention_refs_and_dry_run(catalog: Catalog, sonik_home: Path) -> None:
    table = _write_snapshots(catalog, 12)
    tagged = table.snapshots()[2].snapshot_id
    table.manage_snapshots().create_tag(tagged, "audit-2026-04").commit()
    table = catalog.load_table("music.plays")
    metadata = table.metadata_location
    size = _warehouse_bytes(sonik_home / "warehouse")

    dry = expire_snapshots(table, ExpiryOptions(retention=NO_RETENTION, retain_last=3, dry_run=True))
    assert catalog.load_table("music.plays").metadata_location == metadata
    assert _warehouse_bytes(sonik_home / "warehouse") == size
    assert tagged not in dry.snapshots_expired and len(dry.snapshots_expired) == 8

    kept_by_retention = expire_snapshots(table, ExpiryOptions(retention=dt.timedelta(days=30), retain_last=3))
    assert kept_by_retention.snapshots_expired == []  # all are younger than 30 days

    report = expire_snapshots(catalog.load_table("music.plays"), ExpiryOptions(retention=NO_RETENTION, retain_last=3))
    table = catalog.load_table("music.plays")
    assert sorted(report.snapshots_expired) == sorted(dry.snapshots_expired)
    assert tagged in {s.snapshot_id for s in table.snapshots()}
    assert table.scan(snapshot_id=tagged).count() == int(table.snapshot_by_id(tagged).summary["total-records"])
    assert _all_referenced_exist(table, sonik_home / "warehouse")


def test_expiry_counts_retention_back_from_its_own_clock_and_ends_the_history_there(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 6 snapshots, and a 30-day retention that keeps the newest 2
    table = _write_snapshots(catalog, 6)
    newest = dt.datetime.fromtimestamp(max(s.timestamp_ms for s in table.snapshots()) / 1000, dt.UTC)
    month = dt.timedelta(days=30)
    recorded_until = []
    real_history = expiry.expired_history_after

    def recording_history(metadata, expired_ids, now_ms):
        recorded_until.append(now_ms)
        return real_history(metadata, expired_ids, now_ms)

    monkeypatch.setattr(expiry, "expired_history_after", recording_history)

    # When expiry's clock reads a day before the newest snapshot turns 30 days old, then a day after
    early = newest + month - dt.timedelta(days=1)
    too_soon = expire_snapshots(table, ExpiryOptions(retention=month, retain_last=2, now=early))
    late = newest + month + dt.timedelta(days=1)
    report = expire_snapshots(
        catalog.load_table("music.plays"), ExpiryOptions(retention=month, retain_last=2, now=late)
    )

    # Then the first expires nothing, the second all but the newest 2, and its history ends at its clock
    assert too_soon.snapshots_expired == []
    assert len(report.snapshots_expired) == 4
    assert len(catalog.load_table("music.plays").snapshots()) == 2
    assert recorded_until == [int(late.timestamp() * 1000)]


def test_metadata_files_beyond_previous_versions_max_are_deleted(
    catalog: Catalog, sonik_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The code sets every table's properties (lakehouse/tables/definitions.py), so the test sets it there
    monkeypatch.setitem(PLAYS.properties, "write.metadata.previous-versions-max", "4")
    table = _write_snapshots(catalog, 10)
    metadata_dir = sonik_home / "warehouse" / "music" / "plays" / "metadata"
    time.sleep(0.05)

    report = expire_snapshots(table, ExpiryOptions(retention=NO_RETENTION, retain_last=2))

    table = catalog.load_table("music.plays")
    remaining = sorted(metadata_dir.glob("*.metadata.json"))
    assert report.files_deleted["metadata_files"] >= 6
    assert len(remaining) == len(table.metadata.metadata_log) + 1


KILLED_WRITER = """
import datetime as dt, sys, time
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.writes import FileStager
catalog = open_catalog("sonik", sys.argv[1], sys.argv[2])
table = catalog.load_table("music.plays")
stager = FileStager(table)
stager.add(synthetic_batch(dt.date(2026, 4, 20), 5000, batch=99))
stager.finish()  # Parquet files are written; the commit never comes
print("staged", flush=True)
time.sleep(600)
"""


def test_a_killed_writer_leaves_no_trace_and_orphan_removal_cleans_up(
    catalog: Catalog, settings: Settings, sonik_home: Path
) -> None:
    # Given a table and a writer killed with SIGKILL after writing its Parquet files, before its commit
    table = _write_snapshots(catalog, 3)
    snapshot_before = table.current_snapshot().snapshot_id
    rows_before = table.scan().count()
    files_before = {p for p in (sonik_home / "warehouse").rglob("*") if p.is_file()}
    writer = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_WRITER), settings.catalog_uri, settings.warehouse],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    with writer:  # closes its pipe
        assert writer.stdout.readline().strip() == "staged"
        os.killpg(writer.pid, signal.SIGKILL)
        writer.wait(30)
    leftovers = {p for p in (sonik_home / "warehouse").rglob("*") if p.is_file()} - files_before
    assert leftovers and all(p.suffix == ".parquet" for p in leftovers)

    # Then the table is at its previous snapshot with nothing partial visible
    table = catalog.load_table("music.plays")
    assert table.current_snapshot().snapshot_id == snapshot_before
    assert table.scan().count() == rows_before

    # When orphans are removed: the safety window protects them, then a zero window takes exactly them
    assert remove_orphan_files(table, OrphanOptions()).deleted == []
    report = remove_orphan_files(table, NO_WINDOW)

    assert {Path(k) for k in report.deleted} == leftovers
    assert {p for p in (sonik_home / "warehouse").rglob("*") if p.is_file()} == files_before
    assert report.files_deleted["data_files"] == len(leftovers)
    assert catalog.load_table("music.plays").scan().count() == rows_before


def test_orphan_dry_run_lists_without_deleting(catalog: Catalog, sonik_home: Path) -> None:
    table = _write_snapshots(catalog, 2)
    stray = Path(table.location().removeprefix("file://")) / "data" / "stray.parquet"
    stray.write_bytes(b"not really parquet")

    report = remove_orphan_files(table, replace(NO_WINDOW, dry_run=True))

    assert report.deleted == [str(stray)]
    assert stray.exists()


def test_an_orphan_window_under_24_hours_needs_the_override() -> None:
    with pytest.raises(OrphanWindowTooShort, match=r"window of 23h is under the 24h minimum"):
        OrphanOptions(older_than=dt.timedelta(hours=23))
    assert OrphanOptions(older_than=MINIMUM_SAFETY_WINDOW).older_than == dt.timedelta(hours=24)
    assert OrphanOptions(older_than=dt.timedelta(0), i_know_no_writer_is_running=True).older_than == dt.timedelta(0)


def test_a_half_written_newer_metadata_file_keeps_everything_written_since_the_current_one(
    catalog: Catalog, sonik_home: Path
) -> None:
    # Given an old orphan, and a writer that staged data files and is half-way through its metadata JSON
    table = _write_snapshots(catalog, 2)
    current = Path(table.metadata_location.removeprefix("file://"))
    old_orphan = current.parent.parent / "data" / "old-orphan.parquet"
    old_orphan.write_bytes(b"x" * 100)
    an_hour_before = current.stat().st_mtime - 3600
    os.utime(old_orphan, (an_hour_before, an_hour_before))
    staged = [Path(f.file_path.removeprefix("file://")) for f in stage_files(table, [synthetic_batch(DAY, 300, 7)])]
    version = int(current.name.split("-", 1)[0])
    half_written = current.parent / f"{version + 1:05d}-{uuid.uuid4()}.metadata.json"
    half_written.write_text(current.read_text()[:100])

    # When orphans are removed with no window
    report = remove_orphan_files(table, NO_WINDOW)

    # Then only the old orphan goes: the half-written commit keeps all that is newer than the current metadata
    assert report.deleted == [str(old_orphan)] and not old_orphan.exists()
    assert set(report.in_flight) == {str(half_written), *map(str, staged)}
    assert half_written.exists() and all(p.exists() for p in staged)


def test_a_commit_landing_during_orphan_removal_keeps_its_files(catalog: Catalog, monkeypatch) -> None:
    # Given data files staged before orphan removal lists the table, by a writer that commits while it runs
    table = _write_snapshots(catalog, 2)
    writer_table = catalog.load_table("music.plays")
    day = DAY + dt.timedelta(days=1)
    staged = stage_files(writer_table, [synthetic_batch(day, 300, batch=8)])
    read_references = orphans.referenced_files

    def commit_just_after(table_read):  # the writer's commit lands right after the references were read
        references = read_references(table_read)
        replace_partition(writer_table, played_at_filter(day), staged, {})
        return references

    monkeypatch.setattr(orphans, "referenced_files", commit_just_after)

    # When orphans are removed with no window
    report = remove_orphan_files(table, NO_WINDOW)

    # Then the files the landed commit references are not taken, and every snapshot reads in full
    assert report.deleted == []
    table = catalog.load_table("music.plays")
    assert len(table.snapshots()) == 3 and table.scan().count() == 2 * 300 + 300
    for snapshot in table.snapshots():
        assert table.scan(snapshot_id=snapshot.snapshot_id).to_arrow().num_rows == int(
            snapshot.summary["total-records"]
        )


def test_a_rollback_landing_while_expiry_plans_keeps_its_snapshot_and_the_main_branch(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given expiry about to drop old snapshots, one of which a user rolls back to before expiry commits
    table = _write_snapshots(catalog, 8)
    target = table.snapshots()[1]
    rows = table.scan(snapshot_id=target.snapshot_id).count()
    real_plan_cleanup = expiry.plan_cleanup
    rolled_back = []

    def rollback_meanwhile(tbl, expired_ids):
        if not rolled_back:  # between planning and commit, as `sonik rollback` or rollback_job would
            timetravel.rollback(catalog.load_table("music.plays"), target)
            rolled_back.append(target.snapshot_id)
        return real_plan_cleanup(tbl, expired_ids)

    monkeypatch.setattr(expiry, "plan_cleanup", rollback_meanwhile)

    # When expiry commits
    report = expire_snapshots(table, ExpiryOptions(retention=NO_RETENTION, retain_last=2))

    # Then the rollback stands: expiry planned again around the snapshot main now points at
    table = catalog.load_table("music.plays")
    assert rolled_back and table.current_snapshot().snapshot_id == target.snapshot_id
    assert table.metadata.refs["main"].snapshot_id == target.snapshot_id
    assert target.snapshot_id not in report.snapshots_expired and report.snapshots_expired
    assert table.scan().count() == rows


# Incremental cleanup: expiry opens the manifests the expired snapshots dropped and the retained ones that
# may hold the same partitions, never the rest; none of that may cost a file a retained snapshot reads.

MONTH_DAYS = [dt.date(2026, m, d) for m in (2, 3, 4) for d in (10, 11)]  # two days in each of three months
APRIL_11, APRIL_12 = dt.date(2026, 4, 11), dt.date(2026, 4, 12)
DAY_EVENTS = 50
KEEP_HEAD = ExpiryOptions(retention=NO_RETENTION, retain_last=1)


def _ingest(catalog: Catalog, day: dt.date, batch: int = 0) -> None:
    ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, DAY_EVENTS, batch=batch), "test")])


def _live_data_files(table) -> dict[dt.date, str]:
    """The current snapshot's data files, by day (one a day here)."""
    return {
        partition_day(table.spec(), table.schema(), t.file.partition): file_key(t.file.file_path)
        for t in table.scan().plan_files()
    }


def _manifest_paths(table) -> set[str]:
    return {m.manifest_path for m in table.current_snapshot().manifests(table.io)}


def _clustered_months(catalog: Catalog):
    """Six days in three months, a manifest a day, then rewritten into one manifest a month."""
    for day in MONTH_DAYS:
        _ingest(catalog, day)
    day_manifests = _manifest_paths(catalog.load_table("music.plays"))
    rewrite_manifests(catalog.load_table("music.plays"))
    return catalog.load_table("music.plays"), day_manifests


def test_files_a_dropped_manifest_holds_that_a_rewritten_manifest_still_holds_live_are_kept(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given six days, whose day manifests only old snapshots list since the rewrite clustered them by month
    table, day_manifests = _clustered_months(catalog)
    month_manifests = _manifest_paths(table)
    files = _live_data_files(table)
    assert len(day_manifests) == 6 and len(month_manifests) == 3 and len(files) == 6

    # When every snapshot but the head expires
    reads = record_manifest_reads(monkeypatch)
    report = expire_snapshots(table, KEEP_HEAD)
    reads = list(reads)  # what expiry read, not the checks below

    # Then the day manifests are gone, but every data file they held is kept: the month manifests hold them live
    table = catalog.load_table("music.plays")
    assert report.files_deleted["data_files"] == 0
    assert all(Path(key).exists() for key in files.values())
    assert not any(Path(file_key(p)).exists() for p in day_manifests)
    assert all(Path(file_key(p)).exists() for p in month_manifests)
    assert report.files_deleted["manifests"] == 6
    assert table.scan().to_arrow().num_rows == 6 * DAY_EVENTS
    assert _all_referenced_exist(table, Path(table.location().removeprefix("file://")))
    # The cost of a night after a full rewrite: every dropped manifest and every retained one is read once
    assert sorted(reads) == sorted(day_manifests | month_manifests)


def test_a_night_reads_only_the_manifests_of_the_months_it_changed_and_deletes_what_only_expired_snapshots_read(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three clustered months with their history expired
    table, _ = _clustered_months(catalog)
    expire_snapshots(table, KEEP_HEAD)
    before = _live_data_files(catalog.load_table("music.plays"))

    # When a night's work lands in April (a day re-ingested, a new day, April's manifest rewritten), then expiry
    _ingest(catalog, APRIL_11, batch=1)
    _ingest(catalog, APRIL_12)
    rewrite_manifests(catalog.load_table("music.plays"))
    table = catalog.load_table("music.plays")
    head = _manifest_paths(table)
    settled = {m.manifest_path for m in table.current_snapshot().manifests(table.io) if _months(table, m) != {4}}
    expired_ids = [s.snapshot_id for s in table.snapshots() if s.snapshot_id != table.current_snapshot().snapshot_id]
    plan = expiry.plan_cleanup(table, expired_ids)
    reads = record_manifest_reads(monkeypatch)
    report = expire_snapshots(table, KEEP_HEAD)
    reads = list(reads)

    # Then February's and March's manifests were never opened: only April's dropped ones and its new one
    assert len(settled) == 2 and not settled & set(reads)
    assert set(plan.checked) == head - settled
    assert sorted(reads) == sorted([*plan.dropped, *(head - settled)]) and report.manifests_read == len(reads)
    assert all(Path(file_key(p)).exists() for p in head)
    assert not any(Path(file_key(p)).exists() for p in plan.dropped)
    # And April 11's replaced file, which only expired snapshots read, is deleted; every live file is there
    table = catalog.load_table("music.plays")
    after = _live_data_files(table)
    assert after[APRIL_11] != before[APRIL_11]
    assert not Path(before[APRIL_11]).exists() and before[APRIL_11] in report.deleted
    assert report.files_deleted["data_files"] == 1
    assert all(Path(key).exists() for key in after.values()) and len(after) == 7
    assert table.scan().to_arrow().num_rows == 7 * DAY_EVENTS
    assert _all_referenced_exist(table, Path(table.location().removeprefix("file://")))


def _months(table, manifest: ManifestFile) -> set[int]:
    entries = ManifestFile.fetch_manifest_entry(manifest, table.io)
    return {partition_day(table.spec(), table.schema(), e.data_file.partition).month for e in entries}


def test_a_file_a_writer_registers_again_just_after_the_expiry_commit_is_kept(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a re-ingested day, whose first file only expired snapshots reach
    _ingest(catalog, APRIL_11)
    _ingest(catalog, APRIL_12)
    replaced = _live_data_files(catalog.load_table("music.plays"))[APRIL_11]
    _ingest(catalog, APRIL_11, batch=1)
    table = catalog.load_table("music.plays")
    assert replaced in expire_snapshots(table, replace(KEEP_HEAD, dry_run=True)).deleted

    # And a writer that registers that file again right after the expiry commits
    real_commit = expiry._commit_expiry

    def commit_then_register(tbl, snapshot_ids, history):
        real_commit(tbl, snapshot_ids, history)
        catalog.load_table("music.plays").add_files([replaced])

    monkeypatch.setattr(expiry, "_commit_expiry", commit_then_register)

    # When snapshots expire
    report = expire_snapshots(table, KEEP_HEAD)

    # Then the file is kept, as the writer's snapshot reads it; what nothing reaches is still deleted
    table = catalog.load_table("music.plays")
    assert report.snapshots_expired and replaced not in report.deleted and Path(replaced).exists()
    assert report.files_deleted["manifest_lists"] == len(report.snapshots_expired)
    assert table.scan().to_arrow().num_rows == 3 * DAY_EVENTS
    assert _all_referenced_exist(table, Path(table.location().removeprefix("file://")))


def test_a_manifest_is_left_unread_only_when_its_partition_summaries_rule_every_candidate_out(
    catalog: Catalog,
) -> None:
    # Given one manifest a month, and a candidate partition in April
    table, _ = _clustered_months(catalog)
    manifests = table.current_snapshot().manifests(table.io)
    [april] = [m for m in manifests if _months(table, m) == {4}]
    spec_id = table.spec().spec_id
    april_day = {tuple(e.data_file.partition) for e in april.fetch_manifest_entry(table.io)}

    # Then April's manifest may hold it; the others may not
    assert manifests_that_may_hold(table, manifests, {spec_id: april_day}) == [april]
    # Partitions of another spec prune nothing of this one, nor do manifests without summaries
    assert manifests_that_may_hold(table, manifests, {spec_id + 1: april_day}) == manifests
    unsummarised = SimpleNamespace(manifest_path="x.avro", partition_spec_id=spec_id, partitions=None)
    assert manifests_that_may_hold(table, [unsummarised], {spec_id: april_day}) == [unsummarised]
    # More than PyIceberg's In limit of days is pruned by their range
    many = {(d,) for d in range(IN_PREDICATE_LIMIT + 1)}  # days since 1970: all long before February 2026
    assert manifests_that_may_hold(table, manifests, {spec_id: many}) == []
    # A null partition value is pruned only by a summary that says no null is there
    assert manifests_that_may_hold(table, manifests, {spec_id: {(None,)}}) == []
