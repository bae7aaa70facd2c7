"""Jobs: the asset jobs over the daily partitions, and the table-maintenance jobs."""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.lakehouse import timetravel
from sonik_pipeline.lakehouse.deletion import UnsafeDeletion, check_table_location
from sonik_pipeline.lakehouse.marts import MARTS
from sonik_pipeline.lakehouse.tables import MUSIC
from sonik_pipeline.maintenance.compaction import CompactionOptions, compact_table
from sonik_pipeline.maintenance.expiry import DEFAULT_RETAIN_LAST, ExpiryOptions, expire_snapshots
from sonik_pipeline.maintenance.orphans import OrphanOptions, OrphanWindowTooShort, remove_orphan_files
from sonik_pipeline.resources import LakehouseCatalog

# Maintenance runs carry this tag; the instance allows one such run at a time (dagster_home/dagster.yaml),
# so two maintenance runs never work on the same table at once. Ingest runs are not limited by it.
MAINTENANCE_TAG = "sonik/maintenance"
MAINTENANCE_POOL = "iceberg_maintenance"
ROLLBACK_PRIORITY = 10
MAINTAINED_NAMESPACES = (MUSIC, MARTS)


def build_asset_jobs(plays: dg.AssetsDefinition, partitions: dg.PartitionsDefinition, freshness_checks) -> tuple:
    # Freshness is judged by its own sensor against the clock, not by the runs that backfill old days.
    not_freshness = dg.AssetSelection.all(include_sources=True) - dg.AssetSelection.checks(*freshness_checks)
    plays_job = dg.define_asset_job(
        "plays_job",
        selection=dg.AssetSelection.assets(plays) & not_freshness,
        partitions_def=partitions,
        description="Ingest play events into music.plays for the chosen days.",
    )
    daily_job = dg.define_asset_job(
        "daily_job",
        selection=dg.AssetSelection.assets(plays).downstream() & not_freshness,
        partitions_def=partitions,
        description="A day of plays and every mart over it, with their checks, in dependency order.",
    )
    return plays_job, daily_job


def _tables(catalog: Catalog, names: list[str]) -> list[Table]:
    """The named tables, or every table of the lakehouse's namespaces when none are named."""
    if not names:
        namespaces = {ns[0] for ns in catalog.list_namespaces()}
        names = [".".join(t) for ns in MAINTAINED_NAMESPACES if ns in namespaces for t in catalog.list_tables(ns)]
    return [catalog.load_table(name) for name in sorted(names)]


def _tables_to_clean(catalog: Catalog, names: list[str]) -> list[Table]:
    """The tables to delete files of, all checked to lie in the configured warehouse before any is touched."""
    tables = _tables(catalog, names)
    for table in tables:
        check_table_location(table)
    return tables


@contextmanager
def _refusals_as_failures() -> Iterator[None]:
    """A refused deletion fails the step with its one-line reason (nothing was deleted)."""
    try:
        yield
    except UnsafeDeletion as refused:
        raise dg.Failure(description=str(refused)) from None


class CompactionConfig(dg.Config):
    tables: list[str] = Field(default=[], description="Tables to compact, e.g. music.plays; empty: all tables.")
    target_file_size_mb: int | None = Field(
        default=None, description="Target file size in MiB; empty: the table's write.target-file-size-bytes."
    )
    min_input_files: int = Field(default=5, description="Rewrite a partition only with this many small files.")
    small_file_ratio: float = Field(default=0.75, description="A file is small below this share of the target.")
    skip_recent_days: int = Field(
        default=1, description="Leave partitions of the last N days alone (1: only days before today; 0: all)."
    )
    sort_by: list[str] = Field(
        default=["artist", "track_id"], description="Sort rows within files by these columns, where a table has them."
    )
    dry_run: bool = Field(default=False, description="Only report what would be rewritten.")


