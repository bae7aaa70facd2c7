import datetime as dt
import threading
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException

from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.writes import FileStager, replace_partition, stage_files

DAY = dt.date(2026, 4, 20)
NEXT_DAY = DAY + dt.timedelta(days=1)


def _replace(table, day: dt.date, rows: int, **props: str):
    files = stage_files(table, [synthetic_batch(day, rows)])
    return replace_partition(table, played_at_filter(day), files, {"dagster.partition": str(day), **props})


def _rows_per_day(catalog: Catalog) -> dict[dt.date, int]:
    table = catalog.load_table("music.plays")
    days = table.scan(selected_fields=("played_at",)).to_arrow().column("played_at").to_pylist()
    out: dict[dt.date, int] = {}
    for ts in days:
        out[ts.date()] = out.get(ts.date(), 0) + 1
    return out


def test_first_write_appends_and_a_rewrite_replaces_the_day_in_one_snapshot(catalog: Catalog) -> None:
    table, _ = ensure_table(catalog, PLAYS)

    first = _replace(table, DAY, 1_000)
    second = _replace(table, DAY, 800)

    table.refresh()
    assert (first.operation, first.rows_added, first.table_rows) == ("append", 1_000, 1_000)
    assert (second.operation, second.rows_added, second.rows_removed, second.table_rows) == (
        "overwrite",
        800,
        1_000,
        800,
    )
    assert [s.snapshot_id for s in table.snapshots()] == [first.snapshot_id, second.snapshot_id]
    assert table.scan().count() == 800
    assert table.snapshot_by_id(second.snapshot_id).summary["dagster.partition"] == "2026-04-20"


def test_replacing_one_day_leaves_the_other_days_alone(catalog: Catalog) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    _replace(table, DAY, 500)
    _replace(table, NEXT_DAY, 300)

    _replace(table, DAY, 200)

    assert _rows_per_day(catalog) == {DAY: 200, NEXT_DAY: 300}


def test_a_stale_writer_of_another_day_is_retried_by_pyiceberg_and_both_land(catalog: Catalog) -> None:
    # Given two handles on the table, one of which will be stale when it commits
    writer_a, _ = ensure_table(catalog, PLAYS)
    writer_b = catalog.load_table("music.plays")
    files_b = stage_files(writer_b, [synthetic_batch(NEXT_DAY, 300)])
    first = _replace(writer_a, DAY, 500).snapshot_id

    # When the stale handle commits (replace_partition plans on a refreshed table; force staleness below it)
    with writer_b.transaction() as txn, txn.update_snapshot().fast_append() as append:
        for data_file in files_b:
            append.append_data_file(data_file)

    # Then PyIceberg's commit retry rebased it onto the fresh table: nothing was lost
    assert _rows_per_day(catalog) == {DAY: 500, NEXT_DAY: 300}
    table = catalog.load_table("music.plays")
    assert table.current_snapshot().parent_snapshot_id == first  # built on the other writer's commit


def test_without_commit_retries_the_same_race_fails(catalog: Catalog) -> None:
    writer_a, _ = ensure_table(catalog, PLAYS)
    with writer_a.transaction() as txn:
        txn.set_properties({"commit.retry.num-retries": "0"})
    writer_b = catalog.load_table("music.plays")
    files_b = stage_files(writer_b, [synthetic_batch(NEXT_DAY, 300)])
    _replace(writer_a, DAY, 500)

    with pytest.raises(CommitFailedException):
        with writer_b.transaction() as txn, txn.update_snapshot().fast_append() as append:
            for data_file in files_b:
                append.append_data_file(data_file)


def test_concurrent_writers_of_different_days_all_land(catalog: Catalog) -> None:
    ensure_table(catalog, PLAYS)
    days = [DAY + dt.timedelta(days=i) for i in range(4)]

    errors = _race(catalog, [(d, 400) for d in days])

    assert errors == []
    assert _rows_per_day(catalog) == dict.fromkeys(days, 400)


def _race(catalog: Catalog, jobs: list[tuple[dt.date, int]]) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(len(jobs))

    def write(day: dt.date, rows: int, batch: int) -> None:
        try:
            table = catalog.load_table("music.plays")
            files = stage_files(table, [synthetic_batch(day, rows, batch=batch)])
            start.wait()
            replace_partition(table, played_at_filter(day), files, {})
        except BaseException as exc:  # reported to the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(d, n, i)) for i, (d, n) in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_concurrent_rewrites_of_the_same_day_leave_exactly_one_copy(catalog: Catalog) -> None:
    ensure_table(catalog, PLAYS)
    sizes = [300, 400, 500, 600]

    errors = _race(catalog, [(DAY, n) for n in sizes])

    assert errors == []
    assert _rows_per_day(catalog)[DAY] in sizes


def test_two_writers_of_the_same_day_end_with_exactly_one_copy(catalog: Catalog) -> None:
    table_a, _ = ensure_table(catalog, PLAYS)
    _replace(table_a, DAY, 100)
    table_b = catalog.load_table("music.plays")
    files_a = stage_files(table_a, [synthetic_batch(DAY, 700)])
    files_b = stage_files(table_b, [synthetic_batch(DAY, 600)])

    replace_partition(table_a, played_at_filter(DAY), files_a, {})
    report_b = replace_partition(table_b, played_at_filter(DAY), files_b, {})

    assert _rows_per_day(catalog) == {DAY: 600}
    assert report_b.rows_removed == 700


def test_stager_rolls_files_at_the_target_size_on_storage_and_discard_deletes_them(catalog: Catalog) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    with table.transaction() as txn:
        txn.set_properties({"write.target-file-size-bytes": str(150_000)})
    table.refresh()
    stager = FileStager(table)
    for i in range(8):
        stager.add(synthetic_batch(DAY, 2_000, batch=i))  # each batch is about 60 KB of Parquet

    files = stager.finish()

    sizes = [f.file_size_in_bytes for f in files]
    assert 2 <= len(files) < 8
    assert all(size >= 150_000 for size in sizes[:-1])  # a file is closed once its bytes reach the target
    assert all(size < 150_000 + max(sizes) / 2 for size in sizes)  # ...by the batch that crossed it
    assert sum(f.record_count for f in files) == stager.rows == 16_000
    paths = [f.file_path for f in files]
    stager.discard()
    assert not any(table.io.new_input(p).exists() for p in paths)


def test_discard_also_deletes_a_file_still_being_written(catalog: Catalog) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    stager = FileStager(table)
    stager.add(synthetic_batch(DAY, 500))
    data_dir = Path(table.location().removeprefix("file://")) / "data"
    assert len(list(data_dir.rglob("*.parquet"))) == 1  # open, not finished

    stager.discard()

    assert list(data_dir.rglob("*.parquet")) == []
