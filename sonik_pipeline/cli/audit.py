"""``sonik diff`` and ``sonik history``: what changed in a table between two snapshots, and one day's commits."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING

from sonik_pipeline.cli.common import add_format_option, catalog_from_settings, day_argument, print_rows

if TYPE_CHECKING:
    from sonik_pipeline.lakehouse.reads import audit

DAY_COLUMNS = [
    "day",
    "rows_before",
    "rows_after",
    "rows_change",
    "files_before",
    "files_after",
    "files_added",
    "files_removed",
    "runs",
]


def _header(result: audit.TableDiff) -> str:
    start = f"snapshot {result.from_snapshot}" if result.from_snapshot is not None else "(before its first commit)"
    commits = len(result.commits)
    return (
        f"{result.table}: {start} -> snapshot {result.to_snapshot}; lineage {result.lineage}; "
        f"{commits} commit{'s' if commits != 1 else ''} between; {len(result.days)} day"
        f"{'s' if len(result.days) != 1 else ''} changed"
    )


def cmd_diff(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.reads import audit, timetravel

    table = timetravel.load(catalog_from_settings(), args.table)
    result = audit.diff(table, args.from_, args.to)
    for warning in result.warnings:
        print(f"sonik: warning: {warning}", file=sys.stderr)
    if args.format == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    rows = [
        (
            d.day.isoformat() if d.day else "(not by day)",
            d.rows_before,
            d.rows_after,
            f"{d.rows_change:+d}",
            d.files_before,
            d.files_after,
            d.files_added,
            d.files_removed,
            "; ".join(c.describe() for c in d.commits),
        )
        for d in result.days
    ]
    if args.format == "csv":  # the days alone, so the output stays one CSV; the rest to stderr
        print_rows(DAY_COLUMNS, rows, "csv")
        if result.note:
            print(f"sonik: note: {result.note}", file=sys.stderr)
        for change in result.schema_changes:
            print(f"sonik: note: schema: {_schema_line(change)}", file=sys.stderr)
        return
    print(_header(result))
    if result.note:
        print(f"note: {result.note}")
    print_rows(DAY_COLUMNS, rows, "table")
    if result.schema_changes:
        print("schema changes:")
        columns = [f.name for f in dataclasses.fields(audit.SchemaChange)]
        print_rows(columns, [dataclasses.astuple(c) for c in result.schema_changes], "table")


def _schema_line(change: audit.SchemaChange) -> str:
    if change.kind == "added":
        return f"added {change.field} ({change.after})"
    if change.kind == "dropped":
        return f"dropped {change.field} ({change.before})"
    return f"{change.kind} {change.field}: {change.before} -> {change.after}"


def cmd_history(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.reads import audit, timetravel

    table = timetravel.load(catalog_from_settings(), args.table)
    changes = audit.day_history(table, args.day)
    columns = [f.name for f in dataclasses.fields(audit.DayChange)]
    print_rows(columns, [dataclasses.astuple(c) for c in changes], args.format)


def register(sub: argparse._SubParsersAction) -> None:
    diff = sub.add_parser(
        "diff", help="what changed in a table between two snapshots or times: per day, and which runs changed it"
    )
    add_format_option(diff)
    diff.add_argument("table", help="e.g. music.plays")
    diff.add_argument(
        "--from", dest="from_", required=True, help="a snapshot id or a time (ISO-8601, UTC without an offset)"
    )
    diff.add_argument("--to", help="a snapshot id or a time (default: the current snapshot)")
    diff.set_defaults(func=cmd_diff)

    history = sub.add_parser("history", help="every snapshot (and rollback) that changed one day of a table")
    add_format_option(history)
    history.add_argument("table", help="e.g. music.plays")
    history.add_argument("--day", type=day_argument, required=True, help="the day, YYYY-MM-DD")
    history.set_defaults(func=cmd_history)
