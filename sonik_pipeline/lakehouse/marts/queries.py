"""The marts: SQL over a pinned snapshot of music.plays, stored back as Iceberg tables in music_marts.

Each mart is a table (``tables/definitions.py``) plus one SQL query over a range of days. The queries
read days of plays planned once for the whole run (``plays_days.load_plays_days``: those days' data
files at an explicit snapshot), so every figure can be reproduced by time travel; ``run.py`` runs them
on DuckDB. Each query is written once for DuckDB and Spark SQL (the Spark engine runs the same ones):
what the two spell differently comes from a ``Dialect`` (``dialects.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from sonik_pipeline.lakehouse.days import date_sql
from sonik_pipeline.lakehouse.marts.dialects import DUCKDB, Dialect
from sonik_pipeline.lakehouse.reads.plays_days import PLAYS_DAYS
from sonik_pipeline.lakehouse.tables.definitions import (
    DAILY_COUNTRY_LISTENING_TABLE,
    DAILY_DEVICE_MIX_TABLE,
    DAILY_TIER_LISTENING_TABLE,
    DAILY_TOP_ARTISTS_TABLE,
    DAILY_TOP_TRACKS_TABLE,
    DAILY_USER_STATS_TABLE,
    SKIP_UNDER_SECONDS,
    TOP_ARTISTS_7D_TABLE,
    TRENDING_TRACKS_TABLE,
    USER_TRACK_DAYS_TABLE,
    USER_TRACK_INTERACTIONS_TABLE,
    TableDef,
)

DEFAULT_TOP_N = 100
WEEK = 7  # days: top_artists_7d's window, and each of the two weeks trending_tracks compares
# days: user_track_interactions' window, four weeks of listening as a recommender trains on. Its rows per day
# are the distinct (user, track) pairs of the window, so close to 28 days of plays.
INTERACTIONS_WINDOW_DAYS = 28

# Listening time: a play of unknown duration counts 0 seconds, so a group always has a number (both
# columns are required). Minutes are derived from the exact seconds, in the same SELECT or an outer one.
_SECONDS = "CAST(coalesce(sum(duration_seconds), 0) AS BIGINT) AS seconds_played"
_MINUTES = "round(seconds_played / 60.0, 2) AS minutes_played"
_TOTALS = f"count(*) AS plays, count(DISTINCT user_id) AS unique_listeners, {_SECONDS}"


# A query reads ``source``: a relation of plays with a ``day`` column (see ``load_plays_days``) holding at
# least the target days first..last. It returns the rows of every target day at once, grouped and ranked
# by day. A rolling view's query reads its windows instead (``_windows``): each play once per target day
# whose window holds it, that day in a ``target`` column. The SQL is DuckDB's and Spark's common subset, the
# rest from the ``Dialect``; the last argument.
MartQuery = Callable[[str, dt.date, dt.date, int, Dialect], str]


@dataclass(frozen=True)
class Mart:
    """A mart table and the query that fills a range of its days."""

    table: TableDef
    query: MartQuery
    description: str  # what a row holds; the asset's description in the UI
    window_days: int = 1  # how many days of plays up to and including the day it reads

    @property
    def name(self) -> str:
        return self.table.name

    def sql(self, source: str, first: dt.date, last: dt.date, top_n: int, dialect: Dialect = DUCKDB) -> str:
        """The SELECT of the mart's rows for days first..last from ``source`` (plays with a ``day`` column)."""
        if self.window_days > 1:
            source = _windows(source, first, last, self.window_days, dialect)
        return self.query(source, first, last, top_n, dialect)


def _windows(source: str, first: dt.date, last: dt.date, window_days: int, dialect: Dialect) -> str:
    """Each play of ``source`` once per target day of first..last whose ``window_days`` days (up to it) hold it."""
    return f"""(SELECT targets.target, plays.* FROM ({dialect.days(first, last)}) AS targets
                JOIN {source} AS plays ON plays.day BETWEEN targets.target - {window_days - 1} AND targets.target)"""


def _top(ranked: str, top_n: int) -> str:
    """The rows of ``ranked`` (a SELECT with a ``rank`` per day) up to ``top_n``: QUALIFY, which Spark 3.5 lacks."""
    return f"SELECT * FROM ({ranked}) AS ranked WHERE rank <= {top_n} ORDER BY day, rank"


def _top_tracks(source: str, first: dt.date, last: dt.date, top_n: int, _: Dialect) -> str:
    return _top(
        f"""
        SELECT day, CAST(row_number() OVER (PARTITION BY day ORDER BY plays DESC, track_id) AS INTEGER) AS rank,
               track_id, artist, title, plays, unique_listeners, seconds_played, {_MINUTES}
        FROM (SELECT day, track_id, artist, title, {_TOTALS} FROM {source} WHERE {date_sql("day", first, last)}
              GROUP BY day, track_id, artist, title) AS per_track""",
        top_n,
    )


