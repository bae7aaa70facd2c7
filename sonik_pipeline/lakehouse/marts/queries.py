"""The marts: DuckDB SQL over a pinned snapshot of music.plays, stored back as Iceberg tables in music_marts.

Each mart is a table definition plus one SQL query over a range of days. The queries read days of
plays planned once for the whole run (``plays_days.load_plays_days``: those days' data files at an
explicit snapshot), so every figure can be reproduced by time travel.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import pyarrow as pa
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, DoubleType, IntegerType, LongType, NestedField, StringType, TimestampType

from sonik_pipeline.lakehouse.reads.plays_days import PLAYS_DAYS, PlaysSnapshot, load_plays_days
from sonik_pipeline.lakehouse.tables.definitions import MARTS, TableDef
from sonik_pipeline.lakehouse.tables.snapshots import lineage
from sonik_pipeline.lakehouse.tables.writes import CommitReport, replace_partition

DEFAULT_TOP_N = 100


def _mart_table(name: str, *fields: NestedField) -> TableDef:
    """A mart partitioned by its day (identity), so replacing a day is one partition swap."""
    day = NestedField(1, "day", DateType(), required=True, doc="The UTC day the figures are for")
    return TableDef(
        namespace=MARTS,
        name=name,
        schema=Schema(day, *fields),
        spec=PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="day")),
    )


def _f(field_id: int, name: str, kind, doc: str, required: bool = False) -> NestedField:
    return NestedField(field_id, name, kind, required=required, doc=doc)


def PLAYS_F(i: int) -> NestedField:  # noqa: N802 - reads like the column it makes
    return _f(i, "plays", LongType(), "Number of plays", True)


def LISTENERS_F(i: int) -> NestedField:  # noqa: N802
    return _f(i, "unique_listeners", LongType(), "Distinct users who played", True)


def SECONDS_F(i: int) -> NestedField:  # noqa: N802
    return _f(i, "seconds_played", LongType(), "Total listening time in seconds (exact)", True)


def MINUTES_F(i: int) -> NestedField:  # noqa: N802
    return _f(i, "minutes_played", DoubleType(), "Total listening time in minutes (rounded to 0.01)", True)


def RANK_F(i: int) -> NestedField:  # noqa: N802
    return _f(i, "rank", IntegerType(), "1 = most played", True)


def TOTALS_F(i: int) -> tuple[NestedField, ...]:  # noqa: N802
    """plays, unique_listeners, seconds_played and minutes_played, with field ids from ``i`` on."""
    return PLAYS_F(i), LISTENERS_F(i + 1), SECONDS_F(i + 2), MINUTES_F(i + 3)


def _ranked_artists_table(name: str) -> TableDef:
    return _mart_table(name, RANK_F(2), _f(3, "artist", StringType(), "Artist", True), *TOTALS_F(4))


# Listening time: a play of unknown duration counts 0 seconds, so a group always has a number (both
# columns are required). Minutes are derived from the exact seconds, in the same SELECT or an outer one.
_SECONDS = "coalesce(sum(duration_seconds), 0)::BIGINT AS seconds_played"
_MINUTES = "round(seconds_played / 60.0, 2) AS minutes_played"
_TOTALS = f"count(*) AS plays, count(DISTINCT user_id) AS unique_listeners, {_SECONDS}"


# A query reads ``source``: a relation of plays with a ``day`` column (see ``load_plays_days``) holding the
# target days first..last and, for a rolling view, the days of the window before them. It returns the
# rows of every target day at once, grouped and ranked by day.
MartQuery = Callable[[str, dt.date, dt.date, int], str]


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


def _days(first: dt.date, last: dt.date) -> str:
    return f"day BETWEEN DATE '{first}' AND DATE '{last}'"


def _top_tracks(source: str, first: dt.date, last: dt.date, top_n: int) -> str:
    return f"""
        SELECT day, CAST(row_number() OVER (PARTITION BY day ORDER BY plays DESC, track_id) AS INTEGER) AS rank,
               track_id, artist, title, plays, unique_listeners, seconds_played, {_MINUTES}
        FROM (SELECT day, track_id, artist, title, {_TOTALS} FROM {source} WHERE {_days(first, last)}
              GROUP BY day, track_id, artist, title)
        QUALIFY rank <= {top_n} ORDER BY day, rank"""


def _top_artists(source: str, first: dt.date, last: dt.date, top_n: int) -> str:
    return f"""
        SELECT day, CAST(row_number() OVER (PARTITION BY day ORDER BY plays DESC, artist) AS INTEGER) AS rank,
               artist, plays, unique_listeners, seconds_played, {_MINUTES}
        FROM (SELECT day, artist, {_TOTALS} FROM {source} WHERE {_days(first, last)} GROUP BY day, artist)
        QUALIFY rank <= {top_n} ORDER BY day, rank"""


def _totals_per(column: str) -> MartQuery:
    def query(source: str, first: dt.date, last: dt.date, _: int) -> str:
        return f"""
            SELECT day, {column}, {_TOTALS}, {_MINUTES} FROM {source} WHERE {_days(first, last)}
            GROUP BY day, {column} ORDER BY day, plays DESC, {column}"""

    return query


def _device(source: str, first: dt.date, last: dt.date, _: int) -> str:
    return f"""
        SELECT day, device, count(*) AS plays, {_SECONDS}, {_MINUTES},
               count(*) / sum(count(*)) OVER (PARTITION BY day) AS share
        FROM {source} WHERE {_days(first, last)} GROUP BY day, device ORDER BY day, plays DESC, device"""


def _user_stats(source: str, first: dt.date, last: dt.date, _: int) -> str:
    # Plain GROUP BYs that shrink the day step by step (plays -> user x track x artist -> user x artist ->
    # user), never a DISTINCT aggregate or a join over every play: hash aggregates spill to disk, so a
    # 100M-event day fits DuckDB's memory_limit. The same numbers as counting distinct tracks and artists.
    return f"""
        WITH per_pair AS (
            SELECT day, user_id, track_id, artist, count(*) AS n, sum(duration_seconds) AS seconds,
                   min(played_at) AS first_at, max(played_at) AS last_at
            FROM {source} WHERE {_days(first, last)} GROUP BY day, user_id, track_id, artist),
        per_artist AS (SELECT day, user_id, artist, sum(n)::BIGINT AS n FROM per_pair GROUP BY day, user_id, artist),
        artists AS (SELECT day, user_id, count(*) AS distinct_artists,
                           first(artist ORDER BY n DESC, artist) AS favourite_artist
                    FROM per_artist GROUP BY day, user_id),
        tracks AS (SELECT day, user_id, count(*) AS distinct_tracks
                   FROM (SELECT DISTINCT day, user_id, track_id FROM per_pair) GROUP BY day, user_id),
        totals AS (SELECT day, user_id, sum(n)::BIGINT AS plays, coalesce(sum(seconds), 0)::BIGINT AS seconds_played,
                          min(first_at) AS first_play_at, max(last_at) AS last_play_at
                   FROM per_pair GROUP BY day, user_id)
        SELECT day, user_id, plays, seconds_played, {_MINUTES}, distinct_tracks, distinct_artists,
               favourite_artist, first_play_at, last_play_at
        FROM totals JOIN tracks USING (day, user_id) JOIN artists USING (day, user_id) ORDER BY day, user_id"""


def _targets(first: dt.date, last: dt.date) -> str:
    """The target days as a relation ``targets(target)``."""
    return f"(SELECT CAST(unnest(range(DATE '{first}', DATE '{last}' + 1, INTERVAL 1 DAY)) AS DATE) AS target)"


def _top_artists_7d(source: str, first: dt.date, last: dt.date, top_n: int) -> str:
    return f"""
        SELECT target AS day,
               CAST(row_number() OVER (PARTITION BY target ORDER BY plays DESC, artist) AS INTEGER) AS rank,
               artist, plays, unique_listeners, seconds_played, {_MINUTES}
        FROM (SELECT target, artist, {_TOTALS}
              FROM {_targets(first, last)} JOIN {source} ON day BETWEEN target - 6 AND target
              GROUP BY target, artist)
        QUALIFY rank <= {top_n} ORDER BY day, rank"""


def _trending_tracks(source: str, first: dt.date, last: dt.date, top_n: int) -> str:
    return f"""
        WITH per_track AS (
            SELECT target, track_id, artist, title,
                   count(*) FILTER (WHERE day > target - 7) AS plays_7d,
                   count(*) FILTER (WHERE day <= target - 7) AS plays_prev_7d
            FROM {_targets(first, last)} JOIN {source} ON day BETWEEN target - 13 AND target
            GROUP BY target, track_id, artist, title)
        SELECT target AS day,
               CAST(row_number() OVER (PARTITION BY target
                                       ORDER BY plays_7d - plays_prev_7d DESC, plays_7d DESC, track_id) AS INTEGER)
                   AS rank,
               track_id, artist, title, plays_7d, plays_prev_7d, plays_7d - plays_prev_7d AS change,
               CASE WHEN plays_prev_7d > 0 THEN round((plays_7d - plays_prev_7d) / plays_prev_7d, 4) END
                   AS change_ratio
        FROM per_track QUALIFY rank <= {top_n} ORDER BY day, rank"""


def RANKED_TRACK_F() -> tuple[NestedField, ...]:  # noqa: N802 - reads like the columns it makes
    """rank, track_id, artist and title (field ids 2-5): the head of every ranked-tracks mart."""
    return (
        RANK_F(2),
        _f(3, "track_id", LongType(), "Track", True),
        _f(4, "artist", StringType(), "Artist", True),
        _f(5, "title", StringType(), "Title", True),
    )


DAILY_TOP_TRACKS = Mart(
    _mart_table("daily_top_tracks", *RANKED_TRACK_F(), *TOTALS_F(6)),
    _top_tracks,
    "The day's most played tracks with listeners and listening time (top N, default 100).",
)
DAILY_TOP_ARTISTS = Mart(
    _ranked_artists_table("daily_top_artists"),
    _top_artists,
    "The day's most played artists with listeners and listening time (top N, default 100).",
)


def _totals_by(name: str, column: str, doc: str) -> TableDef:
    """A mart of plays, listeners and listening time per value of one column."""
    return _mart_table(name, _f(2, column, StringType(), doc), *TOTALS_F(3))


DAILY_COUNTRY_LISTENING = Mart(
    _totals_by("daily_country_listening", "country", "Two-letter country code (null: unknown)"),
    _totals_per("country"),
    "Plays, listeners and listening time per country for the day.",
)
DAILY_TIER_LISTENING = Mart(
    _totals_by(
        "daily_tier_listening", "subscription_tier", "Free, Premium or Family (null: played before tiers were recorded)"
    ),
    _totals_per("subscription_tier"),
    "Plays, listeners and listening time per subscription tier (Free, Premium, Family).",
)
DAILY_DEVICE_MIX = Mart(
    _mart_table(
        "daily_device_mix",
        _f(2, "device", StringType(), "Device type (null: unknown)"),
        PLAYS_F(3),
        SECONDS_F(4),
        MINUTES_F(5),
        _f(6, "share", DoubleType(), "Share of the day's plays (0..1)", True),
    ),
    _device,
    "Plays and listening time per device for the day, with each device's share.",
)
DAILY_USER_STATS = Mart(
    _mart_table(
        "daily_user_stats",
        _f(2, "user_id", LongType(), "User", True),
        PLAYS_F(3),
        SECONDS_F(4),
        MINUTES_F(5),
        _f(6, "distinct_tracks", LongType(), "Different tracks played", True),
        _f(7, "distinct_artists", LongType(), "Different artists played", True),
        _f(8, "favourite_artist", StringType(), "Most played artist (ties: alphabetical)", True),
        _f(9, "first_play_at", TimestampType(), "First play of the day (UTC)", True),
        _f(10, "last_play_at", TimestampType(), "Last play of the day (UTC)", True),
    ),
    _user_stats,
    "Each user's day: plays, minutes, distinct tracks and artists, favourite artist, first and "
    "last play (the data behind personal listening stats).",
)
TOP_ARTISTS_7D = Mart(
    _ranked_artists_table("top_artists_7d"),
    _top_artists_7d,
    "Most played artists over the 7 days ending on the partition's day.",
    window_days=7,
)
TRENDING_TRACKS = Mart(
    _mart_table(
        "trending_tracks",
        *RANKED_TRACK_F(),
        _f(6, "plays_7d", LongType(), "Plays in the 7 days ending on day", True),
        _f(7, "plays_prev_7d", LongType(), "Plays in the 7 days before those", True),
        _f(8, "change", LongType(), "plays_7d - plays_prev_7d", True),
        _f(9, "change_ratio", DoubleType(), "change / plays_prev_7d (null when new)"),
    ),
    _trending_tracks,
    "Tracks gaining the most plays: the 7 days ending on the day against the 7 days before.",
    window_days=14,
)

DAILY_MARTS = (
    DAILY_TOP_TRACKS,
    DAILY_TOP_ARTISTS,
    DAILY_COUNTRY_LISTENING,
    DAILY_TIER_LISTENING,
    DAILY_DEVICE_MIX,
    DAILY_USER_STATS,
)
ROLLING_MARTS = (TOP_ARTISTS_7D, TRENDING_TRACKS)


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
    rows = con.execute(mart.query(source, first, last, top_n)).to_arrow_table()
    return rows.cast(mart.table.schema.as_arrow())


def window_start(mart: Mart, first: dt.date) -> dt.date:
    """The first day of plays a mart needs to compute day ``first`` (its window reaches back)."""
    return first - dt.timedelta(days=mart.window_days - 1)


def compute_mart(con: duckdb.DuckDBPyConnection, mart: Mart, src: PlaysSnapshot, day: dt.date, top_n: int) -> pa.Table:
    """One mart for one day, from its own read of plays (for a notebook or a test; the assets share reads)."""
    load_plays_days(con, src, window_start(mart, day), day, MART_COLUMNS)
    return mart_rows(con, mart, day, day, top_n)


PLAYS_SNAPSHOT_PROPERTY = "sonik.plays-snapshot-id"
PLAYS_METADATA_PROPERTY = "sonik.plays-metadata-location"


def replace_mart_days(
    table: Table,
    first: dt.date,
    last: dt.date,
    files: list[DataFile],
    src: PlaysSnapshot,
    properties: dict[str, str],
) -> CommitReport:
    """Make ``files`` the whole of days ``first``..``last`` of a mart table, in one commit.

    The commit records the plays snapshot the figures came from, so they can be reproduced and checked.
    A backfill of many days is one commit per mart rather than one per day.
    """
    snapshot_properties = {
        **properties,
        "dagster.partition": first.isoformat() if first == last else f"{first}...{last}",
        PLAYS_SNAPSHOT_PROPERTY: str(src.snapshot_id),
        PLAYS_METADATA_PROPERTY: src.metadata_location,
    }
    days = And(GreaterThanOrEqual("day", first.isoformat()), LessThanOrEqual("day", last.isoformat()))
    return replace_partition(table, days, files, snapshot_properties)


def _covers(partition: str | None, day: dt.date) -> bool:
    if not partition:
        return False
    first, _, last = partition.partition("...")
    return first <= day.isoformat() <= (last or first)


def plays_snapshots_behind(mart_table: Table, days: list[dt.date]) -> dict[dt.date, PlaysSnapshot | None]:
    """For each day, the plays snapshot that the mart's current figures for it were computed from.

    One walk back through the current lineage for all the days: the newest commit covering a day wins.
    """
    behind: dict[dt.date, PlaysSnapshot | None] = dict.fromkeys(days)
    missing = set(days)
    for snapshot in lineage(mart_table):  # maintenance commits (compaction, manifests) carry no partition
        summary = snapshot.summary
        if not missing:
            break
        if not summary or not summary.get(PLAYS_SNAPSHOT_PROPERTY):
            continue
        covered = {day for day in missing if _covers(summary.get("dagster.partition"), day)}
        src = PlaysSnapshot(summary[PLAYS_METADATA_PROPERTY], int(summary[PLAYS_SNAPSHOT_PROPERTY]))
        for day in covered:
            behind[day] = src
        missing -= covered
    return behind


def plays_snapshot_behind(mart_table: Table, day: dt.date) -> PlaysSnapshot | None:
    """The plays snapshot that the mart's current figures for ``day`` were computed from."""
    return plays_snapshots_behind(mart_table, [day])[day]
