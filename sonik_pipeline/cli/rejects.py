"""``sonik rejects`` and ``sonik rejects replay``: the quarantine by day and reason, and sending it back to landing."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt

from sonik_pipeline.cli.common import (
    UsageError,
    add_format_option,
    catalog_from_settings,
    day_argument,
    lakehouse_duckdb,
    print_rows,
)


def _scope(day: dt.date | None, reason: str | None) -> str:
    from sonik_pipeline.lakehouse.ingest.validation import reason_group

    return (f" for {day}" if day else "") + (f" with reason {reason_group(reason)!r}" if reason else "")


def _events(n: int) -> str:
    return f"{n:,} event{'s' if n != 1 else ''}"


def _files(n: int) -> str:
    return f"{n:,} file{'s' if n != 1 else ''}"


def _check_quarantine(catalog) -> None:
    """A damaged quarantine is one line naming it, before PyIceberg plans it or DuckDB reads it."""
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

    from sonik_pipeline.lakehouse.reads import timetravel
    from sonik_pipeline.lakehouse.tables.catalog import load_table
    from sonik_pipeline.lakehouse.tables.definitions import PLAYS_REJECTED

    try:
        table = load_table(catalog, PLAYS_REJECTED.identifier)
    except (NoSuchTableError, NoSuchNamespaceError):
        return
    if (current := table.current_snapshot()) is not None:
        timetravel.check_manifests(table, current)


def cmd_rejects(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.ingest import rejects

    catalog = catalog_from_settings()
    _check_quarantine(catalog)
    con = lakehouse_duckdb(catalog)
    groups = rejects.quarantine_groups(catalog, con, args.day, args.reason)
    if not groups and args.format == "table":  # programs get an empty table; people get an answer
        print(f"no quarantined events{_scope(args.day, args.reason)}")
        return
    columns = [f.name for f in dataclasses.fields(rejects.RejectGroup)]
    print_rows(columns, [dataclasses.astuple(g) for g in groups], args.format)
    files = rejects.unreadable_files(catalog, con, args.day, args.reason) if args.format == "table" else []
    if files:  # for people, each by name: a file to replace, not events to fix
        many = len(files) != 1
        print(
            f"\n{len(files)} unreadable landing file{'s' if many else ''}, not events: replace or remove "
            f"{'each' if many else 'it'} and re-run the day it was ingested with"
        )
        for file in files:
            print(f"  {file.source_file} (ingest of {file.ingest_day}): {file.reason}")


def cmd_rejects_replay(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.ingest import rejects
    from sonik_pipeline.lakehouse.sources.landing import LandingZone
    from sonik_pipeline.lakehouse.tables.catalog import catalog_properties, open_catalog
    from sonik_pipeline.settings import CATALOG_NAME, Settings

    settings = Settings.from_env()
    properties = catalog_properties(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    _check_quarantine(catalog)
    con = lakehouse_duckdb(catalog)
    zone = LandingZone.at(settings.landing_dir, properties)
    # Only into days the partitions hold: from SONIK_START_DATE to today (its folder is ingested once it is over).
    partitions = {"first_day": dt.date.fromisoformat(settings.start_date), "last_day": dt.datetime.now(dt.UTC).date()}
    if args.dry_run:
        plan = rejects.replay_plan(catalog, con, args.day, args.reason, **partitions)
    else:
        try:
            plan = rejects.write_replay(catalog, con, zone, args.day, args.reason, **partitions)
        except OSError as exc:  # a folder that cannot be written, a bucket that refuses
            raise UsageError(
                f"cannot write the landing zone {zone.display(zone.root)}: {exc}; check SONIK_LANDING_DIR"
            ) from None
    if not plan.files and not plan.staying:
        others = rejects.quarantine_groups(catalog, con, args.day) if args.reason else []
        if others:
            known = "; ".join(f"{g.reason!r} ({_files(g.files) if g.files else f'{g.events:,}'})" for g in others)
            raise UsageError(f"no quarantined events{_scope(args.day, args.reason)}; its reasons: {known}")
        print(f"no quarantined events{_scope(args.day, None)}")
        return
    if plan.files:
        verb = "would write" if args.dry_run else "wrote"
        print(f"{verb} {_events(plan.events)} of {args.day}'s quarantine into the folders of their days:")
        rows = [(zone.display(zone.day_dir(f.day)), f.name, f.events, f.reason) for f in plan.files]
        print_rows(["folder", "file", "events", "reason"], rows, "table")
    for left in plan.staying:
        one = left.events == 1
        if left.files:
            them = "it" if left.files == 1 else "them"
            fix = f"replace or remove {them} and re-run {args.day}"
            print(f"{_files(left.files)} unreadable (reason {left.reason}): {fix}")
            continue
        if left.outside:
            why, fix = f"{'belongs' if one else 'belong'} to {left.outside}", "the source"
        elif left.readable:
            why, fix = f"{'belongs' if one else 'belong'} to {args.day} itself", "the source or the rules"
        else:
            why, fix = f"{'has' if one else 'have'} no readable played_at", "the source"
        print(f"{_events(left.events)} {why} (reason {left.reason}): fix {fix} and re-run {args.day}")
    if plan.files and not args.dry_run:
        days = sorted({f.day for f in plan.files})
        print("next: the landing sensor ingests those days when it sees the files (SONIK_SOURCE=landing); or now:")
        command = (
            "SONIK_SOURCE=landing dagster asset materialize -m sonik_pipeline.definitions --select plays --partition"
        )
        for day in days:
            print(f"  {command} {day}")


def register(sub: argparse._SubParsersAction) -> None:
    quarantine = sub.add_parser("rejects", help="quarantined events (music.plays_rejected) by day and reason")
    add_format_option(quarantine)
    quarantine.add_argument("--day", type=day_argument, help="only the events quarantined by this day's ingest")
    quarantine.add_argument("--reason", help="only this reason group, e.g. 'malformed JSON'")
    quarantine.set_defaults(func=cmd_rejects)
    actions = quarantine.add_subparsers(dest="action")
    replay = actions.add_parser(
        "replay", help="write a day's quarantined events back as landing files, in the folder of their own day"
    )
    replay.add_argument("--day", type=day_argument, required=True, help="the ingested day whose quarantine to replay")
    replay.add_argument("--reason", help="only this reason group (or a full reason, read as its group)")
    replay.add_argument("--dry-run", action="store_true", help="say what would be written; write nothing")
    replay.set_defaults(func=cmd_rejects_replay)
