import datetime as dt
import re

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.days import date_filter
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts.queries import (
    DAILY_COUNTRY_LISTENING,
    DAILY_DEVICE_MIX,
    DAILY_MARTS,
    DAILY_TOP_ARTISTS,
    DAILY_TOP_TRACKS,
    DAILY_USER_STATS,
    DEFAULT_TOP_N,
    MART_COLUMNS,
    ROLLING_MARTS,
    TOP_ARTISTS_7D,
    TRENDING_TRACKS,
    Mart,
    mart_rows,
)
from sonik_pipeline.lakehouse.marts.run import MartOptions, plays_snapshots_behind, run_marts
from sonik_pipeline.lakehouse.reads.plays_days import PLAYS_DAYS, PlaysSnapshot, load_plays_days
from sonik_pipeline.lakehouse.reads.quality import mart_totals_by_day, plays_totals_by_day
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch

DAYS = [dt.date(2026, 4, 18), dt.date(2026, 4, 19), dt.date(2026, 4, 20)]
DAY = DAYS[-1]


def _day_with_gaps(day: dt.date, n: int) -> pa.Table:
    """Synthetic plays with some unknown countries, devices and durations (nullable columns)."""
    rows = synthetic_batch(day, n).to_pandas()
    rows.loc[rows.index % 17 == 0, "country"] = None
    rows.loc[rows.index % 19 == 0, "device"] = None
    rows["duration_seconds"] = rows["duration_seconds"].astype("Int32")
    rows.loc[rows.index % 23 == 0, "duration_seconds"] = pd.NA
    return pa.Table.from_pandas(rows, preserve_index=False)


@pytest.fixture
def lakehouse(catalog: Catalog):
    for day in DAYS:
        ingest_day(catalog, day, [ArrowRows(_day_with_gaps(day, 1_500), "test")])
    plays = catalog.load_table("music.plays")
    con = load_iceberg(duckdb.connect())
    con.execute("SET TimeZone = 'UTC'")
    frame = plays.scan().to_pandas()
    return catalog, con, PlaysSnapshot.current(plays), frame


def _build(catalog: Catalog, con: duckdb.DuckDBPyConnection, mart: Mart, days: list[dt.date], top_n: int = 0):
    """Run ``mart`` over ``days`` as the mart assets do (one read of plays, one commit); its report."""
    [report] = run_marts(catalog, con, [mart], days, MartOptions(top_n=top_n))
    return report


def _computed(catalog: Catalog, con: duckdb.DuckDBPyConnection, mart: Mart, day: dt.date, top_n: int) -> pa.Table:
    """The mart's rows for ``day`` as ``run_marts`` commits them, read back in order (rank, else its key)."""
    _build(catalog, con, mart, [day], top_n)
    rows = catalog.load_table(mart.table.identifier).scan(row_filter=date_filter("day", day)).to_arrow()
    key = "rank" if "rank" in rows.column_names else rows.column_names[1]
    return rows.sort_by(key)


def _day(frame: pd.DataFrame, first: dt.date, last: dt.date | None = None) -> pd.DataFrame:
    days = frame["played_at"].dt.date
    return frame[(days >= first) & (days <= (last or first))]


def _totals(group: pd.core.groupby.DataFrameGroupBy) -> pd.DataFrame:
    return group.agg(
        plays=("play_id", "size"),
        unique_listeners=("user_id", "nunique"),
        seconds_played=("duration_seconds", lambda s: int(s.sum())),
    )


def _ranked(totals: pd.DataFrame, tiebreak: str, top_n: int) -> pd.DataFrame:
    ranked = totals.reset_index().sort_values(["plays", tiebreak], ascending=[False, True]).head(top_n)
    return ranked.assign(rank=np.arange(1, len(ranked) + 1), minutes_played=(ranked["seconds_played"] / 60).round(2))


def _compare(actual: pa.Table, expected: pd.DataFrame, columns: list[str]) -> None:
    got = actual.to_pandas()[columns].reset_index(drop=True)
    want = expected[columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False, check_exact=False, rtol=1e-9)


def test_daily_top_tracks_match_pandas(lakehouse) -> None:
    catalog, con, src, frame = lakehouse

    actual = _computed(catalog, con, DAILY_TOP_TRACKS, DAY, 50)

    expected = _ranked(_totals(_day(frame, DAY).groupby(["track_id", "artist", "title"])), "track_id", 50)
    assert actual.num_rows == 50
    assert set(actual.column("day").to_pylist()) == {DAY}
    _compare(
        actual,
        expected,
        ["rank", "track_id", "artist", "title", "plays", "unique_listeners", "seconds_played", "minutes_played"],
    )


