import datetime as dt
from collections import Counter

import duckdb
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.days import partition_day
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest.run import ingest_day, ingest_days
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables import iceberg_internals
from sonik_pipeline.maintenance import manifests
from sonik_pipeline.maintenance.manifests import ManifestRewriteAborted, ManifestRewriteOptions, rewrite_manifests

FIRST = dt.date(2026, 1, 20)
DAYS = [FIRST + dt.timedelta(days=i) for i in range(45)]  # late January to early March: three months
EVENTS = 40


def _ingest(catalog: Catalog, day: dt.date, events: int = EVENTS) -> None:
    ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, events), "test")])


@pytest.fixture
def daily_table(catalog: Catalog) -> Table:
    """music.plays after 45 daily commits: one manifest per day."""
    for day in DAYS:
        _ingest(catalog, day)
    return catalog.load_table("music.plays")


def _live_files(table: Table, snapshot_id: int | None = None) -> Counter:
    return Counter(
        (t.file.file_path, t.file.record_count, t.file.file_size_in_bytes, tuple(t.file.partition))
        for t in table.scan(snapshot_id=snapshot_id).plan_files()
    )


def _checksum(table: Table, snapshot_id: int | None = None) -> tuple[int, int]:
    con = duckdb.connect()
    con.register("t", table.scan(snapshot_id=snapshot_id).to_arrow())
    count, total = con.execute("SELECT count(*), sum(hash(t)) FROM t").fetchone()
    return int(count), int(total)


def _data_manifests(table: Table) -> list:
    return table.current_snapshot().manifests(table.io)


def _days_per_manifest(table: Table) -> list[tuple[dt.date, dt.date, int]]:
    """(first day, last day, files) of each data manifest of the current snapshot."""
    spans = []
    for manifest in _data_manifests(table):
        entries = manifest.fetch_manifest_entry(table.io)
        days = sorted(partition_day(table.spec(), table.schema(), e.data_file.partition) for e in entries)
        spans.append((days[0], days[-1], len(days)))
    return spans


def _paths(manifests: list) -> set[str]:
    return {m.manifest_path for m in manifests}


def test_a_daily_table_is_rewritten_into_one_manifest_a_month_with_every_file_and_row(daily_table: Table) -> None:
    # Given 45 daily commits, one manifest each
    table = daily_table
    files, rows, before = _live_files(table), _checksum(table), table.current_snapshot()
    assert len(_data_manifests(table)) == len(DAYS)

    # When the manifests are rewritten with the default target size (8 MiB)
    report = rewrite_manifests(table, snapshot_properties={"dagster.run-id": "r1"})

    # Then one manifest a month (January, February, March) holds exactly the same live files and rows, in a
    # replace snapshot with the same totals
    table.refresh()
    assert sorted(_days_per_manifest(table)) == [
        (dt.date(2026, 1, 20), dt.date(2026, 1, 31), 12),
        (dt.date(2026, 2, 1), dt.date(2026, 2, 28), 28),
        (dt.date(2026, 3, 1), dt.date(2026, 3, 5), 5),
    ]
    assert (report.manifests_before, report.manifests_after, report.entries) == (45, 3, 45)
    assert report.bytes_after < report.bytes_before
    assert _live_files(table) == files
    assert _checksum(table) == rows
    summary = table.current_snapshot().summary
    assert summary.operation.value == "replace"
    assert summary["sonik.operation"] == "rewrite_manifests"
    assert summary["total-records"] == before.summary["total-records"] == str(len(DAYS) * EVENTS)
    assert summary["total-data-files"] == before.summary["total-data-files"]
    assert (summary["manifests-created"], summary["manifests-kept"], summary["entries-processed"]) == ("3", "0", "45")
    # Time travel to the snapshot before the rewrite still reads its own manifests
    assert _checksum(table, before.snapshot_id) == rows


def test_a_second_rewrite_changes_nothing_and_says_so(daily_table: Table) -> None:
    first = rewrite_manifests(daily_table)
    snapshots = len(daily_table.snapshots())

    second = rewrite_manifests(daily_table)

    daily_table.refresh()
    assert second.snapshot_id is None
    assert second.skipped == "already clustered: 3 data manifests hold 45 files"
    assert len(daily_table.snapshots()) == snapshots
    assert daily_table.current_snapshot().snapshot_id == first.snapshot_id


