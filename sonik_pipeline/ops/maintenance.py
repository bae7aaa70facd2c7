"""Table-maintenance ops and their launchpad config: compaction, manifest rewriting, expiry, orphan removal.

Each op runs one maintenance step over every lakehouse table (or the ones named), reports per table in
its metadata, and runs in the ``iceberg_maintenance`` pool, so two never work on the tables at once.
"""

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
from pydantic import Field
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.tables.definitions import lakehouse_table_names
from sonik_pipeline.lakehouse.tables.deletion import UnsafeDeletion, check_table_location
from sonik_pipeline.maintenance.compaction import CompactionOptions
from sonik_pipeline.maintenance.expiry import ExpiryOptions
from sonik_pipeline.maintenance.manifests import ManifestRewriteOptions
from sonik_pipeline.maintenance.orphans import OrphanOptions, OrphanWindowTooShort
from sonik_pipeline.resources import LakehouseCatalog, LakehouseEngine
from sonik_pipeline.table_health import observe_health

# Maintenance runs carry this tag; the instance allows one such run at a time (dagster_home/dagster.yaml),
# so two maintenance runs never work on the same table at once. Ingest runs are not limited by it.
MAINTENANCE_TAG = "sonik/maintenance"
MAINTENANCE_POOL = "iceberg_maintenance"
MIB = 1024 * 1024
SCHEDULED_TIME_TAG = "dagster/scheduled_execution_time"


def run_date(context: dg.OpExecutionContext) -> dt.date:
    """The UTC date a run is for: its schedule tick's when scheduled (so a late run acts as planned), else today."""
    scheduled = context.run.tags.get(SCHEDULED_TIME_TAG)
    when = dt.datetime.fromisoformat(scheduled) if scheduled else dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).date()


def _tables(catalog: Catalog, names: list[str]) -> list[Table]:
    """The named tables, or every table of the lakehouse when none are named."""
    return [catalog.load_table(name) for name in sorted(names or lakehouse_table_names(catalog))]


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


def _run_properties(context: dg.OpExecutionContext) -> dict[str, str]:
    return {"dagster.run-id": context.run.run_id}


def _health_after(context: dg.OpExecutionContext, catalog: Catalog, tables: list[Table]) -> dict:
    """The tables' health after the step (plotted on their assets), for the step's metadata too."""
    reloaded = [catalog.load_table(table.name()) for table in tables]
    return {"health": dg.MetadataValue.json(observe_health(context, reloaded))}


# ---------------------------------------------------------------------------------------------
# Compaction
# ---------------------------------------------------------------------------------------------


# The compaction policy lives in CompactionOptions; the launchpad's defaults are read from it.
COMPACTION_DEFAULTS = CompactionOptions()


class CompactionConfig(dg.Config):
    tables: list[str] = Field(default=[], description="Tables to compact, e.g. music.plays; empty: all tables.")
    target_file_size_mb: int | None = Field(
        default=None, description="Target file size in MiB; empty: the table's write.target-file-size-bytes."
    )
    min_input_files: int = Field(
        default=COMPACTION_DEFAULTS.min_input_files, description="Rewrite a partition only with this many small files."
    )
    small_file_ratio: float = Field(
        default=COMPACTION_DEFAULTS.small_file_ratio, description="A file is small below this share of the target."
    )
    skip_recent_days: int = Field(
        default=1, description="Leave partitions of the last N days alone (1: only days before today; 0: all)."
    )
    sort_by: list[str] = Field(
        default=["artist", "track_id"], description="Sort rows within files by these columns, where a table has them."
    )
    max_file_group_size_mb: int = Field(
        default=COMPACTION_DEFAULTS.max_file_group_size_bytes // MIB,
        description="Rewrite a partition's small files in groups of at most this many MiB, each verified on its own.",
    )
    partial_progress: bool = Field(
        default=False,
        description="Commit finished file groups as it goes, so a late failure keeps earlier work (else one "
        "commit per table).",
    )
    partial_progress_max_commits: int = Field(
        default=COMPACTION_DEFAULTS.partial_progress_max_commits,
        description="With partial_progress: at most this many commits.",
    )
    sort_memory_limit: str = Field(
        default=COMPACTION_DEFAULTS.sort_memory_limit,
        description="DuckDB memory for sorting a group; beyond it, it spills.",
    )
    dry_run: bool = Field(default=False, description="Only report what would be rewritten.")


