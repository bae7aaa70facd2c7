"""``sonik days`` and ``sonik landing``: the partition range to backfill, and landing files to try it on."""

from __future__ import annotations

import argparse
import datetime as dt

from sonik_pipeline.cli.common import UsageError, day_argument, positive_argument


def last_complete_days(n: int, today: dt.date) -> tuple[dt.date, dt.date]:
    """The last ``n`` complete UTC days before ``today``: the newest partitions Dagster offers."""
    if n < 1:
        raise UsageError("--last must be at least 1")
    return today - dt.timedelta(days=n), today - dt.timedelta(days=1)


def cmd_days(args: argparse.Namespace) -> None:
    first, last = last_complete_days(args.last, dt.datetime.now(dt.UTC).date())
    print(f"{first}...{last}")


def cmd_landing(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
    from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
    from sonik_pipeline.lakehouse.tables.catalog import catalog_properties
    from sonik_pipeline.settings import CATALOG_NAME, Settings

    if args.end < args.start:
        raise UsageError(f"--end {args.end} is before --start {args.start}")
    settings = Settings.from_env()
    landing = args.dir or settings.landing_dir
    properties = catalog_properties(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    day = args.start
    while day <= args.end:
        events = synthetic_batch(day, args.events)
        try:
            paths = write_landing_day(landing, day, events, files=args.files, fmt=args.format, properties=properties)
        except OSError as exc:  # a folder that cannot be written, a bucket that refuses
            raise UsageError(
                f"cannot write the landing zone {landing}: {exc}; check --dir or SONIK_LANDING_DIR"
            ) from None
        print(f"{day}: {args.events:,} events in {len(paths)} {args.format} files under {paths[0].rsplit('/', 1)[0]}")
        day += dt.timedelta(days=1)


def register(sub: argparse._SubParsersAction) -> None:
    days = sub.add_parser("days", help="print the last N complete UTC days as a Dagster partition range A...B")
    days.add_argument("--last", type=int, default=7, help="how many days (default 7)")
    days.set_defaults(func=cmd_days)

    landing = sub.add_parser("landing", help="write synthetic landing-zone files for a date range")
    landing.add_argument("--start", type=day_argument, required=True, help="first day, YYYY-MM-DD")
    landing.add_argument("--end", type=day_argument, required=True, help="last day, YYYY-MM-DD (inclusive)")
    landing.add_argument("--events", type=positive_argument, default=50_000, help="events per day (default 50,000)")
    landing.add_argument("--files", type=positive_argument, default=4, help="files per day (default 4)")
    landing.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    landing.add_argument("--dir", help="landing root (default SONIK_LANDING_DIR or SONIK_HOME/landing)")
    landing.set_defaults(func=cmd_landing)