def test_a_nightly_rewrite_reads_and_writes_only_the_month_that_changed(catalog: Catalog, daily_table: Table) -> None:
    # Given a rewritten table (January, February, March) and a new day in March
    rewrite_manifests(daily_table)
    daily_table.refresh()
    settled = {
        span[0].month: m.manifest_path
        for span, m in zip(_days_per_manifest(daily_table), _data_manifests(daily_table), strict=True)
    }
    _ingest(catalog, DAYS[-1] + dt.timedelta(days=1))
    table = catalog.load_table("music.plays")

    # When the manifests are rewritten again
    report = rewrite_manifests(table)

    # Then January's and February's manifests are the same files, and only March's 6 files were rewritten
    table.refresh()
    assert (report.manifests_kept, report.entries, report.manifests_after) == (2, 6, 3)
    assert {settled[1], settled[2]} < _paths(_data_manifests(table))
    assert settled[3] not in _paths(_data_manifests(table))
    assert table.scan().count() == (len(DAYS) + 1) * EVENTS


def test_re_ingesting_a_day_rewrites_only_its_month(catalog: Catalog, daily_table: Table) -> None:
    rewrite_manifests(daily_table)
    daily_table.refresh()
    kept = _paths(_data_manifests(daily_table))
    _ingest(catalog, dt.date(2026, 1, 25), 50)  # an overwrite of a January day: its manifest now has a delete
    table = catalog.load_table("music.plays")

    report = rewrite_manifests(table)

    table.refresh()
    assert (report.manifests_kept, report.entries) == (2, 12)
    assert len(kept & _paths(_data_manifests(table))) == 2
    assert sorted(n for *_, n in _days_per_manifest(table)) == [5, 12, 28]
    assert table.scan().count() == (len(DAYS) - 1) * EVENTS + 50


def test_a_commit_spanning_two_months_reopens_both(catalog: Catalog, daily_table: Table) -> None:
    # Given a rewritten table, then one commit re-ingesting January 31 and February 1 (one manifest, two months)
    rewrite_manifests(daily_table)
    days = [dt.date(2026, 1, 31), dt.date(2026, 2, 1)]
    list(ingest_days(catalog, [(day, [ArrowRows(synthetic_batch(day, 50), "test")]) for day in days]))
    table = catalog.load_table("music.plays")
    files = _live_files(table)

    report = rewrite_manifests(table)

    # Then January and February are rewritten whole, March is kept, and every file is still there once
    table.refresh()
    assert (report.manifests_kept, report.entries) == (1, 40)
    assert sorted(n for *_, n in _days_per_manifest(table)) == [5, 12, 28]
    assert _live_files(table) == files
    assert rewrite_manifests(table).skipped


def test_a_month_larger_than_the_target_is_split_into_contiguous_manifests(daily_table: Table) -> None:
    # A target of ~20 entries per manifest: February's 28 days need two
    options = ManifestRewriteOptions(target_size_bytes=20 * manifests.estimated_entry_bytes(daily_table))
    report = rewrite_manifests(daily_table, options)

    daily_table.refresh()
    spans = sorted(_days_per_manifest(daily_table))
    assert report.manifests_after == len(spans) == 4
    assert [n for *_, n in spans] == [12, 20, 8, 5]
    assert all(earlier[1] < later[0] for earlier, later in zip(spans, spans[1:], strict=False))  # no overlap
    assert _live_files(daily_table) == _live_files(daily_table, report.snapshot_id)
    # And it is stable: the same target a second time finds nothing to do
    assert rewrite_manifests(daily_table, options).skipped


def test_a_dry_run_reports_the_plan_and_commits_nothing(daily_table: Table) -> None:
    current = daily_table.current_snapshot().snapshot_id

    report = rewrite_manifests(daily_table, ManifestRewriteOptions(dry_run=True))

    daily_table.refresh()
    assert (report.manifests_before, report.manifests_after, report.skipped) == (45, 3, "dry run")
    assert daily_table.current_snapshot().snapshot_id == current


