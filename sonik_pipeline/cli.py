"""The ``sonik`` command: small helpers for people outside the Dagster UI."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import sys
import traceback
from collections.abc import Sequence

import duckdb

from sonik_pipeline.lakehouse import rejects, timetravel
from sonik_pipeline.lakehouse.catalog import CatalogUnavailable, catalog_properties, open_catalog
from sonik_pipeline.lakehouse.duckdb_extensions import lakehouse_connection
from sonik_pipeline.lakehouse.landing_source import LandingZone
from sonik_pipeline.lakehouse.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.synthetic_source import synthetic_batch
from sonik_pipeline.lakehouse.tables import lakehouse_table_names
from sonik_pipeline.lakehouse.validation import reason_group
from sonik_pipeline.settings import CATALOG_NAME, Settings, SettingsError


class UsageError(ValueError):  # noqa: N818 - reads as what it is
    """Bad input from the user: printed as one line, never a stack trace."""


# The failures a user causes and can fix, each printed as one line; anything else is a bug and keeps
# its traceback, so it is reported rather than hidden behind a message.
USER_ERRORS = (UsageError, SettingsError, CatalogUnavailable, timetravel.TimeTravelError)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other ``sonik`` error (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"sonik: error: {message} (see {self.prog} --help)\n")


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


def _catalog():
    settings = Settings.from_env()
    return open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def print_rows(columns: list[str], rows: list[tuple], fmt: str, out=None) -> None:
    """Rows as an aligned table (for people), CSV or JSON (for programs)."""
    out = out or sys.stdout
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[_cell(v) for v in row] for row in rows])
    elif fmt == "json":
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        json.dump(records, out, default=_cell, indent=2)
        out.write("\n")
    else:
        cells = [columns, *[[_cell(v) for v in row] for row in rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        for n, row in enumerate(cells):
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
            if n == 0:
                out.write("  ".join("-" * w for w in widths) + "\n")
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def cmd_tables(args: argparse.Namespace) -> None:
    catalog = _catalog()
    rows = []
    for name in lakehouse_table_names(catalog):
        table = catalog.load_table(name)
        current = table.current_snapshot()
        summary = current.summary if current else None
        rows.append(
            (
                name,
                int(summary.get("total-records") or 0) if summary else 0,
                int(summary.get("total-data-files") or 0) if summary else 0,
                len(table.snapshots()),
                timetravel.snapshot_rows(table)[-1].committed_at if current else "",
            )
        )
    print_rows(["table", "rows", "data_files", "snapshots", "last_commit"], rows, args.format)


def cmd_snapshots(args: argparse.Namespace) -> None:
    table = timetravel.load(_catalog(), args.table)
    rows = [dataclasses.astuple(r) for r in timetravel.snapshot_rows(table)]
    columns = [f.name for f in dataclasses.fields(timetravel.SnapshotRow)]
    print_rows(columns, rows, args.format)


def run_readonly_sql(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[list[str], list[tuple]]:
    """Run one SELECT: `sonik sql` reads, it never writes (no COPY, CREATE, INSERT, ATTACH...)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1 or statements[0].type != duckdb.StatementType.SELECT:
        raise UsageError("sonik sql is read-only: give exactly one SELECT (or WITH ... SELECT) statement")
    try:
        result = con.execute(sql)
        return [d[0] for d in result.description], result.fetchall()
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None


def _tables_read(sql: str) -> set[str] | None:
    """The table names (unqualified) a query reads, or None when DuckDB cannot tell.

    Asked of an empty connection: where the views exist, DuckDB expands them and names none.
    """
    try:
        with duckdb.connect() as con:
            return con.get_table_names(sql)
    except duckdb.Error:
        return None