def test_daily_top_artists_match_pandas(lakehouse) -> None:
    catalog, con, src, frame = lakehouse

    actual = _computed(catalog, con, DAILY_TOP_ARTISTS, DAY, 1_000)

    expected = _ranked(_totals(_day(frame, DAY).groupby("artist")), "artist", 1_000)
    _compare(actual, expected, ["rank", "artist", "plays", "unique_listeners", "seconds_played", "minutes_played"])


def test_country_and_device_marts_match_pandas_including_unknowns(lakehouse) -> None:
    catalog, con, src, frame = lakehouse
    day = _day(frame, DAY)

    country = _computed(catalog, con, DAILY_COUNTRY_LISTENING, DAY, 0)
    device = _computed(catalog, con, DAILY_DEVICE_MIX, DAY, 0)

    by_country = _totals(day.groupby("country", dropna=False)).reset_index()
    assert None in country.column("country").to_pylist()
    assert dict(zip(country.column("country").to_pylist(), country.column("plays").to_pylist(), strict=True)) == {
        (None if pd.isna(k) else k): v for k, v in zip(by_country["country"], by_country["plays"], strict=True)
    }
    shares = dict(zip(device.column("device").to_pylist(), device.column("share").to_pylist(), strict=True))
    assert shares[None] == pytest.approx(day["device"].isna().sum() / len(day))
    assert shares["mobile"] == pytest.approx((day["device"] == "mobile").sum() / len(day))
    assert sum(device.column("plays").to_pylist()) == len(day)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert sum(country.column("seconds_played").to_pylist()) == int(day["duration_seconds"].sum())


def test_daily_user_stats_match_pandas(lakehouse) -> None:
    catalog, con, src, frame = lakehouse
    day = _day(frame, DAY)

    actual = _computed(catalog, con, DAILY_USER_STATS, DAY, 0).to_pandas().set_index("user_id")

    per_artist = day.groupby(["user_id", "artist"]).size().reset_index(name="n")
    favourite = (
        per_artist.sort_values(["user_id", "n", "artist"], ascending=[True, False, True]).groupby("user_id").first()
    )
    expected = day.groupby("user_id").agg(
        plays=("play_id", "size"),
        seconds_played=("duration_seconds", lambda s: int(s.sum())),
        distinct_tracks=("track_id", "nunique"),
        distinct_artists=("artist", "nunique"),
        first_play_at=("played_at", "min"),
        last_play_at=("played_at", "max"),
    )
    expected["favourite_artist"] = favourite["artist"]
    assert len(actual) == len(expected)
    for column in expected.columns:
        assert actual[column].tolist() == expected[column].tolist(), column
    assert actual["minutes_played"].tolist() == (expected["seconds_played"] / 60).round(2).tolist()


def test_rolling_views_match_pandas(lakehouse) -> None:
    catalog, con, src, frame = lakehouse

    top7 = _computed(catalog, con, TOP_ARTISTS_7D, DAY, 1_000)
    trending = _computed(catalog, con, TRENDING_TRACKS, DAY, 10_000).to_pandas().set_index("track_id")

    expected7 = _ranked(_totals(_day(frame, DAY - dt.timedelta(days=6), DAY).groupby("artist")), "artist", 1_000)
    _compare(top7, expected7, ["rank", "artist", "plays", "unique_listeners", "seconds_played"])
    this_week = _day(frame, DAY - dt.timedelta(days=6), DAY).groupby("track_id").size()
    assert trending["plays_7d"].to_dict() == this_week.to_dict()  # no plays before the 18th: prev week is empty
    assert (trending["plays_prev_7d"] == 0).all()
    assert trending["change_ratio"].isna().all()


def test_trending_compares_this_week_with_last(catalog: Catalog) -> None:
    old, new = dt.date(2026, 4, 10), dt.date(2026, 4, 20)
    ingest_day(catalog, old, [ArrowRows(synthetic_batch(old, 400), "t")])
    ingest_day(catalog, new, [ArrowRows(synthetic_batch(new, 600), "t")])
    con = load_iceberg(duckdb.connect())
    frame = catalog.load_table("music.plays").scan().to_pandas()

    trending = _computed(catalog, con, TRENDING_TRACKS, new, 10_000)

    rows = trending.to_pandas().set_index("track_id")
    prev = frame[frame["played_at"].dt.date == old].groupby("track_id").size()
    now = frame[frame["played_at"].dt.date == new].groupby("track_id").size()
    change = now.sub(prev, fill_value=0).astype(int)
    assert rows["change"].to_dict() == change.to_dict()
    assert rows["rank"].tolist() == list(range(1, len(rows) + 1))
    assert rows["change"].is_monotonic_decreasing


