import datetime as dt
import multiprocessing
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.days import epoch_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.maintenance import compaction
from sonik_pipeline.maintenance.compaction import (
    CompactionAborted,
    CompactionOptions,
    StreamingChecksum,
    compact_table,
    split_into_groups,
)
from sonik_pipeline.settings import CATALOG_NAME, Settings

DAY = dt.date(2026, 4, 20)


def _micro_batches(table, day: dt.date, batches: int, rows: int = 200) -> None:
    for hour in range(batches):
        table.append(synthetic_batch(day, rows, batch=hour).cast(table.schema().as_arrow()))


def _files(table, day: dt.date | None = None) -> list:
    files = [t.file for t in table.scan().plan_files()]
    return [f for f in files if day is None or f.partition[0] == epoch_day(day)]


def _sorted_rows(table, snapshot_id: int | None = None) -> list[dict]:
    return sorted(table.scan(snapshot_id=snapshot_id).to_arrow().to_pylist(), key=lambda r: r["play_id"])


def test_24_hourly_micro_batches_become_one_file_with_identical_rows(catalog: Catalog) -> None:
    # Given a day written as 24 hourly micro-batches
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY, 24)
    before = _sorted_rows(table)
    snapshot_before = table.current_snapshot().snapshot_id
    assert len(_files(table)) == 24

    # When it is compacted
    report = compact_table(table, CompactionOptions(sort_by=("artist", "track_id")))

    # Then one file holds exactly the same rows, and time travel still sees the 24 files
    table = catalog.load_table("music.plays")
    assert len(_files(table)) == 1
    assert _sorted_rows(table) == before
    assert _sorted_rows(table, snapshot_before) == before
    assert len(list(table.scan(snapshot_id=snapshot_before).plan_files())) == 24
    assert (report.files_before, report.files_after) == (24, 1)
    assert report.bytes_before > report.bytes_after > 0
    assert report.partitions[0].partition == "played_day=2026-04-20"
    summary = table.snapshot_by_id(report.snapshot_id).summary
    assert summary["sonik.operation"] == "compaction"
    assert summary["total-records"] == str(len(before))
    artists = table.scan().to_arrow().column("artist").to_pylist()
    assert artists == sorted(artists)  # sorted within the file, so min/max statistics prune


def test_only_partitions_with_enough_small_files_and_old_enough_are_rewritten(catalog: Catalog) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY - dt.timedelta(days=2), 6)  # old enough, enough files
    _micro_batches(table, DAY - dt.timedelta(days=1), 3)  # too few files
    _micro_batches(table, DAY, 6)  # too recent

    report = compact_table(table, CompactionOptions(days_before=DAY))

    table = catalog.load_table("music.plays")
    assert [p.partition for p in report.partitions] == ["played_day=2026-04-18"]
    assert [len(_files(table, DAY - dt.timedelta(days=d))) for d in (2, 1, 0)] == [1, 3, 6]


def test_dry_run_plans_without_changing_anything(catalog: Catalog) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY, 8)
    metadata = table.metadata_location

    report = compact_table(table, CompactionOptions(dry_run=True))

    assert (report.files_before, report.snapshot_id, report.dry_run) == (8, None, True)
    assert catalog.load_table("music.plays").metadata_location == metadata


@pytest.mark.parametrize("reader", ["duckdb", "pyiceberg"])
def test_a_checksum_mismatch_aborts_without_committing_or_leaving_files(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, sonik_home: Path, reader: str
) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY, 6)
    metadata = table.metadata_location
    files_on_disk = set((sonik_home / "warehouse").rglob("*.parquet"))
    if reader == "pyiceberg":  # as for a table with a renamed column: PyIceberg's reader, by field id
        monkeypatch.setattr(compaction, "native_select", lambda *args: None)
    real_add = compaction.FileStager.add
    dropped = []

    def add_losing_a_row(self, rows):  # the writer loses one row of the first batch
        if not dropped:
            dropped.append(rows.slice(0, 1))
            rows = rows.slice(1)
        real_add(self, rows)

    monkeypatch.setattr(compaction.FileStager, "add", add_losing_a_row)

    with pytest.raises(CompactionAborted, match="rewritten rows differ"):
        compact_table(table, CompactionOptions())

    assert catalog.load_table("music.plays").metadata_location == metadata
    assert set((sonik_home / "warehouse").rglob("*.parquet")) == files_on_disk


def test_both_readers_rewrite_the_same_rows(catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY, 6)
    _micro_batches(table, DAY - dt.timedelta(days=1), 6)
    before = _sorted_rows(table)
    native = compact_table(table, CompactionOptions(days_before=DAY, sort_by=("artist",)))
    monkeypatch.setattr(compaction, "native_select", lambda *args: None)
    arrow = compact_table(catalog.load_table("music.plays"), CompactionOptions(sort_by=("artist",)))

    assert (native.rows_verified, arrow.rows_verified) == (1_200, 1_200)
    assert _sorted_rows(catalog.load_table("music.plays")) == before


def _append_forever(settings: Settings, day: str, batches: int, ready, done) -> None:
    """A separate process appending micro-batches to the same day while compaction runs."""
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    table = catalog.load_table("music.plays")
    ready.set()
    for i in range(batches):
        table.append(synthetic_batch(dt.date.fromisoformat(day), 50, seed=7, batch=i).cast(table.schema().as_arrow()))
    done.set()


