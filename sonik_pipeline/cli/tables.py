"""``sonik tables``, ``reattach``, ``snapshots`` and ``rollback``: the tables, their history, putting either back."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from typing import TYPE_CHECKING

from sonik_pipeline.cli.common import UsageError, add_format_option, catalog_from_settings, print_rows

if TYPE_CHECKING:
    from sonik_pipeline.lakehouse.tables import attachment

# The same figures, under the same names, as the health the Dagster UI plots on each table's asset.
HEALTH_COLUMNS = (
    "data_files",
    "snapshots",
    "small_files",
    "avg_file_mb",
    "delete_files",
    "manifests",
    "oldest_snapshot_age_hours",
    "metadata_json_bytes",
    "data_bytes",
)
TABLE_COLUMNS = ("table", "rows", *HEALTH_COLUMNS, "last_commit")


def cmd_tables(args: argparse.Namespace) -> int:
    from sonik_pipeline.lakehouse.reads import timetravel
    from sonik_pipeline.lakehouse.tables import attachment
    from sonik_pipeline.lakehouse.tables.catalog import TableUnreadable, load_table
    from sonik_pipeline.lakehouse.tables.definitions import CODE_TABLES, lakehouse_table_names
    from sonik_pipeline.lakehouse.tables.health import table_health

    catalog = catalog_from_settings()
    rows: list[tuple] = []
    unreadable = []
    names = lakehouse_table_names(catalog)
    now = dt.datetime.now(dt.UTC)
    for name in names:
        try:
            table = load_table(catalog, name)
            manifests = None
            if (current := table.current_snapshot()) is not None:
                manifests = timetravel.check_manifests(table, current)  # health reads them: a damaged one is one line
            health = table_health(table, now, current_manifests=manifests)
        except TableUnreadable as exc:  # listed with empty figures; the others still are
            rows.append((name, *[None] * (len(TABLE_COLUMNS) - 1)))
            unreadable.append(str(exc))
            continue
        summary = current.summary if current else None
        rows.append(
            (
                name,
                int(summary.get("total-records") or 0) if summary else 0,
                *(getattr(health, figure) for figure in HEALTH_COLUMNS),
                timetravel.snapshot_rows(table)[-1].committed_at if current else "",
            )
        )
    print_rows(list(TABLE_COLUMNS), rows, args.format)
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
    from pyiceberg.exceptions import TableAlreadyExistsError

    from sonik_pipeline.lakehouse.tables import attachment
    from sonik_pipeline.lakehouse.tables.definitions import CODE_TABLES

    catalog = catalog_from_settings()
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
    from sonik_pipeline.lakehouse.tables import attachment

    if not replace or not catalog.table_exists(table.identifier):
        return attachment.newest_metadata(table)
    current = str(catalog.load_table(table.identifier).metadata.table_uuid)
    others = [f for f in table.metadata if str(attachment.read_metadata(catalog, f.location).table_uuid) != current]
    if not others:
        raise UsageError(f"{table.identifier}: no other table's metadata is at {table.location}: nothing to replace")
    return attachment.newest_metadata(dataclasses.replace(table, metadata=tuple(others)))


def cmd_snapshots(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.reads import timetravel

    table = timetravel.load(catalog_from_settings(), args.table)
    rows = [dataclasses.astuple(r) for r in timetravel.snapshot_rows(table)]
    columns = [f.name for f in dataclasses.fields(timetravel.SnapshotRow)]
    print_rows(columns, rows, args.format)


def cmd_rollback(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.reads import timetravel

    table = timetravel.load(catalog_from_settings(), args.table)
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


def register(sub: argparse._SubParsersAction) -> None:
    tables = sub.add_parser("tables", help="list the lakehouse tables")
    add_format_option(tables)
    tables.set_defaults(func=cmd_tables)

    reattach = sub.add_parser(
        "reattach",
        help="give the catalog back tables whose files are in the warehouse (after a lost or replaced catalog)",
    )
    add_format_option(reattach)
    reattach.add_argument("tables", nargs="*", help="e.g. music.plays (default: every lakehouse table it lacks)")
    reattach.add_argument("--metadata", help="the metadata.json to register (default: the table's newest)")
    reattach.add_argument(
        "--replace",
        action="store_true",
        help="the catalog has a new table created over the lost one: put the lost one back in its place "
        "(the new table's files become orphans)",
    )
    reattach.set_defaults(func=cmd_reattach)

    snapshots = sub.add_parser("snapshots", help="a table's snapshots, with their Dagster run")
    add_format_option(snapshots)
    snapshots.add_argument("table", help="e.g. music.plays")
    snapshots.set_defaults(func=cmd_snapshots)
    back = sub.add_parser("rollback", help="make an earlier snapshot of a table current again")
    back.add_argument("table", help="e.g. music.plays")
    target = back.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", type=int, help="the snapshot id to return to")
    target.add_argument("--as-of", help="return to the snapshot current at this time (ISO-8601)")
    back.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    back.set_defaults(func=cmd_rollback)
