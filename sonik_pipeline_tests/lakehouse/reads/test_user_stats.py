"""Personal stats from user_track_days: the same figures as music.plays, read from a few row groups."""

from __future__ import annotations

import dataclasses
import datetime as dt

import duckdb
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema

from sonik_pipeline.lakehouse.days import ONE_DAY, days_between
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest import run as ingest_module
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts.queries import USER_TRACK_DAYS
from sonik_pipeline.lakehouse.marts.run import run_marts
from sonik_pipeline.lakehouse.reads.plays_days import PlaysSnapshot
from sonik_pipeline.lakehouse.reads.user_stats import FooterCache, UserStats, user_stats
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_events
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, USER_TRACK_DAYS_TABLE, TableDef, ensure_table
from sonik_pipeline.maintenance.compaction import CompactionOptions, compact_table, sort_columns

# Six days across a new year; the first three written by the code as it was
# before subscription_tier (the tutorial's nine columns), the last three after the column arrived.
DAYS = days_between(dt.date(2026, 12, 29), dt.date(2027, 1, 3))
EVENTS = 1_500
TUTORIAL_PLAYS = TableDef(PLAYS.namespace, PLAYS.name, Schema(*PLAYS.schema.fields[:9]), PLAYS.spec)
NOBODY = 10**12  # a user id with no plays
TABLE = USER_TRACK_DAYS.table.identifier


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    con = load_iceberg(duckdb.connect())
    con.execute("SET TimeZone = 'UTC'")
    return con


