"""user_track_interactions against the same figures computed by hand from music.plays (pandas)."""

import datetime as dt

import duckdb
import pandas as pd
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts.queries import INTERACTIONS_WINDOW_DAYS, USER_TRACK_INTERACTIONS
from sonik_pipeline.lakehouse.marts.run import run_marts
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import SKIP_UNDER_SECONDS

DAY = dt.date(2026, 4, 20)
WINDOW_START = DAY - dt.timedelta(days=INTERACTIONS_WINDOW_DAYS - 1)
# Two days just outside the window and two inside it, at both ends.
PLAY_DAYS = [WINDOW_START - dt.timedelta(days=1), WINDOW_START, DAY - dt.timedelta(days=1), DAY]
UNKNOWN_DURATIONS_USER, ITS_TRACK = 9_000_001, 7  # a user whose every play, of one track, has no duration


def _plays(day: dt.date, seed: int) -> pa.Table:
    rows = synthetic_batch(day, 1_500, seed=seed).to_pandas()
    rows["duration_seconds"] = rows["duration_seconds"].astype("Int32")
    odd = rows.index < 4  # four plays of one track by a user of their own, of unknown duration
    rows.loc[odd, "user_id"] = UNKNOWN_DURATIONS_USER
    rows.loc[odd, "duration_seconds"] = pd.NA
    rows.loc[odd, "track_id"] = ITS_TRACK
    return pa.Table.from_pandas(rows, preserve_index=False)


@pytest.fixture
def built(catalog: Catalog) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The mart's rows of DAY, and music.plays, after plays of PLAY_DAYS and one mart run."""
    for seed, day in enumerate(PLAY_DAYS):
        ingest_day(catalog, day, [ArrowRows(_plays(day, seed), "test")])
    with duckdb.connect() as con:
        [report] = run_marts(catalog, con, [USER_TRACK_INTERACTIONS], [DAY])
    mart = catalog.load_table(USER_TRACK_INTERACTIONS.table.identifier)
    plays = catalog.load_table("music.plays")
    assert mart.current_snapshot().summary["sonik.plays-snapshot-id"] == str(plays.current_snapshot().snapshot_id)
    assert report.plays.snapshot_id == plays.current_snapshot().snapshot_id
    assert report.days[0].days_with_plays == 3  # the day before the window is not in it
    return mart.scan().to_pandas(), plays.scan().to_pandas()


def _by_hand(plays: pd.DataFrame) -> pd.DataFrame:
    start = pd.Timestamp(WINDOW_START)
    window = plays[(plays.played_at >= start) & (plays.played_at < pd.Timestamp(DAY + dt.timedelta(days=1)))]
    window = window.assign(
        seconds=window.duration_seconds.fillna(0).astype("int64"),
        skip=(window.duration_seconds < SKIP_UNDER_SECONDS).fillna(False).astype("int64"),
    )
    return (
        window.groupby(["user_id", "track_id"])
        .agg(
            plays=("play_id", "count"),
            seconds_played=("seconds", "sum"),
            first_played_at=("played_at", "min"),
            last_played_at=("played_at", "max"),
            skips=("skip", "sum"),
        )
        .reset_index()
    )


def _records(frame: pd.DataFrame, users: list[int]) -> list[dict]:
    columns = ["user_id", "track_id", "plays", "seconds_played", "first_played_at", "last_played_at", "skips"]
    chosen = frame[frame.user_id.isin(users)].sort_values(["user_id", "track_id"])
    return [{k: (v.to_pydatetime() if isinstance(v, pd.Timestamp) else int(v)) for k, v in r.items()}
            for r in chosen[columns].to_dict("records")]  # fmt: skip


def test_interactions_equal_the_plays_of_the_window_grouped_by_hand(built) -> None:
    mart, plays = built
    expected = _by_hand(plays)

    # Every (user, track) pair of the window is a row of DAY, each play counted once
    assert set(mart.day) == {DAY}
    assert len(mart) == len(expected)
    assert mart.plays.sum() == expected.plays.sum() == 3 * 1_500

    # Field for field, for the busiest users, a user with repeated plays of a track, and the unknown durations
    busiest = plays.groupby("user_id").size().sort_values(ascending=False).index[:3].tolist()
    repeated = expected[expected.plays > 1].user_id.iloc[0]
    users = [*busiest, int(repeated), UNKNOWN_DURATIONS_USER]
    assert _records(mart, users) == _records(expected, users)
    [unknown] = _records(mart, [UNKNOWN_DURATIONS_USER])
    assert (unknown["track_id"], unknown["plays"], unknown["seconds_played"], unknown["skips"]) == (ITS_TRACK, 12, 0, 0)
    assert 0 < mart.skips.sum() < mart.plays.sum()


def test_plays_outside_the_window_count_nowhere(built) -> None:
    mart, plays = built
    before = plays[plays.played_at < pd.Timestamp(WINDOW_START)]
    assert len(before) == 1_500
    only_before = set(before.user_id) - set(plays[plays.played_at >= pd.Timestamp(WINDOW_START)].user_id)
    assert only_before and not set(mart.user_id) & only_before