def cmd_sql(args: argparse.Namespace) -> None:
    catalog = _catalog()
    con = lakehouse_connection(duckdb.connect(), catalog.properties)
    as_of = timetravel.parse_time(args.as_of) if args.as_of else None
    views = timetravel.create_views(con, catalog, as_of=as_of, snapshot_id=args.snapshot)
    read = _tables_read(args.query)
    for found in views.inexact:  # only the tables this query reads: the others do not change its answer
        if read is not None and found.table.split(".", 1)[1] not in read:
            continue
        if found.snapshot is None:  # its history then was expired: nothing to read, so no answer
            raise UsageError(found.reason)
        if args.strict:
            raise UsageError(f"{found.reason} (--strict: not reading {found.fallback or 'it'} instead)")
        print(f"sonik: warning: {found.warning}", file=sys.stderr)
    if args.as_of or args.snapshot:
        pins = ", ".join(f"{t}@{s}" for t, s in views.pinned.items())
        print(f"-- reading {pins}", file=sys.stderr)
    columns, rows = run_readonly_sql(con, args.query)
    print_rows(columns, rows, args.format)


def _scope(day: dt.date | None, reason: str | None) -> str:
    return (f" for {day}" if day else "") + (f" with reason {reason_group(reason)!r}" if reason else "")


def _events(n: int) -> str:
    return f"{n:,} event{'s' if n != 1 else ''}"


def cmd_rejects(args: argparse.Namespace) -> None:
    catalog = _catalog()
    con = lakehouse_connection(duckdb.connect(), catalog.properties)
    groups = rejects.quarantine_groups(catalog, con, args.day, args.reason)
    if not groups and args.format == "table":  # programs get an empty table; people get an answer
        print(f"no quarantined events{_scope(args.day, args.reason)}")
        return
    columns = [f.name for f in dataclasses.fields(rejects.RejectGroup)]
    print_rows(columns, [dataclasses.astuple(g) for g in groups], args.format)