def _top_artists(source: str, first: dt.date, last: dt.date, top_n: int, _: Dialect) -> str:
    return _top(
        f"""
        SELECT day, CAST(row_number() OVER (PARTITION BY day ORDER BY plays DESC, artist) AS INTEGER) AS rank,
               artist, plays, unique_listeners, seconds_played, {_MINUTES}
        FROM (SELECT day, artist, {_TOTALS} FROM {source} WHERE {date_sql("day", first, last)}
              GROUP BY day, artist) AS per_artist""",
        top_n,
    )


def _totals_per(column: str) -> MartQuery:
    def query(source: str, first: dt.date, last: dt.date, _: int, __: Dialect) -> str:
        return f"""
            SELECT day, {column}, {_TOTALS}, {_MINUTES} FROM {source} WHERE {date_sql("day", first, last)}
            GROUP BY day, {column} ORDER BY day, plays DESC, {column}"""

    return query


def _device(source: str, first: dt.date, last: dt.date, _: int, __: Dialect) -> str:
    return f"""
        SELECT day, device, count(*) AS plays, {_SECONDS}, {_MINUTES},
               count(*) / sum(count(*)) OVER (PARTITION BY day) AS share
        FROM {source} WHERE {date_sql("day", first, last)} GROUP BY day, device ORDER BY day, plays DESC, device"""


def _user_stats(source: str, first: dt.date, last: dt.date, _: int, dialect: Dialect) -> str:
    # Plain GROUP BYs that shrink the day step by step (plays -> user x track x artist -> user x artist ->
    # user), never a DISTINCT aggregate or a join over every play: hash aggregates spill to disk, so a
    # 100M-event day fits DuckDB's memory_limit. The same numbers as counting distinct tracks and artists.
    return f"""
        WITH per_pair AS (
            SELECT day, user_id, track_id, artist, count(*) AS n, sum(duration_seconds) AS seconds,
                   min(played_at) AS first_at, max(played_at) AS last_at
            FROM {source} WHERE {date_sql("day", first, last)} GROUP BY day, user_id, track_id, artist),
        per_artist AS (SELECT day, user_id, artist, CAST(sum(n) AS BIGINT) AS n FROM per_pair
                       GROUP BY day, user_id, artist),
        artists AS (SELECT day, user_id, count(*) AS distinct_artists,
                           {dialect.most_played_of("artist", "n")} AS favourite_artist
                    FROM per_artist GROUP BY day, user_id),
        tracks AS (SELECT day, user_id, count(*) AS distinct_tracks
                   FROM (SELECT DISTINCT day, user_id, track_id FROM per_pair) AS pairs GROUP BY day, user_id),
        totals AS (SELECT day, user_id, CAST(sum(n) AS BIGINT) AS plays,
                          CAST(coalesce(sum(seconds), 0) AS BIGINT) AS seconds_played,
                          min(first_at) AS first_play_at, max(last_at) AS last_play_at
                   FROM per_pair GROUP BY day, user_id)
        SELECT day, user_id, plays, seconds_played, {_MINUTES}, distinct_tracks, distinct_artists,
               favourite_artist, first_play_at, last_play_at
        FROM totals JOIN tracks USING (day, user_id) JOIN artists USING (day, user_id) ORDER BY day, user_id"""


def _user_track_days(source: str, first: dt.date, last: dt.date, _: int, __: Dialect) -> str:
    # Sorted as the table's sort order (user_id, day, track_id): each staged file is then ordered by user,
    # and its row groups' user_id statistics prune; compaction keeps the order when it merges the files.
    return f"""
        SELECT day, user_id, track_id, artist, title, count(*) AS plays, {_SECONDS}
        FROM {source} WHERE {date_sql("day", first, last)}
        GROUP BY day, user_id, track_id, artist, title ORDER BY user_id, day, track_id, artist, title"""


def _top_artists_in_window(windows: str, first: dt.date, last: dt.date, top_n: int, _: Dialect) -> str:
    return _top(
        f"""
        SELECT target AS day,
               CAST(row_number() OVER (PARTITION BY target ORDER BY plays DESC, artist) AS INTEGER) AS rank,
               artist, plays, unique_listeners, seconds_played, {_MINUTES}
        FROM (SELECT target, artist, {_TOTALS} FROM {windows} AS windows GROUP BY target, artist) AS per_artist""",
        top_n,
    )


def _trending_tracks(windows: str, first: dt.date, last: dt.date, top_n: int, _: Dialect) -> str:
    """This week against the week before, in a window of two weeks."""
    return _top(
        f"""
        WITH per_track AS (
            SELECT target, track_id, artist, title,
                   count(*) FILTER (WHERE day > target - {WEEK}) AS plays_7d,
                   count(*) FILTER (WHERE day <= target - {WEEK}) AS plays_prev_7d
            FROM {windows} AS windows GROUP BY target, track_id, artist, title)
        SELECT target AS day,
               CAST(row_number() OVER (PARTITION BY target
                                       ORDER BY plays_7d - plays_prev_7d DESC, plays_7d DESC, track_id) AS INTEGER)
                   AS rank,
               track_id, artist, title, plays_7d, plays_prev_7d, plays_7d - plays_prev_7d AS change,
               CASE WHEN plays_prev_7d > 0 THEN round((plays_7d - plays_prev_7d) / plays_prev_7d, 4) END
                   AS change_ratio
        FROM per_track""",
        top_n,
    )