@dg.op(pool=MAINTENANCE_POOL, tags={"kind": "iceberg"})
def compact_tables(context: dg.OpExecutionContext, config: CompactionConfig, lakehouse: LakehouseCatalog) -> None:
    """Merge small data files into target-sized ones, one atomic commit per table."""
    today = dt.datetime.now(dt.UTC).date()
    options = CompactionOptions(
        target_file_size_bytes=config.target_file_size_mb * 1024 * 1024 if config.target_file_size_mb else None,
        small_file_ratio=config.small_file_ratio,
        min_input_files=config.min_input_files,
        days_before=today - dt.timedelta(days=config.skip_recent_days - 1) if config.skip_recent_days else None,
        sort_by=tuple(config.sort_by),
        dry_run=config.dry_run,
    )
    per_table = {}
    for table in _tables(lakehouse.load(), config.tables):
        report = compact_table(table, options, {"dagster.run-id": context.run.run_id}, progress=context.log.info)
        per_table[report.table] = {
            "partitions_rewritten": len(report.partitions),
            "files_before": report.files_before,
            "files_after": report.files_after,
            "bytes_before": report.bytes_before,
            "bytes_after": report.bytes_after,
            "snapshot_id": str(report.snapshot_id) if report.snapshot_id else None,
            "seconds": round(report.seconds, 3),
            "partitions": [p.partition for p in report.partitions],
        }
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            "partitions_rewritten": sum(t["partitions_rewritten"] for t in per_table.values()),
            "files_before": sum(t["files_before"] for t in per_table.values()),
            "files_after": sum(t["files_after"] for t in per_table.values()),
            "bytes_before": sum(t["bytes_before"] for t in per_table.values()),
            "bytes_after": sum(t["bytes_after"] for t in per_table.values()),
            "tables": dg.MetadataValue.json(per_table),
        }
    )


class ExpiryConfig(dg.Config):
    tables: list[str] = Field(default=[], description="Tables to clean; empty: all tables.")
    retention_days: float = Field(default=30, description="Expire snapshots older than this many days.")
    retain_last: int = Field(default=DEFAULT_RETAIN_LAST, description="Always keep this many newest snapshots.")
    dry_run: bool = Field(default=False, description="Only list what would be expired and deleted.")


class OrphanConfig(dg.Config):
    tables: list[str] = Field(default=[], description="Tables to clean; empty: all tables.")
    older_than_hours: float = Field(
        default=72,
        description="Delete unreferenced files only when older than this (protects in-flight writes); at least 24.",
    )
    i_know_no_writer_is_running: bool = Field(
        default=False,
        description="Allow a window under 24 hours: only when no ingest, mart or compaction run can be writing.",
    )
    dry_run: bool = Field(default=False, description="Only list what would be deleted.")


def _files_metadata(reports) -> dict:
    files, size = {}, {}
    for report in reports:
        for kind, count in report.files_deleted.items():
            files[kind] = files.get(kind, 0) + count
            size[kind] = size.get(kind, 0) + report.bytes_deleted[kind]
    return {
        "files_deleted": dg.MetadataValue.json(files),
        "bytes_deleted": dg.MetadataValue.json(size),
        "total_bytes_deleted": sum(size.values()),
    }


@dg.op(pool=MAINTENANCE_POOL, tags={"kind": "iceberg"})
def expire_table_snapshots(context: dg.OpExecutionContext, config: ExpiryConfig, lakehouse: LakehouseCatalog) -> None:
    """Expire snapshots past retention and delete the files only they reached."""
    options = ExpiryOptions(
        retention=dt.timedelta(days=config.retention_days), retain_last=config.retain_last, dry_run=config.dry_run
    )
    with _refusals_as_failures():
        tables = _tables_to_clean(lakehouse.load(), config.tables)
        reports = [expire_snapshots(t, options, progress=context.log.info) for t in tables]
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            "snapshots_expired": dg.MetadataValue.json({r.table: len(r.snapshots_expired) for r in reports}),
            **_files_metadata(reports),
        }
    )


