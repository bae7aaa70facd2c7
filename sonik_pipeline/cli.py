"""The ``sonik`` command: small helpers for people outside the Dagster UI."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import re
import sys
import traceback
from collections.abc import Sequence

import duckdb
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError, TableAlreadyExistsError

from sonik_pipeline.lakehouse.days import parse_day
from sonik_pipeline.lakehouse.duckdb_io.extensions import lakehouse_connection
from sonik_pipeline.lakehouse.ingest import rejects
from sonik_pipeline.lakehouse.ingest.validation import reason_group
from sonik_pipeline.lakehouse.reads import timetravel
from sonik_pipeline.lakehouse.sources.landing import LandingZone
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables import attachment
from sonik_pipeline.lakehouse.tables.catalog import (
    CatalogUnavailable,
    TableUnreadable,
    catalog_properties,
    load_table,
    open_catalog,
)
from sonik_pipeline.lakehouse.tables.definitions import CODE_TABLES, PLAYS_REJECTED, lakehouse_table_names
from sonik_pipeline.settings import CATALOG_NAME, Settings, SettingsError


class UsageError(ValueError):
    """Bad input from the user: printed as one line, never a stack trace."""


# The failures a user causes or can fix (bad input or settings, a catalog unreachable or locked, a table
# whose files are damaged, named), each printed as one line; anything else is a bug and keeps its
# traceback, so it is reported rather than hidden behind a message.
USER_ERRORS = (UsageError, SettingsError, CatalogUnavailable, TableUnreadable, timetravel.TimeTravelError)


def _date(text: str) -> dt.date:
    try:
        return parse_day(text)
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


def _duckdb(catalog) -> duckdb.DuckDBPyConnection:
    """DuckDB on the lakehouse, held to SONIK_DUCKDB_MEMORY_LIMIT as the Dagster steps are."""
    return lakehouse_connection(duckdb.connect(), catalog.properties, Settings.from_env().duckdb_memory_limit)


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


def cmd_tables(args: argparse.Namespace) -> int:
    catalog = _catalog()
    rows: list[tuple] = []
    unreadable = []
    names = lakehouse_table_names(catalog)
    for name in names:
        try:
            table = load_table(catalog, name)
        except TableUnreadable as exc:  # listed with empty figures; the others still are
            rows.append((name, None, None, None, None))
            unreadable.append(str(exc))
            continue
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
    for problem in unreadable:
        print(f"sonik: error: {problem}", file=sys.stderr)
    # Only the tables the catalog does not list can be lost (and loading a listed one again would fail
    # again on damaged metadata).
    unlisted = [t.identifier for t in CODE_TABLES if t.identifier not in names]
    lost = attachment.unattached_tables(catalog, unlisted)
    for table in lost:
        print(f"sonik: error: {table.describe()}", file=sys.stderr)
    if lost:
        print(f"sonik: error: the catalog lost {len(lost)} tables: {attachment.REATTACH_HINT}", file=sys.stderr)
        return 1
    return 1 if unreadable else 0


def cmd_reattach(args: argparse.Namespace) -> None:
    """Register lost tables' newest metadata in the catalog: every snapshot and its time travel come back."""
    catalog = _catalog()
    wanted = args.tables or [t.identifier for t in CODE_TABLES]
    if args.metadata and len(wanted) != 1:
        raise UsageError("--metadata names one table's metadata file: name that one table too")
    if args.replace:
        found = []
        for identifier in wanted:
            location = attachment.expected_location(catalog, identifier)
            files = attachment.metadata_files_at(catalog, location) if location else []
            found.append(attachment.Unattached(identifier, location or "", tuple(files)))
    else:
        found = attachment.unattached_tables(catalog, wanted)
    if not found and not args.metadata:
        print("Nothing to re-attach: the catalog has every table whose files are in the warehouse.")
        return
    rows = []
    for table in found or [attachment.Unattached(wanted[0], "", ())]:
        try:
            metadata = args.metadata or _newest_of_table(catalog, table, args.replace)
            done = attachment.reattach(catalog, table.identifier, metadata, replace=args.replace)
        except (attachment.AmbiguousMetadata, TableAlreadyExistsError) as refused:
            raise UsageError(str(refused)) from None
        rows.append((done.identifier, done.snapshots, done.current_snapshot_id, done.replaced_uuid or "", metadata))
    print_rows(["table", "snapshots", "current_snapshot", "replaced_uuid", "metadata"], rows, args.format)


def _newest_of_table(catalog, table: attachment.Unattached, replace: bool) -> str:
    """The newest metadata file at the table's location; with --replace, the newest of another table than the
    catalog's (the one created over it)."""
    if not replace or not catalog.table_exists(table.identifier):
        return attachment.newest_metadata(table)
    current = str(catalog.load_table(table.identifier).metadata.table_uuid)
    others = [f for f in table.metadata if str(attachment.read_metadata(catalog, f.location).table_uuid) != current]
    if not others:
        raise UsageError(f"{table.identifier}: no other table's metadata is at {table.location}: nothing to replace")
    return attachment.newest_metadata(dataclasses.replace(table, metadata=tuple(others)))


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
    except duckdb.CatalogException as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}{_missing_table_hint(str(exc))}") from None
    except duckdb.Error as exc:
        raise UsageError(f"SQL error: {str(exc).splitlines()[0]}") from None