@dg.op(pool=MAINTENANCE_POOL, tags={"kind": "iceberg"})
def compact_tables(
    context: dg.OpExecutionContext, config: CompactionConfig, lakehouse: LakehouseCatalog, engine: LakehouseEngine
) -> None:
    """Merge small data files into target-sized ones, in verified file groups."""
    first_kept = run_date(context) - dt.timedelta(days=config.skip_recent_days - 1)
    options = CompactionOptions(
        target_file_size_bytes=config.target_file_size_mb * MIB if config.target_file_size_mb else None,
        small_file_ratio=config.small_file_ratio,
        min_input_files=config.min_input_files,
        days_before=first_kept if config.skip_recent_days else None,
        sort_by=tuple(config.sort_by),
        max_file_group_size_bytes=config.max_file_group_size_mb * MIB,
        partial_progress=config.partial_progress,
        partial_progress_max_commits=config.partial_progress_max_commits,
        sort_memory_limit=config.sort_memory_limit,
        dry_run=config.dry_run,
    )
    per_table = {}
    catalog = lakehouse.load()
    tables = _tables(catalog, config.tables)
    for table in tables:
        report = engine.engine().compact(table, options, _run_properties(context), context.log.info)
        per_table[report.table] = {
            "partitions_rewritten": len(report.partitions),
            "file_groups": report.groups,
            "file_groups_committed": report.groups_committed,
            "files_before": report.files_before,
            "files_after": report.files_after,
            "bytes_before": report.bytes_before,
            "bytes_after": report.bytes_after,
            "rows_verified": report.rows_verified,
            "snapshot_ids": [str(s) for s in report.snapshot_ids],
            "seconds": round(report.seconds, 3),
            "partitions": [p.partition for p in report.partitions],
        }
    totals = ("partitions_rewritten", "file_groups", "files_before", "files_after", "bytes_before", "bytes_after")
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            **{key: sum(t[key] for t in per_table.values()) for key in (*totals, "rows_verified")},
            "tables": dg.MetadataValue.json(per_table),
            **_health_after(context, catalog, tables),
        }
    )


# ---------------------------------------------------------------------------------------------
# Manifest rewriting
# ---------------------------------------------------------------------------------------------


class ManifestRewriteConfig(dg.Config):
    tables: list[str] = Field(default=[], description="Tables whose manifests to rewrite; empty: all tables.")
    target_size_mb: float | None = Field(
        default=None, description="Manifest size in MiB; empty: the table's commit.manifest.target-size-bytes (8)."
    )
    dry_run: bool = Field(default=False, description="Only report how many manifests there are and would be.")


@dg.op(pool=MAINTENANCE_POOL, tags={"kind": "iceberg"})
def rewrite_table_manifests(
    context: dg.OpExecutionContext, config: ManifestRewriteConfig, lakehouse: LakehouseCatalog, engine: LakehouseEngine
) -> None:
    """Rewrite each table's manifests clustered by partition and sized, in one verified commit that changes no data."""
    options = ManifestRewriteOptions(
        target_size_bytes=int(config.target_size_mb * MIB) if config.target_size_mb else None, dry_run=config.dry_run
    )
    per_table = {}
    catalog = lakehouse.load()
    tables = _tables(catalog, config.tables)
    for table in tables:
        report = engine.engine().rewrite_manifests(table, options, _run_properties(context), context.log.info)
        per_table[report.table] = {
            "manifests_before": report.manifests_before,
            "manifests_after": report.manifests_after,
            "manifest_bytes_before": report.bytes_before,
            "manifest_bytes_after": report.bytes_after,
            "manifests_kept": report.manifests_kept,  # settled months, left as they were
            "data_files_in_rewritten_manifests": report.entries,
            "snapshot_id": str(report.snapshot_id) if report.snapshot_id else None,
            "skipped": report.skipped,
            "seconds": round(report.seconds, 3),
        }
    totals = ("manifests_before", "manifests_after", "manifests_kept", "manifest_bytes_before", "manifest_bytes_after")
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            **{key: sum(t[key] for t in per_table.values()) for key in totals},
            "tables_rewritten": sum(1 for t in per_table.values() if t["snapshot_id"]),
            "tables": dg.MetadataValue.json(per_table),
            **_health_after(context, catalog, tables),
        }
    )


