"""The ``sonik`` command: small helpers for people outside the Dagster UI."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from pathlib import Path

from sonik_pipeline.lakehouse.events import synthetic_batch, write_landing_day
from sonik_pipeline.settings import Settings


class UsageError(ValueError):
    """Bad input from the user: printed as one line, never a stack trace."""


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def last_complete_days(n: int, today: dt.date) -> tuple[dt.date, dt.date]:
    """The last ``n`` complete UTC days before ``today``: the newest partitions Dagster offers."""
    if n < 1:
        raise UsageError("--last must be at least 1")
    return today - dt.timedelta(days=n), today - dt.timedelta(days=1)


def cmd_days(args: argparse.Namespace) -> None:
    first, last = last_complete_days(args.last, dt.datetime.now(dt.UTC).date())
    print(f"{first}...{last}")


def cmd_landing(args: argparse.Namespace) -> None:
    if args.end < args.start:
        raise UsageError(f"--end {args.end} is before --start {args.start}")
    landing = Path(args.dir) if args.dir else Settings.from_env().landing_dir
    day = args.start
    while day <= args.end:
        paths = write_landing_day(landing, day, synthetic_batch(day, args.events), files=args.files, fmt=args.format)
        print(f"{day}: {args.events:,} events in {len(paths)} {args.format} files under {paths[0].parent}")
        day += dt.timedelta(days=1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sonik", description="Sonik lakehouse helpers.")
    sub = parser.add_subparsers(dest="command", required=True)

    days = sub.add_parser("days", help="print the last N complete UTC days as a Dagster partition range A...B")
    days.add_argument("--last", type=int, default=7, help="how many days (default 7)")
    days.set_defaults(func=cmd_days)

    landing = sub.add_parser("landing", help="write synthetic landing-zone files for a date range")
    landing.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    landing.add_argument("--end", type=_date, required=True, help="last day, YYYY-MM-DD (inclusive)")
    landing.add_argument("--events", type=int, default=50_000, help="events per day (default 50,000)")
    landing.add_argument("--files", type=int, default=4, help="files per day (default 4)")
    landing.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    landing.add_argument("--dir", help="landing root (default SONIK_LANDING_DIR or SONIK_HOME/landing)")
    landing.set_defaults(func=cmd_landing)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (UsageError, ValueError, OSError) as exc:
        print(f"sonik: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