def cmd_rejects_replay(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    properties = catalog_properties(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    con = lakehouse_connection(duckdb.connect(), catalog.properties)
    zone = LandingZone.at(settings.landing_dir, properties)
    if args.dry_run:
        plan = rejects.replay_plan(catalog, con, args.day, args.reason)
    else:
        try:
            plan = rejects.write_replay(catalog, con, zone, args.day, args.reason)
        except OSError as exc:  # a folder that cannot be written, a bucket that refuses
            raise UsageError(
                f"cannot write the landing zone {zone.display(zone.root)}: {exc}; check SONIK_LANDING_DIR"
            ) from None
    if not plan.files and not plan.staying:
        others = rejects.quarantine_groups(catalog, con, args.day) if args.reason else []
        if others:
            known = "; ".join(f"{g.reason!r} ({g.events:,})" for g in others)
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
        if left.readable:
            why, fix = f"{'belongs' if one else 'belong'} to {args.day} itself", "the source or the rules"
        else:
            why, fix = f"{'has' if one else 'have'} no readable played_at", "the source"
        print(f"{_events(left.events)} {why} (reason {left.reason}): fix {fix} and re-run {args.day}")
    if plan.files and not args.dry_run:
        days = sorted({f.day for f in plan.files})
        print("next: the landing sensor ingests those days when it sees the files (SONIK_SOURCE=landing); or now:")
        command = "SONIK_SOURCE=landing dagster asset materialize -m sonik_pipeline --select plays --partition"
        for day in days:
            print(f"  {command} {day}")


def cmd_rollback(args: argparse.Namespace) -> None:
    table = timetravel.load(_catalog(), args.table)
    if args.to is not None:
        target = timetravel.snapshot_by_id(table, args.to)
    else:
        instead = f": list the snapshots with `sonik snapshots {args.table}` and give one with --to ID"
        target = timetravel.snapshot_as_of(table, timetravel.parse_time(args.as_of), instead)
    current = table.current_snapshot()
    summary = (
        f"{args.table}: current snapshot {current.snapshot_id if current else None} -> {target.snapshot_id} "
        f"({target.summary.get('total-records') if target.summary else '?'} rows)"
    )
    if not args.yes:
        try:
            answer = input(f"Roll back {summary}? [y/N] ").strip().lower()
        except EOFError:  # no terminal to answer from, as in a script
            raise UsageError("rollback cancelled: no answer to the confirmation (use --yes in scripts)") from None
        if answer not in ("y", "yes"):
            raise UsageError("rollback cancelled")
    result = timetravel.rollback(table, target)
    print(f"rolled back {result.table}: snapshot {result.before} -> {result.after}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sonik", description="Sonik lakehouse helpers.")
    sub = parser.add_subparsers(dest="command", required=True)

    days = sub.add_parser("days", help="print the last N complete UTC days as a Dagster partition range A...B")
    days.add_argument("--last", type=int, default=7, help="how many days (default 7)")
    days.set_defaults(func=cmd_days)

    landing = sub.add_parser("landing", help="write synthetic landing-zone files for a date range")
    landing.add_argument("--start", type=_date, required=True, help="first day, YYYY-MM-DD")
    landing.add_argument("--end", type=_date, required=True, help="last day, YYYY-MM-DD (inclusive)")
    landing.add_argument("--events", type=_positive, default=50_000, help="events per day (default 50,000)")
    landing.add_argument("--files", type=_positive, default=4, help="files per day (default 4)")
    landing.add_argument("--format", choices=("jsonl", "parquet"), default="jsonl")
    landing.add_argument("--dir", help="landing root (default SONIK_LANDING_DIR or SONIK_HOME/landing)")
    landing.set_defaults(func=cmd_landing)

    formats = _Parser(add_help=False)
    formats.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output (default table)")

    tables = sub.add_parser("tables", parents=[formats], help="list the lakehouse tables")
    tables.set_defaults(func=cmd_tables)

    snapshots = sub.add_parser("snapshots", parents=[formats], help="a table's snapshots, with their Dagster run")
    snapshots.add_argument("table", help="e.g. music.plays")
    snapshots.set_defaults(func=cmd_snapshots)

    sql = sub.add_parser(
        "sql", parents=[formats], help="run one read-only SELECT in DuckDB over views of every lakehouse table"
    )
    sql.add_argument("query", help='e.g. "SELECT artist, count(*) FROM music.plays GROUP BY 1 ORDER BY 2 DESC"')
    when = sql.add_mutually_exclusive_group()
    when.add_argument("--as-of", help="read every table as it was at this time (ISO-8601, UTC by default)")
    when.add_argument("--snapshot", type=int, help="read the table holding this snapshot id at that snapshot")
    sql.add_argument(
        "--strict",
        action="store_true",
        help="with --as-of: refuse, rather than warn, when a table's snapshot current then was expired",
    )
    sql.set_defaults(func=cmd_sql)

    quarantine = sub.add_parser(
        "rejects", parents=[formats], help="quarantined events (music.plays_rejected) by day and reason"
    )
    quarantine.add_argument("--day", type=_date, help="only the events quarantined by this day's ingest")
    quarantine.add_argument("--reason", help="only this reason group, e.g. 'malformed JSON'")
    quarantine.set_defaults(func=cmd_rejects)
    actions = quarantine.add_subparsers(dest="action")
    replay = actions.add_parser(
        "replay", help="write a day's quarantined events back as landing files, in the folder of their own day"
    )
    replay.add_argument("--day", type=_date, required=True, help="the ingested day whose quarantine to replay")
    replay.add_argument("--reason", help="only this reason group (or a full reason, read as its group)")
    replay.add_argument("--dry-run", action="store_true", help="say what would be written; write nothing")
    replay.set_defaults(func=cmd_rejects_replay)

    back = sub.add_parser("rollback", help="make an earlier snapshot of a table current again")
    back.add_argument("table", help="e.g. music.plays")
    target = back.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", type=int, help="the snapshot id to return to")
    target.add_argument("--as-of", help="return to the snapshot current at this time (ISO-8601)")
    back.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    back.set_defaults(func=cmd_rollback)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        Settings.from_env()  # every SONIK_* value checked before any command runs
        args.func(args)
    except USER_ERRORS as exc:
        for line in str(exc).splitlines():
            print(f"sonik: error: {line}", file=sys.stderr)
        return 2
    except Exception as exc:
        traceback.print_exc()
        print(
            f"sonik: unexpected {type(exc).__name__} (traceback above): "
            "unless your setup explains it, please report it as a bug with the traceback",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
