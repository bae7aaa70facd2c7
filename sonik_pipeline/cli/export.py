"""``sonik export``: training sets that can be made again, their snapshots kept from expiry by a tag."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

from sonik_pipeline.cli.common import (
    UsageError,
    add_format_option,
    catalog_from_settings,
    day_argument,
    print_rows,
)

if TYPE_CHECKING:
    import duckdb

    from sonik_pipeline.lakehouse.exports.training_sets import ExportManifest


def _duckdb() -> duckdb.DuckDBPyConnection:
    """DuckDB for the sort, held to SONIK_DUCKDB_MEMORY_LIMIT (past it, it spills) as the Dagster steps are."""
    import duckdb

    from sonik_pipeline.settings import Settings

    return duckdb.connect(config={"memory_limit": Settings.from_env().duckdb_memory_limit})


def _print_files(manifest: ExportManifest, fmt: str) -> None:
    rows = [(f.name, f.rows, f.bytes, f.sha256) for f in manifest.files]
    print_rows(["file", "rows", "bytes", "sha256"], rows, fmt)


def _count(items, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _columns(text: str | None) -> list[str] | None:
    if text is None:
        return None
    columns = [c.strip() for c in text.split(",")]
    if not all(columns):
        raise UsageError(f"--columns {text!r}: give column names separated by commas, e.g. user_id,track_id")
    return columns


def _refuse_with(args: argparse.Namespace, mode: str, allowed: set[str]) -> None:
    """One mode at a time: the options another mode takes are refused rather than ignored."""
    given = {
        "TABLE": args.table,
        "--start": args.start,
        "--end": args.end,
        "--out": args.out,
        "--columns": args.columns,
        "--snapshot": args.snapshot,
        "--as-of": args.as_of,
        "--name": args.name,
    }
    extra = [option for option, value in given.items() if value is not None and option not in allowed]
    if extra:
        raise UsageError(f"{mode} takes no {', '.join(extra)}")


def cmd_export(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.exports.training_sets import ExportError

    try:
        _export(args)
    except ExportError as exc:
        raise UsageError(str(exc)) from None


def _export(args: argparse.Namespace) -> None:
    from sonik_pipeline.lakehouse.days import format_days
    from sonik_pipeline.lakehouse.exports import training_sets
    from sonik_pipeline.lakehouse.reads import timetravel

    if args.list:
        _refuse_with(args, "--list", set())
        records = training_sets.list_exports(catalog_from_settings())
        columns = [f.name for f in dataclasses.fields(training_sets.ExportRecord)]
        print_rows(columns, [dataclasses.astuple(r) for r in records], args.format)
        return
    if args.release:
        _refuse_with(args, "--release", set())
        record = training_sets.release_export(catalog_from_settings(), args.release)
        print(
            f"released {args.release}: tag {training_sets.TAG_PREFIX}{args.release} dropped; snapshot "
            f"{record.snapshot_id} of {record.table} now expires like any other (the files written stay)"
        )
        return
    if args.from_manifest:
        _refuse_with(args, "--from-manifest", {"--out"})
        if args.out is None:
            raise UsageError("--from-manifest needs --out DIR: the folder to make the dataset again in")
        with _duckdb() as con:
            done = training_sets.reexport(catalog_from_settings(), args.from_manifest, args.out, con=con)
        manifest = done.manifest
        _print_files(manifest, args.format)
        kept = "its tag still keeps the snapshot" if done.tag_held else "its tag was released: it may expire"
        print(
            f"made {manifest.name} again in {done.out}: {manifest.rows:,} rows of {manifest.table} at snapshot "
            f"{manifest.snapshot_id}, every sha256 equal to the manifest's ({_count(manifest.files, 'file')}); {kept}"
        )
        return
    missing = [option for option, value in (("TABLE", args.table), ("--start", args.start), ("--end", args.end),
                                            ("--out", args.out)) if value is None]  # fmt: skip
    if missing:
        raise UsageError(f"export needs {', '.join(missing)} (or --list, --release NAME, --from-manifest M)")
    as_of = timetravel.parse_time(args.as_of) if args.as_of else None
    with _duckdb() as con:
        manifest = training_sets.export_dataset(
            catalog_from_settings(),
            args.table,
            args.start,
            args.end,
            args.out,
            columns=_columns(args.columns),
            snapshot_id=args.snapshot,
            as_of=as_of,
            name=args.name,
            con=con,
        )
    _print_files(manifest, args.format)
    print(
        f"exported {manifest.name}: {manifest.rows:,} rows of {manifest.table} "
        f"({format_days(manifest.first_day, manifest.last_day)}) at snapshot {manifest.snapshot_id} to {args.out}; "
        f"tag {manifest.tag} keeps that snapshot from expiry "
        f"(sonik export --release {manifest.name} lets it go)"
    )


def register(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser(
        "export",
        help="write a table's days at one snapshot as Parquet files and a manifest, made again byte for byte",
        description="Write a training set: a table's rows for whole UTC days at one snapshot, as Parquet files "
        "and a manifest.json; an Iceberg tag export-NAME keeps that snapshot from expiry until released.",
    )
    add_format_option(export)
    export.add_argument("table", nargs="?", help="music.plays or a mart, e.g. music_marts.user_track_interactions")
    export.add_argument("--start", type=day_argument, help="first day (YYYY-MM-DD)")
    export.add_argument("--end", type=day_argument, help="last day, included (YYYY-MM-DD)")
    export.add_argument("--out", help="the folder to write, new or empty: a local path or s3://bucket/prefix")
    export.add_argument("--columns", help="the columns to write, e.g. user_id,track_id,plays (default: all)")
    when = export.add_mutually_exclusive_group()
    when.add_argument("--snapshot", type=int, help="read this snapshot id (default: the current one)")
    when.add_argument("--as-of", help="read the snapshot current at this time (ISO-8601, UTC by default)")
    export.add_argument("--name", help="the dataset's name, and its tag's: export-NAME (default: table-days-snapshot)")
    mode = export.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="list the exports whose tag keeps their snapshot")
    mode.add_argument("--release", metavar="NAME", help="drop export NAME's tag, so its snapshot can expire")
    mode.add_argument("--from-manifest", metavar="M", help="make the dataset of manifest M again in --out, verified")
    export.set_defaults(func=cmd_export)