def _user_track_interactions(windows: str, first: dt.date, last: dt.date, _: int, __: Dialect) -> str:
    """Each user's plays of each track in the window: what a recommender learns from (skips as negatives)."""
    return f"""
        SELECT target AS day, user_id, track_id, count(*) AS plays, {_SECONDS},
               min(played_at) AS first_played_at, max(played_at) AS last_played_at,
               count(*) FILTER (WHERE duration_seconds < {SKIP_UNDER_SECONDS}) AS skips
        FROM {windows} AS windows GROUP BY target, user_id, track_id ORDER BY day, user_id, track_id"""


DAILY_TOP_TRACKS = Mart(
    DAILY_TOP_TRACKS_TABLE,
    _top_tracks,
    "The day's most played tracks with listeners and listening time (top N, default 100).",
)
DAILY_TOP_ARTISTS = Mart(
    DAILY_TOP_ARTISTS_TABLE,
    _top_artists,
    "The day's most played artists with listeners and listening time (top N, default 100).",
)
DAILY_COUNTRY_LISTENING = Mart(
    DAILY_COUNTRY_LISTENING_TABLE,
    _totals_per("country"),
    "Plays, listeners and listening time per country for the day.",
)
DAILY_TIER_LISTENING = Mart(
    DAILY_TIER_LISTENING_TABLE,
    _totals_per("subscription_tier"),
    "Plays, listeners and listening time per subscription tier (Free, Premium, Family).",
)
DAILY_DEVICE_MIX = Mart(
    DAILY_DEVICE_MIX_TABLE,
    _device,
    "Plays and listening time per device for the day, with each device's share.",
)
DAILY_USER_STATS = Mart(
    DAILY_USER_STATS_TABLE,
    _user_stats,
    "Each user's day: plays, minutes, distinct tracks and artists, favourite artist, first and "
    "last play (the data behind personal listening stats).",
)
USER_TRACK_DAYS = Mart(
    USER_TRACK_DAYS_TABLE,
    _user_track_days,
    "Each user's plays and listening time per day and track, bucketed and sorted by user: what personal "
    "stats (`sonik user`, lakehouse/reads/user_stats.py) read, a user's years in one or two row groups.",
)
TOP_ARTISTS_7D = Mart(
    TOP_ARTISTS_7D_TABLE,
    _top_artists_in_window,
    "Most played artists over the 7 days ending on the partition's day.",
    window_days=WEEK,
)
TRENDING_TRACKS = Mart(
    TRENDING_TRACKS_TABLE,
    _trending_tracks,
    "Tracks gaining the most plays: the 7 days ending on the day against the 7 days before.",
    window_days=2 * WEEK,
)

DAILY_MARTS = (
    DAILY_TOP_TRACKS,
    DAILY_TOP_ARTISTS,
    DAILY_COUNTRY_LISTENING,
    DAILY_TIER_LISTENING,
    DAILY_DEVICE_MIX,
    DAILY_USER_STATS,
    USER_TRACK_DAYS,
)
USER_TRACK_INTERACTIONS = Mart(
    USER_TRACK_INTERACTIONS_TABLE,
    _user_track_interactions,
    f"Each user's plays of each track over the {INTERACTIONS_WINDOW_DAYS} days ending on the day: plays, seconds, "
    f"first and last play, and skips (plays under {SKIP_UNDER_SECONDS} s); training data for recommenders.",
    window_days=INTERACTIONS_WINDOW_DAYS,
)

ROLLING_MARTS = (TOP_ARTISTS_7D, TRENDING_TRACKS, USER_TRACK_INTERACTIONS)


# The columns of plays every mart reads (play_id is only for the checks).
MART_COLUMNS = (
    "user_id",
    "track_id",
    "artist",
    "title",
    "played_at",
    "duration_seconds",
    "country",
    "device",
    "subscription_tier",
)


def mart_rows(
    con: duckdb.DuckDBPyConnection, mart: Mart, first: dt.date, last: dt.date, top_n: int, source: str = PLAYS_DAYS
) -> pa.Table:
    """The mart's rows for days ``first``..``last`` from the loaded ``source``, shaped like its Iceberg table."""
    rows = con.execute(mart.sql(source, first, last, top_n)).to_arrow_table()
    return rows.cast(mart.table.schema.as_arrow())


def window_start(mart: Mart, first: dt.date) -> dt.date:
    """The first day of plays a mart needs to compute day ``first`` (its window reaches back)."""
    return first - dt.timedelta(days=mart.window_days - 1)