def test_reading_one_day_opens_only_that_days_files(lakehouse) -> None:
    catalog, con, src, frame = lakehouse

    load_plays_days(con, src, DAY, DAY, MART_COLUMNS)  # a view over the day's planned files

    plan = con.execute(f"EXPLAIN ANALYZE SELECT * FROM {PLAYS_DAYS}").fetchall()[0][1]

    assert re.search(r"Total Files Read: 1\b", plan), plan
    paths = re.sub(r"[│\s]", "", plan)  # the plan's box wraps a long path at any character
    assert "played_day=2026-04-20" in paths, plan
    assert "played_day=2026-04-19" not in paths
    full = con.execute(f"EXPLAIN ANALYZE SELECT count(DISTINCT country) FROM {src.scan_sql()}").fetchall()[0][1]
    assert re.search(r"Total Files Read: 3\b", full)


def test_a_mart_pins_the_plays_snapshot_it_read(lakehouse) -> None:
    catalog, con, src, frame = lakehouse

    report = _build(catalog, con, DAILY_COUNTRY_LISTENING, [DAY])
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 10), "newer")], max_shrink_share=1.0)  # plays moves on

    table = catalog.load_table("music_marts.daily_country_listening")
    assert report.plays == src
    assert plays_snapshots_behind(table, [DAY]) == {DAY: src}
    assert table.snapshot_by_id(report.commit.snapshot_id).summary["sonik.plays-snapshot-id"] == str(src.snapshot_id)
    assert mart_totals_by_day(con, table, DAY, DAY) == plays_totals_by_day(con, src, DAY, DAY)  # at the pinned snapshot
    assert plays_totals_by_day(con, PlaysSnapshot.current(catalog.load_table("music.plays")), DAY, DAY)[DAY].plays == 10


def test_a_marts_totals_read_only_the_planned_days_files_not_iceberg_scan(lakehouse) -> None:
    catalog, con, src, frame = lakehouse
    _build(catalog, con, DAILY_COUNTRY_LISTENING, DAYS)
    table = catalog.load_table("music_marts.daily_country_listening")
    # no iceberg extension, nor its autoloading: an iceberg_scan would fail to bind
    plain = duckdb.connect(config={"autoload_known_extensions": False, "autoinstall_known_extensions": False})

    totals = mart_totals_by_day(plain, table, DAYS[1], DAY)

    assert sorted(totals) == DAYS[1:]
    for day in DAYS[1:]:
        expected = _day(frame, day)
        assert totals[day].plays == len(expected)
        assert totals[day].seconds_played == int(expected["duration_seconds"].fillna(0).sum())


def test_the_tutorial_top_artists_query_agrees_with_daily_top_artists(lakehouse) -> None:
    # The tutorial's query, with its clock fixed at the end of the 20th: "the last 3 days" are the 18th-20th.
    catalog, con, src, frame = lakehouse
    _build(catalog, con, DAILY_TOP_ARTISTS, DAYS, 1_000)
    now = "TIMESTAMP '2026-04-21 00:00:00'"

    direct = con.execute(f"""
        SELECT artist, COUNT(*) AS plays FROM iceberg_scan('{src.metadata_location}')
        WHERE played_at > {now} - INTERVAL 3 DAY GROUP BY artist ORDER BY plays DESC, artist LIMIT 10
    """).fetchall()
    marts = catalog.load_table("music_marts.daily_top_artists")
    from_mart = con.execute(f"""
        SELECT artist, sum(plays)::BIGINT AS plays FROM iceberg_scan('{marts.metadata_location}')
        WHERE day > CAST({now} - INTERVAL 3 DAY AS DATE) - 1 GROUP BY artist ORDER BY plays DESC, artist LIMIT 10
    """).fetchall()

    assert direct == from_mart
    assert direct[0][0] == "The Weeknd"


