"""``run_marts`` without Dagster: what a run of marts writes, reports, replaces, and leaves behind when it fails."""

import datetime as dt
from pathlib import Path

import duckdb
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.days import date_filter
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts import run as run_module
from sonik_pipeline.lakehouse.marts.queries import (
    DAILY_COUNTRY_LISTENING,
    DAILY_DEVICE_MIX,
    DAILY_MARTS,
    DAILY_TOP_TRACKS,
    TOP_ARTISTS_7D,
)
from sonik_pipeline.lakehouse.marts.run import MartOptions, plays_snapshots_behind, run_marts
from sonik_pipeline.lakehouse.reads.plays_days import PlaysSnapshot
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch

DAYS = [dt.date(2026, 4, 18), dt.date(2026, 4, 19), dt.date(2026, 4, 20)]
EVENTS = 1_500


@pytest.fixture
def plays(catalog: Catalog) -> PlaysSnapshot:
    """Three days of plays, 1,500 a day; the snapshot a mart run reads."""
    for i, day in enumerate(DAYS):
        ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, EVENTS, seed=i), "test")])
    return PlaysSnapshot.current(catalog.load_table("music.plays"))


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = load_iceberg(duckdb.connect())
    con.execute("SET TimeZone = 'UTC'")
    return con


def _sorted(rows: list[tuple]) -> list[tuple]:
    return sorted(rows, key=repr)  # a null country or device sorts too


def _rows(catalog: Catalog, table: str) -> list[tuple]:
    return _sorted([tuple(r.values()) for r in catalog.load_table(table).scan().to_arrow().to_pylist()])


def _files_on_disk(catalog: Catalog, identifier: str) -> list[Path]:
    """Every Parquet file under a table's data folder, committed or not."""
    location = catalog.load_table(identifier).location().removeprefix("file://")
    return sorted((Path(location) / "data").rglob("*.parquet"))


def test_a_marts_rows_equal_a_plain_duckdb_aggregate_of_the_days_plays(catalog: Catalog, plays, con) -> None:
    # Given three days of plays

    # When the country mart is run over them
    [report] = run_marts(catalog, con, [DAILY_COUNTRY_LISTENING], DAYS)

    # Then its rows are the plays grouped by day and country, listening time included
    expected = con.execute(f"""
        SELECT CAST(played_at AS DATE), country, count(*), count(DISTINCT user_id),
               coalesce(sum(duration_seconds), 0), round(coalesce(sum(duration_seconds), 0) / 60.0, 2)
        FROM {plays.scan_sql()} GROUP BY ALL""").fetchall()
    assert _rows(catalog, DAILY_COUNTRY_LISTENING.table.identifier) == _sorted(expected)
    per_day = {day: sum(1 for row in expected if row[0] == day) for day in DAYS}
    assert [(d.day, d.rows) for d in report.days] == list(per_day.items())
    assert report.rows == len(expected)
    assert report.plays == plays
    committed = catalog.load_table(DAILY_COUNTRY_LISTENING.table.identifier).current_snapshot()
    assert report.commit.snapshot_id == committed.snapshot_id
    assert committed.summary["dagster.partition"] == "2026-04-18...2026-04-20"
    assert committed.summary["sonik.plays-snapshot-id"] == str(plays.snapshot_id)


def test_a_rerun_replaces_the_days_rather_than_doubling_them(catalog: Catalog, plays, con) -> None:
    # Given the daily marts of three days, run once
    first = {r.mart.name: r for r in run_marts(catalog, con, DAILY_MARTS, DAYS, MartOptions(run_id="one"))}
    before = {m.name: _rows(catalog, m.table.identifier) for m in DAILY_MARTS}

    # When the same days are run again
    second = {r.mart.name: r for r in run_marts(catalog, con, DAILY_MARTS, DAYS, MartOptions(run_id="two"))}

    # Then every mart holds the same rows, once, in one more snapshot that replaced the first run's
    for mart in DAILY_MARTS:
        table = catalog.load_table(mart.table.identifier)
        assert _rows(catalog, mart.table.identifier) == before[mart.name], mart.name
        assert len(table.snapshots()) == 2
        summary = table.current_snapshot().summary
        assert summary["deleted-records"] == summary["added-records"] == str(first[mart.name].rows)
        assert summary["dagster.run-id"] == "two"
        assert second[mart.name].rows == first[mart.name].rows