_MISSING_TABLE = re.compile(r'Table with name "?([^"\s]+)"? does not exist')


def _missing_table_hint(message: str) -> str:
    """For a table DuckDB does not know: the lakehouse's name for it (tables are named with their namespace)."""
    match = _MISSING_TABLE.search(message)
    if not match:
        return ""
    wanted = match.group(1).lower()
    names = [table.identifier for table in CODE_TABLES]
    like = [name for name in names if name.rsplit(".", 1)[-1] == wanted.rsplit(".", 1)[-1]]
    if like:
        return f"; the lakehouse's table is {like[0]} (tables are named with their namespace)"
    return f"; the lakehouse's tables are {', '.join(names)}"


# What looks at the catalog rather than at named tables (SHOW TABLES, information_schema.tables,
# duckdb_views(), query_table('music.plays')): such a query sees every table's view.
_CATALOG_SCHEMAS = ("information_schema", "pg_catalog")
_CATALOG_FUNCTIONS = ("query", "query_table")


def _tables_read(sql: str) -> set[tuple[str, str]] | None:
    """The (schema, table) names a query reads, lower case, schema "" where not written; None for "every table".

    From DuckDB's parse tree (``json_serialize_sql``), never bound: binding would need the tables (and
    ``get_table_names`` binds, so a ``JOIN ... USING`` of tables it does not have fails). A CTE's name
    reads as a table too, which only costs a view. None where DuckDB cannot tell (a statement that
    does not serialize) and for a query of the catalog itself (``SHOW TABLES``, ``information_schema``).
    """
    try:
        with duckdb.connect() as con:
            [text] = con.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()
    except duckdb.Error:
        return None
    tree = json.loads(text)
    if tree.get("error"):
        return None
    found: set[tuple[str, str]] = set()
    nodes = [tree]
    while nodes:
        node = nodes.pop()
        if isinstance(node, dict):
            kind = node.get("type")
            if kind == "SHOW_REF" and not node.get("query"):  # SHOW TABLES; DESCRIBE/SUMMARIZE x carry x's query
                return None
            if kind == "TABLE_FUNCTION":
                function = str((node.get("function") or {}).get("function_name", "")).lower()
                if function in _CATALOG_FUNCTIONS or function.startswith(("duckdb_", "pragma_")):
                    return None
            if kind == "BASE_TABLE" and "table_name" in node:
                schema = (node.get("schema_name") or "").lower()
                if schema in _CATALOG_SCHEMAS:
                    return None
                found.add((schema, node["table_name"].lower()))
            nodes.extend(node.values())
        elif isinstance(node, list):
            nodes.extend(node)
    return found


def cmd_sql(args: argparse.Namespace) -> None:
    catalog = _catalog()
    con = _duckdb(catalog)
    as_of = timetravel.parse_time(args.as_of) if args.as_of else None
    reads = _tables_read(args.query)
    views = timetravel.create_views(con, catalog, as_of=as_of, snapshot_id=args.snapshot, reads=reads)
    if views.unreadable and reads is not None:  # the query reads them: no answer without them
        raise TableUnreadable("\n".join(views.unreadable.values()))
    for problem in views.unreadable.values():  # which tables the query reads is unknown: maybe not these
        print(f"sonik: warning: {problem}", file=sys.stderr)
    for found in views.inexact:  # only the tables this query reads: the others do not change its answer
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


def _check_quarantine(catalog) -> None:
    """A damaged quarantine is one line naming it, before PyIceberg plans it or DuckDB reads it."""
    try:
        table = load_table(catalog, PLAYS_REJECTED.identifier)
    except (NoSuchTableError, NoSuchNamespaceError):
        return
    if (current := table.current_snapshot()) is not None:
        timetravel.check_manifests(table, current)


def cmd_rejects(args: argparse.Namespace) -> None:
    catalog = _catalog()
    _check_quarantine(catalog)
    con = _duckdb(catalog)
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
    _check_quarantine(catalog)
    con = _duckdb(catalog)
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
        command = (
            "SONIK_SOURCE=landing dagster asset materialize -m sonik_pipeline.definitions --select plays --partition"
        )
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

    reattach = sub.add_parser(
        "reattach",
        parents=[formats],
        help="give the catalog back tables whose files are in the warehouse (after a lost or replaced catalog)",
    )
    reattach.add_argument("tables", nargs="*", help="e.g. music.plays (default: every lakehouse table it lacks)")
    reattach.add_argument("--metadata", help="the metadata.json to register (default: the table's newest)")
    reattach.add_argument(
        "--replace",
        action="store_true",
        help="the catalog has a new table created over the lost one: put the lost one back in its place "
        "(the new table's files become orphans)",
    )
    reattach.set_defaults(func=cmd_reattach)

    snapshots = sub.add_parser("snapshots", parents=[formats], help="a table's snapshots, with their Dagster run")
    snapshots.add_argument("table", help="e.g. music.plays")
    snapshots.set_defaults(func=cmd_snapshots)

    sql = sub.add_parser(
        "sql", parents=[formats], help="run one read-only SELECT in DuckDB over views of the lakehouse tables it reads"
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
        code = args.func(args)  # a command that found something wrong returns 1
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
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