def test_an_ingest_committed_during_the_rewrite_is_kept(
    catalog: Catalog, daily_table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another writer that commits a new day while the rewrite is building its manifests
    late_day = DAYS[-1] + dt.timedelta(days=1)
    original = iceberg_internals.ReplaceManifests._existing_manifests
    calls = []

    def with_a_concurrent_ingest(self):
        if not calls:
            _ingest(catalog, late_day, 25)  # through its own catalog handle, committed first
        calls.append(1)
        return original(self)

    monkeypatch.setattr(iceberg_internals.ReplaceManifests, "_existing_manifests", with_a_concurrent_ingest)

    # When the rewrite commits, it conflicts, and PyIceberg retries it on the refreshed table
    report = rewrite_manifests(daily_table)

    # Then both land: the new day's rows are there and every file is in the rewritten manifests
    table = catalog.load_table("music.plays")
    assert report.attempts == 2
    assert table.current_snapshot().snapshot_id == report.snapshot_id
    assert table.scan().count() == len(DAYS) * EVENTS + 25
    assert len(_data_manifests(table)) == 3
    assert report.details["entries-processed"] == str(len(DAYS) + 1)


def test_without_retries_a_conflicting_rewrite_gives_up_and_leaves_the_table_untouched(
    catalog: Catalog, daily_table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    with daily_table.transaction() as txn:
        txn.set_properties({"commit.retry.num-retries": "0"})
    daily_table.refresh()
    metadata_dir = daily_table.location().removeprefix("file://") + "/metadata"
    late_day = DAYS[-1] + dt.timedelta(days=1)
    original = iceberg_internals.ReplaceManifests._existing_manifests

    def with_a_concurrent_ingest(self):
        _ingest(catalog, late_day, 25)
        return original(self)

    monkeypatch.setattr(iceberg_internals.ReplaceManifests, "_existing_manifests", with_a_concurrent_ingest)
    from pathlib import Path

    with pytest.raises(CommitFailedException):
        rewrite_manifests(daily_table)

    table = catalog.load_table("music.plays")
    assert table.current_snapshot().summary["dagster.partition"] == str(late_day)  # the ingest won
    assert table.scan().count() == len(DAYS) * EVENTS + 25
    referenced = {m.manifest_path.removeprefix("file://") for s in table.snapshots() for m in s.manifests(table.io)}
    on_disk = {str(p) for p in Path(metadata_dir).glob("*-m*.avro")}
    assert on_disk == referenced  # the rewrite's manifests were cleaned up


def test_a_rewrite_that_would_lose_a_file_is_aborted_before_committing(
    daily_table: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = manifests._write

    def drop_one_file(table, planned, new_writer):
        spec_id, entries = planned[0]
        return real_write(table, [(spec_id, entries[1:]), *planned[1:]], new_writer)

    monkeypatch.setattr(manifests, "_write", drop_one_file)
    current = daily_table.current_snapshot().snapshot_id
    metadata_dir = daily_table.location().removeprefix("file://") + "/metadata"
    from pathlib import Path

    avro_before = set(Path(metadata_dir).glob("*.avro"))

    with pytest.raises(ManifestRewriteAborted, match="44 live files, the originals 45"):
        rewrite_manifests(daily_table)

    daily_table.refresh()
    assert daily_table.current_snapshot().snapshot_id == current
    assert set(Path(metadata_dir).glob("*.avro")) == avro_before


def test_duckdb_reads_the_rewritten_table_offline(daily_table: Table) -> None:
    rewrite_manifests(daily_table)
    daily_table.refresh()
    con = load_iceberg(duckdb.connect())

    [(count,)] = con.execute(f"SELECT count(*) FROM iceberg_scan('{daily_table.metadata_location}')").fetchall()
    [(one_day,)] = con.execute(
        f"SELECT count(*) FROM iceberg_scan('{daily_table.metadata_location}') "
        f"WHERE played_at >= TIMESTAMP '{DAYS[3]}' AND played_at < TIMESTAMP '{DAYS[4]}'"
    ).fetchall()

    assert (count, one_day) == (len(DAYS) * EVENTS, EVENTS)


def test_sonik_and_the_tutorials_read_script_work_on_a_rewritten_table(
    daily_table: Table, settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    from sonik_pipeline import cli

    before = daily_table.current_snapshot().snapshot_id
    rewrite_manifests(daily_table)
    monkeypatch.setenv("SONIK_HOME", str(settings.home))
    monkeypatch.setenv("SONIK_CATALOG_URI", settings.catalog_uri)

    # sonik tables and sonik snapshots list the rewrite like any commit
    assert cli.main(["tables", "--format", "csv"]) == 0
    tables = capsys.readouterr().out.splitlines()
    assert tables[1].startswith(f"music.plays,{len(DAYS) * EVENTS},{len(DAYS)},")
    assert cli.main(["snapshots", "music.plays", "--format", "csv"]) == 0
    snapshots = capsys.readouterr().out.splitlines()
    assert snapshots[-1].split(",")[2:4] == ["replace", str(len(DAYS) * EVENTS)]

    # the tutorial's read side: a catalog of its own, a scan, time travel to a day before the rewrite
    if settings.catalog_uri.startswith("sqlite"):
        tutorial = SqlCatalog("sonik", uri=settings.catalog_uri, warehouse=settings.warehouse)
        table = tutorial.load_table("music.plays")
        assert table.scan(selected_fields=["artist"]).to_pandas()["artist"].value_counts().index[0] == "The Weeknd"
        assert len(table.scan(snapshot_id=before).to_pandas()) == len(DAYS) * EVENTS