@dg.op(pool=MAINTENANCE_POOL, tags={"kind": "iceberg"}, ins={"after": dg.In(dg.Nothing)})
def remove_orphans(context: dg.OpExecutionContext, config: OrphanConfig, lakehouse: LakehouseCatalog) -> None:
    """Delete files no metadata references (a crashed writer's leftovers), older than the safety window."""
    try:
        options = OrphanOptions(
            older_than=dt.timedelta(hours=config.older_than_hours),
            dry_run=config.dry_run,
            i_know_no_writer_is_running=config.i_know_no_writer_is_running,
        )
    except OrphanWindowTooShort as refused:
        raise dg.Failure(description=str(refused)) from None
    with _refusals_as_failures():
        tables = _tables_to_clean(lakehouse.load(), config.tables)
        reports = [remove_orphan_files(t, options, progress=context.log.info) for t in tables]
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            "orphans": dg.MetadataValue.json({r.table: r.deleted for r in reports if r.deleted}),
            "kept_in_flight": dg.MetadataValue.json({r.table: r.in_flight for r in reports if r.in_flight}),
            **_files_metadata(reports),
        }
    )


@dg.job(tags={MAINTENANCE_TAG: "compaction"}, description="Compact small data files of the lakehouse tables.")
def compaction_job() -> None:
    compact_tables()


@dg.job(
    tags={MAINTENANCE_TAG: "expiry"},
    description="Expire old snapshots (deleting what they alone reached), then remove orphan files.",
)
def expiry_job() -> None:
    remove_orphans(after=expire_table_snapshots())


class RollbackConfig(dg.Config):
    table: str = Field(description="The table to roll back, e.g. music.plays.")
    to_snapshot_id: int | None = Field(default=None, description="The snapshot to make current again.")
    as_of: str | None = Field(default=None, description="Or: the snapshot current at this time (ISO-8601, UTC).")


# Rollback is what a user reaches for in an emergency, so it takes no maintenance pool or tag: a stuck
# or dead compaction or expiry never holds it up. It is safe beside them: it is one optimistic Iceberg
# commit that requires main to be where it found it, so it never overwrites a concurrent commit (it fails
# and can be run again); compaction validates that the files it replaces are still live and aborts
# without committing when a rollback moved the table meanwhile; expiry asserts every branch and tag it
# planned around and plans again, so it never expires the snapshot a rollback just made current.
@dg.op(tags={"kind": "iceberg"})
def rollback_table(context: dg.OpExecutionContext, config: RollbackConfig, lakehouse: LakehouseCatalog) -> None:
    """Make an earlier snapshot current again (undo a bad ingest); the history stays for time travel."""
    if (config.to_snapshot_id is None) == (config.as_of is None):
        raise dg.Failure("give exactly one of to_snapshot_id or as_of")
    try:
        table = timetravel.load(lakehouse.load(), config.table)
        target = (
            timetravel.snapshot_by_id(table, config.to_snapshot_id)
            if config.to_snapshot_id is not None
            else timetravel.snapshot_as_of(
                table,
                timetravel.parse_time(config.as_of),
                f": list the snapshots with `sonik snapshots {config.table}` and set to_snapshot_id",
            )
        )
    except timetravel.TimeTravelError as exc:
        raise dg.Failure(str(exc)) from None
    result = timetravel.rollback(table, target)
    context.log.info(f"rolled back {result.table}: snapshot {result.before} -> {result.after}")
    context.add_output_metadata(
        {
            "table": result.table,
            "snapshot_before": str(result.before),
            "snapshot_after": str(result.after),
            "rows_after": int(target.summary.get("total-records") or 0) if target.summary else 0,
        }
    )


@dg.job(
    # Queued ahead of backfills and maintenance when the run queue is full: the higher priority goes first.
    tags={"dagster/priority": str(ROLLBACK_PRIORITY)},
    description="Roll a table back to an earlier snapshot (by id or time); the run records before and after.",
)
def rollback_job() -> None:
    rollback_table()