def test_a_failure_mid_run_discards_the_staged_files_and_commits_nothing(
    catalog: Catalog, plays, con, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a run that reads plays a day at a time, and a query that fails on the second day
    real_rows = run_module.mart_rows
    calls = []

    def failing_on_the_second_read(con, mart, first, last, top_n):
        calls.append((mart.name, first))
        if first == DAYS[1] and mart is DAILY_DEVICE_MIX:
            raise RuntimeError("the query died")
        return real_rows(con, mart, first, last, top_n)

    monkeypatch.setattr(run_module, "mart_rows", failing_on_the_second_read)
    marts = [DAILY_COUNTRY_LISTENING, DAILY_DEVICE_MIX]

    # When it runs
    with pytest.raises(RuntimeError, match="the query died"):
        list(run_marts(catalog, con, marts, DAYS, MartOptions(max_rows_per_read=EVENTS)))

    # Then the first day's staged files are gone, and neither mart has a commit
    assert (DAILY_COUNTRY_LISTENING.name, DAYS[0]) in calls  # files were staged before the failure
    for mart in marts:
        assert catalog.load_table(mart.table.identifier).current_snapshot() is None, mart.name
        assert _files_on_disk(catalog, mart.table.identifier) == [], mart.name


def test_a_failed_commit_keeps_the_marts_committed_before_it_and_discards_the_rest(
    catalog: Catalog, plays, con, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three marts, the second of which cannot commit
    real_replace = run_module.replace_mart_days

    def refusing(table: Table, *args, **kwargs):
        if table.name()[-1] == DAILY_DEVICE_MIX.name:
            raise RuntimeError("the catalog refused the commit")
        return real_replace(table, *args, **kwargs)

    monkeypatch.setattr(run_module, "replace_mart_days", refusing)
    marts = [DAILY_COUNTRY_LISTENING, DAILY_DEVICE_MIX, DAILY_TOP_TRACKS]
    reported = []

    # When the run is read to the end
    with pytest.raises(RuntimeError, match="refused the commit"):
        reported.extend(run_marts(catalog, con, marts, DAYS))

    # Then the first mart was committed and reported; the last one was neither, and left no file
    assert [r.mart.name for r in reported] == [DAILY_COUNTRY_LISTENING.name]
    assert catalog.load_table(DAILY_COUNTRY_LISTENING.table.identifier).current_snapshot() is not None
    assert catalog.load_table(DAILY_TOP_TRACKS.table.identifier).current_snapshot() is None
    assert _files_on_disk(catalog, DAILY_TOP_TRACKS.table.identifier) == []


def test_a_caller_that_stops_reading_leaves_no_staged_file(catalog: Catalog, plays, con) -> None:
    # Given a run of two marts
    run = run_marts(catalog, con, [DAILY_COUNTRY_LISTENING, DAILY_DEVICE_MIX], DAYS)

    # When its caller takes the first report and stops
    first = next(run)
    run.close()

    # Then the second mart is neither committed nor left with files
    assert first.mart is DAILY_COUNTRY_LISTENING
    assert catalog.load_table(DAILY_DEVICE_MIX.table.identifier).current_snapshot() is None
    assert _files_on_disk(catalog, DAILY_DEVICE_MIX.table.identifier) == []


def test_a_rolling_view_reports_its_windows_reads_and_a_preview_of_the_last_day(catalog: Catalog, plays, con) -> None:
    # Given three days of plays, and a fourth day with none
    days = [*DAYS, DAYS[-1] + dt.timedelta(days=1)]
    progress: list[str] = []

    # When the 7-day top artists are run a day of plays at a time
    options = MartOptions(top_n=5, max_rows_per_read=EVENTS)
    [report] = run_marts(catalog, con, [TOP_ARTISTS_7D], days, options, progress=progress.append)

    # Then each day says how many days of its window had plays, and only the last one carries a preview
    assert [(d.day, d.days_with_plays) for d in report.days] == list(zip(days, [1, 2, 3, 3], strict=True))
    assert [d.rows for d in report.days] == [5, 5, 5, 5]
    assert [d.preview is not None for d in report.days] == [False, False, False, True]
    preview = report.days[-1].preview.to_pylist()
    table = catalog.load_table(TOP_ARTISTS_7D.table.identifier)
    last_day = table.scan(row_filter=date_filter("day", days[-1])).to_arrow().sort_by("rank").to_pylist()
    assert preview == last_day
    assert report.plays_reads == len(days)  # each day's window is read with its chunk, one chunk a day
    assert sum("committed snapshot" in line for line in progress) == 1
    assert plays_snapshots_behind(table, days) == dict.fromkeys(days, plays)


def test_the_days_of_a_run_must_be_consecutive(catalog: Catalog, plays, con) -> None:
    with pytest.raises(ValueError, match="consecutive"):
        list(run_marts(catalog, con, [DAILY_COUNTRY_LISTENING], [DAYS[0], DAYS[2]]))

    assert not catalog.table_exists(DAILY_COUNTRY_LISTENING.table.identifier)