# ---------------------------------------------------------------------------------------------
# Snapshot expiry and orphan removal
# ---------------------------------------------------------------------------------------------


class ExpiryConfig(dg.Config):
    tables: list[str] = Field(default=[], description="Tables to clean; empty: all tables.")
    retention_days: float | None = Field(
        default=None,
        description="Expire snapshots older than this many days; empty: the table's history.expire.max-snapshot-age-ms "
        "(30 days).",
    )
    retain_last: int | None = Field(
        default=None,
        description="Always keep this many newest snapshots; empty: the table's history.expire.min-snapshots-to-keep "
        "(5).",
    )
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


def _deletion_summary(what: str, reports, dry_run: bool) -> str:
    """One line for the run's log (what `dagster job execute` shows): files and bytes deleted, by table."""
    touched = [r for r in reports if r.files_deleted]
    files = sum(sum(r.files_deleted.values()) for r in reports)
    size = sum(sum(r.bytes_deleted.values()) for r in reports)
    verb = "would delete" if dry_run else "deleted"
    tables = ", ".join(f"{r.table} {sum(r.files_deleted.values())}" for r in touched) or "none"
    return f"{what}: {verb} {files} files ({size:,} B) in {len(reports)} tables; by table: {tables}"


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
def expire_table_snapshots(
    context: dg.OpExecutionContext, config: ExpiryConfig, lakehouse: LakehouseCatalog, engine: LakehouseEngine
) -> None:
    """Expire snapshots past retention and delete the files only they reached."""
    options = ExpiryOptions(
        retention=dt.timedelta(days=config.retention_days) if config.retention_days is not None else None,
        retain_last=config.retain_last,
        dry_run=config.dry_run,
    )
    catalog = lakehouse.load()
    with _refusals_as_failures():
        tables = _tables_to_clean(catalog, config.tables)
        reports = [engine.engine().expire_snapshots(t, options, context.log.info) for t in tables]
    expired = sum(len(r.snapshots_expired) for r in reports)
    context.log.info(_deletion_summary(f"expiry ({expired} snapshots expired)", reports, config.dry_run))
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            "snapshots_expired": dg.MetadataValue.json({r.table: len(r.snapshots_expired) for r in reports}),
            **_files_metadata(reports),
            **_health_after(context, catalog, tables),
        }
    )


@dg.op(pool=MAINTENANCE_POOL, tags={"kind": "iceberg"})
def remove_orphans(
    context: dg.OpExecutionContext, config: OrphanConfig, lakehouse: LakehouseCatalog, engine: LakehouseEngine
) -> None:
    """Delete files no metadata references (a crashed writer's leftovers), older than the safety window."""
    try:
        options = OrphanOptions(
            older_than=dt.timedelta(hours=config.older_than_hours),
            dry_run=config.dry_run,
            i_know_no_writer_is_running=config.i_know_no_writer_is_running,
        )
    except OrphanWindowTooShort as refused:
        raise dg.Failure(description=str(refused)) from None
    catalog = lakehouse.load()
    with _refusals_as_failures():
        tables = _tables_to_clean(catalog, config.tables)
        try:
            reports = [engine.engine().remove_orphan_files(t, options, context.log.info) for t in tables]
        except OrphanWindowTooShort as refused:  # an engine's own floor (Spark's is 24 hours)
            raise dg.Failure(description=str(refused)) from None
    context.log.info(_deletion_summary("orphan removal", reports, config.dry_run))
    context.add_output_metadata(
        {
            "dry_run": config.dry_run,
            "orphans": dg.MetadataValue.json({r.table: r.deleted for r in reports if r.deleted}),
            "kept_in_flight": dg.MetadataValue.json({r.table: r.in_flight for r in reports if r.in_flight}),
            **_files_metadata(reports),
            **_health_after(context, catalog, tables),
        }
    )
