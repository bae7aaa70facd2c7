"""``sonik user``: one user's listening stats and year in review, read as an app backend reads them."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING

from sonik_pipeline.cli.common import UsageError, catalog_from_settings, day_argument, positive_argument, print_rows

if TYPE_CHECKING:  # the module itself is imported by cmd_user only: `sonik --help` stays light
    from sonik_pipeline.lakehouse.reads.user_stats import UserStats


def stats_days(start: dt.date | None, end: dt.date | None, year: int | None) -> tuple[dt.date | None, dt.date | None]:
    """The days asked for: --year Y, or --start/--end (None: open at that end, every day when both are)."""
    if year is not None:
        if start or end:
            raise UsageError("give either --year or --start/--end, not both")
        if not 1970 <= year <= 9999:
            raise UsageError(f"--year {year} is not a year of plays (1970-9999)")
        return dt.date(year, 1, 1), dt.date(year, 12, 31)
    if start and end and end < start:
        raise UsageError(f"--end {end} is before --start {start}")
    return start, end


def _span(stats: UserStats) -> str:
    if stats.first_day is None and stats.last_day is None:
        return "all days"
    return f"{stats.first_day or 'first day'}..{stats.last_day or 'last day'}"


def print_stats(stats: UserStats, out=None) -> None:
    """The stats for people: totals, the top lists, the year in review, and what the read cost."""
    out = out or sys.stdout
    out.write(
        f"user {stats.user_id}, {_span(stats)}: {stats.plays:,} plays, {stats.minutes:,.2f} minutes, "
        f"{stats.active_days:,} active days\n\ntop artists\n"
    )
    artists = [(n, a.artist, a.plays, a.minutes) for n, a in enumerate(stats.top_artists, start=1)]
    print_rows(["rank", "artist", "plays", "minutes"], artists, "table", out)
    out.write("\ntop tracks\n")
    tracks = [(n, t.track_id, t.artist, t.title, t.plays, t.minutes) for n, t in enumerate(stats.top_tracks, start=1)]
    print_rows(["rank", "track_id", "artist", "title", "plays", "minutes"], tracks, "table", out)
    review = stats.review
    out.write("\nyear in review\n")
    months = [(m.start.strftime("%Y-%m"), m.plays, m.minutes, m.active_days) for m in review.months]
    print_rows(["month", "plays", "minutes", "active_days"], months, "table", out)
    if review.top_artist is not None:
        day, month = review.most_active_day, review.most_active_month
        out.write(
            f"top artist: {review.top_artist.artist} ({review.top_artist.plays:,} plays); "
            f"top track: {review.top_track.artist} - {review.top_track.title} ({review.top_track.plays:,} plays)\n"
            f"most active day: {day.start} ({day.minutes:,.2f} minutes); "
            f"most active month: {month.start:%Y-%m} ({month.minutes:,.2f} minutes); "
            f"longest streak: {review.longest_streak_days} days\n"
        )
    reads = stats.reads
    out.write(
        f"\nread {reads.row_groups_read} of {reads.row_groups} row groups in {reads.files_read} of "
        f"{reads.files_planned} planned files ({reads.bytes_read:,} bytes) in {reads.seconds * 1000:.1f} ms\n"
    )


def cmd_user(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.reads.user_stats import DEFAULT_TOP_N, user_stats

    first, last = stats_days(args.start, args.end, args.year)
    top_n = DEFAULT_TOP_N if args.top is None else args.top
    stats = user_stats(catalog_from_settings(), args.user_id, first, last, top_n=top_n)
    if args.format == "json":
        json.dump(stats.as_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_stats(stats)


def register(sub: argparse._SubParsersAction) -> None:
    user = sub.add_parser(
        "user",
        help="one user's listening: minutes, plays, active days, top artists and tracks, year in review",
        description="One user's listening stats from music_marts.user_track_days, read as an app backend does.",
    )
    user.add_argument("user_id", type=int, help="the user")
    user.add_argument("--start", type=day_argument, help="first day, YYYY-MM-DD (default: the first there is)")
    user.add_argument("--end", type=day_argument, help="last day, YYYY-MM-DD, inclusive (default: the last)")
    user.add_argument("--year", type=int, help="a calendar year instead of --start/--end")
    user.add_argument("--top", type=positive_argument, help="length of the top lists")
    user.add_argument("--format", choices=("table", "json"), default="table", help="output (default table)")
    user.set_defaults(func=cmd_user)