@pytest.fixture
def lakehouse(catalog: Catalog, con, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    """Plays of six days spanning a schema change, and user_track_days built from them by the daily runs."""
    with monkeypatch.context() as before:
        before.setattr(ingest_module, "PLAYS", TUTORIAL_PLAYS)
        for day in DAYS[:3]:
            ingest_day(catalog, day, synthetic_events(day, EVENTS))
    for day in DAYS[3:]:
        ingest_day(catalog, day, synthetic_events(day, EVENTS))
    for day in DAYS:  # one run a day, as the schedule does
        list(run_marts(catalog, con, [USER_TRACK_DAYS], [day]))
    return catalog


def _plays_sql(catalog: Catalog) -> str:
    return PlaysSnapshot.current(catalog.load_table("music.plays")).scan_sql()


def _expected(con, catalog: Catalog, user_id: int, first: dt.date, last: dt.date, top_n: int) -> dict:
    """The same figures computed from music.plays directly, with DuckDB."""
    plays = f"""(SELECT *, CAST(played_at AS DATE) AS day, coalesce(duration_seconds, 0) AS seconds
                 FROM {_plays_sql(catalog)} WHERE user_id = {user_id}
                 AND played_at >= TIMESTAMP '{first}' AND played_at < TIMESTAMP '{last + ONE_DAY}')"""
    totals = con.execute(f"SELECT count(*), coalesce(sum(seconds), 0), count(DISTINCT day) FROM {plays}").fetchone()
    artists = con.execute(f"""SELECT artist, count(*) AS n, sum(seconds) FROM {plays}
                              GROUP BY artist ORDER BY n DESC, artist LIMIT {top_n}""").fetchall()
    tracks = con.execute(f"""SELECT track_id, artist, title, count(*) AS n, sum(seconds) FROM {plays}
                             GROUP BY ALL ORDER BY n DESC, track_id, artist, title LIMIT {top_n}""").fetchall()
    months = con.execute(f"""SELECT CAST(date_trunc('month', day) AS DATE) AS m, count(*), sum(seconds),
                                    count(DISTINCT day) FROM {plays} GROUP BY m ORDER BY m""").fetchall()
    busiest = con.execute(f"""SELECT day, count(*) AS n, sum(seconds) AS s FROM {plays}
                              GROUP BY day ORDER BY s DESC, n DESC, day LIMIT 1""").fetchall()
    return {
        "totals": tuple(int(v) for v in totals),
        "artists": [(a, n, int(s)) for a, n, s in artists],
        "tracks": [(t, a, title, n, int(s)) for t, a, title, n, s in tracks],
        "months": [(m, n, int(s), d) for m, n, s, d in months],
        "busiest_day": [(d, n, int(s)) for d, n, s in busiest],
    }


def _figures(stats: UserStats) -> dict:
    review = stats.review
    day = review.most_active_day
    return {
        "totals": (stats.plays, stats.seconds_played, stats.active_days),
        "artists": [(a.artist, a.plays, a.seconds_played) for a in stats.top_artists],
        "tracks": [(t.track_id, t.artist, t.title, t.plays, t.seconds_played) for t in stats.top_tracks],
        "months": [(m.start, m.plays, m.seconds_played, m.active_days) for m in review.months],
        "busiest_day": [(day.start, day.plays, day.seconds_played)] if day else [],
    }


def _users(con, catalog: Catalog) -> list[int]:
    """The heaviest listener, one who played both before and after the schema change, one other, and nobody."""
    by_user = con.execute(f"""
        SELECT user_id, count(*) AS n, count(*) FILTER (WHERE subscription_tier IS NULL) AS before_change
        FROM {_plays_sql(catalog)} GROUP BY user_id ORDER BY n DESC, user_id""").fetchall()
    heaviest = by_user[0][0]
    spanning = next(u for u, n, before in by_user if 0 < before < n and u != heaviest)
    other = by_user[len(by_user) // 2][0]
    return [heaviest, spanning, other, NOBODY]


def test_user_stats_equal_the_same_figures_from_plays(lakehouse: Catalog, con) -> None:
    # Given six days of plays across a schema change and a new year, and the daily runs' user_track_days
    users = _users(con, lakehouse)

    # When each user's stats are asked for over every day, and over a range inside it
    for user_id in users:
        for first, last in ((DAYS[0], DAYS[-1]), (DAYS[2], DAYS[3])):
            stats = user_stats(lakehouse, user_id, first, last, top_n=50)

            # Then they are the figures music.plays gives for the same user and days
            assert _figures(stats) == _expected(con, lakehouse, user_id, first, last, 50), (user_id, first, last)
    nobody = user_stats(lakehouse, NOBODY, DAYS[0], DAYS[-1])
    assert (nobody.plays, nobody.seconds_played, nobody.active_days, nobody.top_artists) == (0, 0, 0, ())
    assert nobody.review.most_active_day is None and nobody.review.months == ()
    # Open ends read every day there is
    assert _figures(user_stats(lakehouse, users[1], top_n=50)) == _expected(con, lakehouse, users[1], *DAYS[::5], 50)


def test_a_missing_table_or_a_bad_range_is_said_plainly(catalog: Catalog) -> None:
    empty = user_stats(catalog, 1, DAYS[0], DAYS[-1])
    assert (empty.plays, empty.reads.files_planned, empty.reads.snapshot_id) == (0, 0, None)
    with pytest.raises(ValueError, match="after the last day"):
        user_stats(catalog, 1, DAYS[-1], DAYS[0])


def _user_ids_sorted(catalog: Catalog) -> list[bool]:
    table = catalog.load_table(TABLE)
    result = []
    for task in table.scan().plan_files():
        ids = pq.read_table(task.file.file_path.removeprefix("file://"), columns=["user_id"]).column(0).to_pylist()
        result.append(ids == sorted(ids))
    return result


def test_it_reads_one_file_of_the_users_bucket_and_only_the_users_row_groups(lakehouse: Catalog, con) -> None:
    # Given the daily files compacted with small row groups: compaction is asked to sort by artist, as the
    # nightly job does, but the table's own sort order (user_id, day, track_id) wins
    table = lakehouse.load_table(TABLE)
    assert [lakehouse.load_table(TABLE).schema().find_column_name(f.source_id) for f in table.sort_order().fields] == [
        "user_id",
        "day",
        "track_id",
    ]
    with table.transaction() as txn:
        txn.set_properties({"write.parquet.row-group-limit": "100"})
    report = compact_table(table, CompactionOptions(min_input_files=2, sort_by=("artist", "track_id")))
    assert (report.files_before, report.files_after) == (24, 4)  # a file a day and bucket -> a file a bucket
    assert _user_ids_sorted(lakehouse) == [True] * 4
    heaviest, spanning, *_ = _users(con, lakehouse)

    # When a user's stats over every day are read, cold and then warm
    cold = user_stats(lakehouse, spanning, DAYS[0], DAYS[-1], cache=(cache := FooterCache()))
    warm = user_stats(lakehouse, spanning, DAYS[0], DAYS[-1], cache=cache)

    # Then PyIceberg planned one file of four, the user's bucket, and of its many row groups only those
    # holding the user were read; warm, no footer is read again; the figures are unchanged
    for stats in (cold, warm):
        assert (stats.reads.files_planned, stats.reads.files_read) == (1, 1)
        assert stats.reads.row_groups > 10
        assert 1 <= stats.reads.row_groups_read <= 2
    assert cold.reads.footers_read == 1 and warm.reads.footers_read == 0
    assert 0 < warm.reads.bytes_read < cold.reads.bytes_read
    assert _figures(warm) == _expected(con, lakehouse, spanning, DAYS[0], DAYS[-1], 10)
    # Some days only, of another user: one file again, the days filtered in the row groups read
    some_days = user_stats(lakehouse, heaviest, DAYS[3], DAYS[-1], cache=cache)
    assert (some_days.reads.files_planned, some_days.reads.row_groups_read) in {(1, 1), (1, 2)}
    assert _figures(some_days) == _expected(con, lakehouse, heaviest, DAYS[3], DAYS[-1], 10)


def test_rerunning_a_day_replaces_its_contribution_even_inside_compacted_files(lakehouse: Catalog, con) -> None:
    # Given the table compacted (a file a bucket, every day in each) and each user's figures
    compact_table(lakehouse.load_table(TABLE), CompactionOptions(min_input_files=2))
    users = _users(con, lakehouse)
    rows = lakehouse.load_table(TABLE).current_snapshot().summary["total-records"]
    before = {u: _figures(user_stats(lakehouse, u, DAYS[0], DAYS[-1], top_n=50)) for u in users}

    # When a day inside the compacted files is run again, unchanged
    [report] = run_marts(lakehouse, con, [USER_TRACK_DAYS], [DAYS[1]])

    # Then nothing doubled: the same rows and figures, the day's rows replaced in one overwrite
    table = lakehouse.load_table(TABLE)
    assert table.current_snapshot().summary["total-records"] == rows
    assert report.commit.operation == "overwrite" and report.commit.rows_removed >= report.rows
    assert {u: _figures(user_stats(lakehouse, u, DAYS[0], DAYS[-1], top_n=50)) for u in users} == before
    assert _user_ids_sorted(lakehouse) == [True] * len(_user_ids_sorted(lakehouse))

    # When the day's plays change (ingested again with other events) and the day is run again
    ingest_day(lakehouse, DAYS[4], synthetic_events(DAYS[4], EVENTS, seed=7))
    list(run_marts(lakehouse, con, [USER_TRACK_DAYS], [DAYS[4]]))

    # Then every user's figures follow plays again
    for user_id in _users(con, lakehouse):
        stats = user_stats(lakehouse, user_id, DAYS[0], DAYS[-1], top_n=50)
        assert _figures(stats) == _expected(con, lakehouse, user_id, DAYS[0], DAYS[-1], 50), user_id


def test_compaction_sorts_by_a_tables_own_sort_order_before_its_sort_by(lakehouse: Catalog) -> None:
    nightly = CompactionOptions(sort_by=("artist", "track_id"))  # compaction_job's default

    assert sort_columns(lakehouse.load_table(TABLE), nightly) == ("user_id", "day", "track_id")
    assert sort_columns(lakehouse.load_table("music.plays"), nightly) == ("artist", "track_id")  # no sort order


def test_a_table_made_before_its_sort_order_gets_it_once(catalog: Catalog) -> None:
    # Given the table as an older code made it, unsorted
    unsorted = dataclasses.replace(USER_TRACK_DAYS_TABLE, sort_order=PLAYS.sort_order)
    assert ensure_table(catalog, unsorted)[0].sort_order().is_unsorted

    # When the code with the sort order ensures it, twice
    table = ensure_table(catalog, USER_TRACK_DAYS_TABLE)[0]
    location = table.metadata_location
    again = ensure_table(catalog, USER_TRACK_DAYS_TABLE)[0]

    # Then it has the sort order, set once; plays keeps none
    assert [str(f) for f in again.sort_order().fields] == ["2 ASC NULLS LAST", "1 ASC NULLS LAST", "3 ASC NULLS LAST"]
    assert again.metadata_location == location
    assert ensure_table(catalog, PLAYS)[0].sort_order().is_unsorted