@pytest.mark.parametrize("mart", [*DAILY_MARTS, TOP_ARTISTS_7D], ids=lambda mart: mart.name)
def test_minutes_played_is_zero_not_null_when_no_duration_is_known(catalog: Catalog, mart) -> None:
    # Given a day on which no play has a known duration
    rows = synthetic_batch(DAY, 200).to_pandas()
    rows["duration_seconds"] = pd.array([pd.NA] * len(rows), dtype="Int32")
    ingest_day(catalog, DAY, [ArrowRows(pa.Table.from_pandas(rows, preserve_index=False), "test")])
    con = load_iceberg(duckdb.connect())

    # When the mart is computed, then every group listened 0 seconds and 0.0 minutes (minutes_played is required)
    result = _computed(catalog, con, mart, DAY, 100)
    assert result.num_rows > 0
    assert set(result.column("seconds_played").to_pylist()) == {0}
    if "minutes_played" in result.column_names:  # user_track_days keeps seconds only: its readers derive minutes
        assert set(result.column("minutes_played").to_pylist()) == {0.0}


def test_user_stats_count_track_ids_and_break_ties_alphabetically() -> None:
    # A track id seen under two artists (bad source data) is one track and two artists; a tie in plays
    # makes the alphabetically first artist the favourite; unknown durations count as nothing.
    at = dt.datetime(2026, 4, 20, 12)
    rows = pa.table(
        {
            "day": [DAY] * 5,
            "user_id": [1, 1, 1, 2, 2],
            "track_id": [7, 7, 8, 9, 10],
            "artist": ["A", "B", "B", "Zed", "Abba"],
            "duration_seconds": pa.array([60, None, 30, None, None], pa.int32()),
            "played_at": [at + dt.timedelta(minutes=i) for i in range(5)],
        }
    )
    con = duckdb.connect()
    con.register("plays_days", rows)

    got = con.execute(DAILY_USER_STATS.sql("plays_days", DAY, DAY, 0)).to_arrow_table().to_pylist()

    assert [(r["user_id"], r["plays"], r["distinct_tracks"], r["distinct_artists"], r["favourite_artist"],
             r["seconds_played"], r["minutes_played"]) for r in got] == [
        (1, 3, 2, 2, "B", 90, 1.5),
        (2, 2, 2, 2, "Abba", 0, 0.0),
    ]  # fmt: skip
    assert got[0]["first_play_at"] == at and got[0]["last_play_at"] == at + dt.timedelta(minutes=2)


def _kind(con: duckdb.DuckDBPyConnection, name: str) -> str:
    views = con.execute("SELECT count(*) FROM duckdb_views() WHERE temporary AND view_name = ?", [name]).fetchone()
    return "view" if views[0] else "table"


def test_the_marts_from_a_view_over_the_files_equal_the_marts_from_a_copy(lakehouse) -> None:
    catalog, con, src, frame = lakehouse
    first, last = DAYS[0], DAYS[-1]

    read_as_view = load_plays_days(con, src, first, last, MART_COLUMNS)
    assert _kind(con, PLAYS_DAYS) == "view"
    from_view = {m.name: mart_rows(con, m, first, last, DEFAULT_TOP_N) for m in (*DAILY_MARTS, *ROLLING_MARTS)}
    read_as_copy = load_plays_days(con, src, first, last, MART_COLUMNS, materialize=True)  # replaces the view
    assert _kind(con, PLAYS_DAYS) == "table"
    from_copy = {m.name: mart_rows(con, m, first, last, DEFAULT_TOP_N) for m in (*DAILY_MARTS, *ROLLING_MARTS)}

    assert read_as_view == read_as_copy == len(frame)
    for name, rows in from_view.items():
        assert rows.num_rows > 0, name
        assert rows.sort_by([(c, "ascending") for c in rows.column_names]).equals(
            from_copy[name].sort_by([(c, "ascending") for c in rows.column_names])
        ), name
    load_plays_days(con, src, DAY, DAY, MART_COLUMNS)  # and back to a view, of one day now
    assert _kind(con, PLAYS_DAYS) == "view"
    assert con.execute(f"SELECT count(*), min(day), max(day) FROM {PLAYS_DAYS}").fetchone() == (
        len(_day(frame, DAY)),
        DAY,
        DAY,
    )


def test_a_read_the_files_cannot_serve_as_they_are_is_copied(lakehouse) -> None:
    catalog, con, src, frame = lakehouse
    unplanned = PlaysSnapshot(src.metadata_location, src.snapshot_id)  # no table to plan with: iceberg_scan

    rows = load_plays_days(con, unplanned, DAY, DAY, MART_COLUMNS)

    assert _kind(con, PLAYS_DAYS) == "table"
    assert rows == len(_day(frame, DAY))