@pytest.mark.slow
def test_compaction_racing_an_appender_on_the_same_partition_loses_no_row(catalog: Catalog, settings: Settings) -> None:
    # Given a partition with small files and another process appending to it
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY, 6, rows=100)
    appended = pa.concat_tables([synthetic_batch(DAY, 50, seed=7, batch=i) for i in range(40)])
    ctx = multiprocessing.get_context("spawn")
    ready, done = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_append_forever, args=(settings, DAY.isoformat(), 40, ready, done))
    writer.start()
    ready.wait(60)

    # When compaction runs again and again while it appends
    rounds = 0
    while not done.is_set() or rounds < 3:
        compact_table(catalog.load_table("music.plays"), CompactionOptions(min_input_files=2))
        rounds += 1
    writer.join(120)

    # Then every appended row (and every original one) is in the table exactly once
    assert writer.exitcode == 0
    rows = catalog.load_table("music.plays").scan().to_arrow()
    ids = rows.column("play_id").to_pylist()
    assert len(ids) == len(set(ids)) == 600 + appended.num_rows
    assert set(appended.column("play_id").to_pylist()) <= set(ids)


def test_file_groups_pack_files_in_order_up_to_the_size_and_skip_lone_files() -> None:
    assert split_into_groups([10, 10, 10, 10, 10], max_group_bytes=25) == [[0, 1], [2, 3]]  # [4] alone: skipped
    assert split_into_groups([10, 50, 10, 10], max_group_bytes=25) == [[2, 3]]  # a file bigger than a group
    assert split_into_groups([5] * 4, max_group_bytes=100) == [[0, 1, 2, 3]]
    assert split_into_groups([], max_group_bytes=100) == []


def test_the_streaming_checksum_equals_the_whole_tables_whatever_the_batches() -> None:
    rows = synthetic_batch(DAY, 1_000)
    con = duckdb.connect()
    whole, pieces, shuffled = StreamingChecksum(con), StreamingChecksum(con), StreamingChecksum(con)
    whole.add(rows)
    for batch in rows.to_batches(max_chunksize=77):
        pieces.add(batch)
    shuffled.add(rows.take(list(reversed(range(rows.num_rows)))))
    assert whole.value == pieces.value == shuffled.value
    assert whole.rows == 1_000
    changed = StreamingChecksum(con)
    changed.add(rows.slice(1))
    assert changed.value != whole.value


def _group_size(table) -> int:
    """A group size that fits two of the micro-batch files below."""
    return 2 * max(f.file_size_in_bytes for f in _files(table)) + 1


def test_a_partition_is_rewritten_in_several_groups_keeping_every_row(catalog: Catalog) -> None:
    # Given a day of 8 micro-batches and groups of two files
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY, 8)
    before = _sorted_rows(table)

    report = compact_table(table, CompactionOptions(max_file_group_size_bytes=_group_size(table), sort_by=("artist",)))

    table = catalog.load_table("music.plays")
    assert (report.groups, report.groups_committed, len(report.snapshot_ids)) == (4, 4, 1)
    assert (report.files_before, report.files_after, len(_files(table))) == (8, 4, 4)
    assert report.rows_verified == len(before) == 1_600
    assert _sorted_rows(table) == before
    for data_file in _files(table):  # each group's file is sorted on its own
        artists = pq.read_table(data_file.file_path.removeprefix("file://"), columns=["artist"]).column(0).to_pylist()
        assert artists == sorted(artists)


def _fail_on_group(monkeypatch: pytest.MonkeyPatch, failing: int) -> None:
    real = compaction._rewrite_group
    calls = iter(range(1, 100))

    def rewrite(table, group, options, work_dir, name):
        if next(calls) == failing:
            raise OSError("disk full")  # a failure late in a big compaction
        return real(table, group, options, work_dir, name)

    monkeypatch.setattr(compaction, "_rewrite_group", rewrite)


def test_with_partial_progress_a_late_failure_keeps_the_groups_already_committed(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, sonik_home: Path
) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY, 8)
    before = _sorted_rows(table)
    options = CompactionOptions(max_file_group_size_bytes=_group_size(table), partial_progress=True,
                                partial_progress_max_commits=4)  # fmt: skip
    _fail_on_group(monkeypatch, failing=3)

    with pytest.raises(OSError, match="disk full"):
        compact_table(table, options)

    table = catalog.load_table("music.plays")
    compactions = [s for s in table.snapshots() if s.summary.get("sonik.operation") == "compaction"]
    assert len(compactions) == 2  # groups 1 and 2, one commit each
    assert len(_files(table)) == 2 + 4  # two rewritten groups, four files untouched
    assert _sorted_rows(table) == before
    live = {f.file_path.removeprefix("file://") for f in _files(table)}
    assert {str(p) for p in (sonik_home / "warehouse").rglob("*.parquet")} >= live
    assert len(list((sonik_home / "warehouse").rglob("*.parquet"))) == 8 + 2  # old files (for time travel) + new


def test_without_partial_progress_a_late_failure_commits_nothing(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, sonik_home: Path
) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    _micro_batches(table, DAY, 8)
    metadata = table.metadata_location
    files_on_disk = set((sonik_home / "warehouse").rglob("*.parquet"))
    _fail_on_group(monkeypatch, failing=3)

    with pytest.raises(OSError, match="disk full"):
        compact_table(table, CompactionOptions(max_file_group_size_bytes=_group_size(table)))

    assert catalog.load_table("music.plays").metadata_location == metadata
    assert set((sonik_home / "warehouse").rglob("*.parquet")) == files_on_disk  # groups 1-2's files removed
