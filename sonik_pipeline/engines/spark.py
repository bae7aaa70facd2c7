"""The Spark engine: ingest and the marts on Spark, table maintenance by Iceberg's own Spark implementation.

Compaction and manifest rewriting run Iceberg's Spark actions (what ``rewrite_data_files`` and
``rewrite_manifests`` call), which take snapshot properties: their commits carry ``dagster.run-id`` like
every other commit of the lineage. Through Spark Connect the JVM is the server's, so there the SQL
procedures run instead, without those properties. Expiry and orphan removal call ``expire_snapshots`` and
``remove_orphan_files``. Every call takes the same options the local engine takes, and the reports are
read from the results and the commits' manifests. Ingest runs the project's validator in Spark's executors
(``spark_ingest.py``); the marts run on Spark SQL (``spark_marts.py``).

What the project keeps on this engine: the ops check that every table lies inside the warehouse before
an engine is asked (a copied lakehouse is refused); orphan removal lets Spark find the unreferenced files
(a dry run) and deletes them through the lakehouse's one deletion rule, after refusing a location that
holds another table's metadata; a dry run of compaction or expiry is the local engine's plan, as Spark has
none. What differs, as Iceberg's implementation works: expiry's files are deleted by Spark itself (every
file the expired snapshots alone reached), and old ``metadata.json`` files are left to Iceberg's
``write.metadata.delete-after-commit`` settings; a rewrite is checked by its row counts per partition after
Spark committed it (Spark validates the rewrite itself; the local engine checksums the rows before its
commit); and Spark's own planning also splits files above 1.8x the target, so a dry run (the local plan)
may show fewer partitions than Spark rewrites.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pyiceberg.catalog import Catalog
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.types import DateType, TimestampType, TimestamptzType

from sonik_pipeline.engines.base import DuckDBConnect, Progress
from sonik_pipeline.engines.local import LocalEngine
from sonik_pipeline.engines.spark_ingest import ingest_days_on_spark
from sonik_pipeline.engines.spark_marts import build_marts_on_spark
from sonik_pipeline.lakehouse.days import is_day_field
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_string
from sonik_pipeline.lakehouse.ingest.run import DayIngestResult, IngestOptions, IngestTables
from sonik_pipeline.lakehouse.marts.queries import Mart
from sonik_pipeline.lakehouse.marts.run import MartOptions, MartReport
from sonik_pipeline.lakehouse.sources.day_sources import DaySource, LandingDays
from sonik_pipeline.lakehouse.tables.catalog import table_name
from sonik_pipeline.maintenance.compaction import (
    CompactionOptions,
    CompactionReport,
    PartitionRewrite,
    compact_table,
    describe_partition,
    sort_columns,
)
from sonik_pipeline.maintenance.expiry import ExpiryOptions, ExpiryReport, expire_snapshots
from sonik_pipeline.maintenance.files import (
    DATA,
    DELETE,
    MANIFEST,
    MANIFEST_LIST,
    STATISTICS,
    check_keys_deletable,
    delete_files,
    file_key,
    kind_of_unreferenced,
    stat_files,
)
from sonik_pipeline.maintenance.manifests import ManifestRewriteOptions, ManifestRewriteReport
from sonik_pipeline.maintenance.orphans import OrphanOptions, OrphanReport, OrphanWindowTooShort, refuse_other_tables

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)
MANIFEST_SIZE = "commit.manifest.target-size-bytes"
SPARK_ORPHAN_FLOOR = dt.timedelta(hours=24)  # remove_orphan_files refuses a shorter window


class SparkEngine(LocalEngine):
    """Maintenance through a Spark session whose catalog ``catalog_name`` is this lakehouse's catalog."""

    name = "spark"

    def __init__(self, session: Callable[[], SparkSession], catalog_name: str) -> None:
        self._session = session  # started on first use: a run that only ingests never starts a JVM
        self._catalog = catalog_name

    @contextmanager
    def _fresh_session(self, before: Sequence[str] = (), after: Sequence[str] = ()) -> Iterator[SparkSession]:
        """A session of its own for one operation: ``before`` run first, ``after`` run last (even on failure).

        Each operation opens the catalog afresh and closes it after: Iceberg's JDBC catalog keeps a read open
        on SQLite between statements, which would make its next commit fail once the local engine has
        committed in between (SQLITE_BUSY_SNAPSHOT). ``newSession`` shares the context (no new JVM, no
        new executors) and costs milliseconds.
        """
        session = self._session().newSession()
        try:
            for statement in before:
                session.sql(statement).collect()
            try:
                yield session
            finally:
                for statement in after:
                    session.sql(statement).collect()
        finally:
            _close_catalog(session, self._catalog)

    def _call(
        self, procedure: str, *, before: Sequence[str] = (), after: Sequence[str] = (), **arguments: str
    ) -> list[dict[str, Any]]:
        """``CALL <catalog>.system.<procedure>(name => value, ...)`` in a fresh session; its result rows."""
        named = ", ".join(f"{name} => {value}" for name, value in arguments.items())
        with self._fresh_session(before, after) as session:
            rows = session.sql(f"CALL {self._catalog}.system.{procedure}({named})").collect()
        return [row.asDict() for row in rows]

    # -- ingest ---------------------------------------------------------------------------------

    def ingest_days(
        self,
        catalog: Catalog,
        source: DaySource,
        days: Sequence[dt.date],
        options: IngestOptions,
        days_per_commit: int,
        progress: Progress,
    ) -> Iterator[DayIngestResult]:
        # Every table exists before Spark opens the catalog (see ``build_marts_on_spark``).
        tables = IngestTables.ensure(catalog, progress)
        if isinstance(source, LandingDays):
            tables.sources()
        with self._fresh_session() as session:
            yield from ingest_days_on_spark(
                session, self._catalog, tables, source, days, options, days_per_commit, progress
            )

    # -- marts ----------------------------------------------------------------------------------

    def build_marts(
        self,
        catalog: Catalog,
        marts: Sequence[Mart],
        days: Sequence[dt.date],
        options: MartOptions,
        duckdb: DuckDBConnect,
        progress: Progress,
    ) -> Iterator[MartReport]:
        with self._fresh_session() as session:  # DuckDB is not used: Spark computes
            yield from build_marts_on_spark(session, self._catalog, catalog, marts, days, options, progress)

    # -- compaction -----------------------------------------------------------------------------

    def compact(
        self, table: Table, options: CompactionOptions, snapshot_properties: Mapping[str, str], progress: Progress
    ) -> CompactionReport:
        if options.dry_run:  # Spark's procedure has no dry run: the same policy, planned locally
            return compact_table(table, options, dict(snapshot_properties), progress=progress)
        started = time.monotonic()
        name = table_name(table)
        before = {s.snapshot_id for s in table.snapshots()}
        current = table.current_snapshot()
        as_it_was = str(current.snapshot_id) if current else "none (it was empty)"
        rewrite = _rewrite_options(table, options)
        sort_order = list(sort_columns(table, options))  # the table's own sort order first, as locally
        before_day = _days_before(table, options.days_before) if options.days_before else None
        properties = {**snapshot_properties, "sonik.operation": "compaction", "sonik.engine": self.name}
        row = self._rewrite_data_files(name, rewrite, sort_order, before_day, properties)
        table.refresh()
        report = CompactionReport(table=name)
        report.snapshot_ids = [
            s.snapshot_id
            for s in table.snapshots()
            if s.snapshot_id not in before and s.summary is not None and s.summary.operation.value == "replace"
        ]
        report.partitions = _rewrites_by_partition(table, report.snapshot_ids)
        report.groups = sum(p.groups for p in report.partitions)  # Spark's file groups are per partition here
        report.groups_committed = report.groups
        report.seconds = time.monotonic() - started
        progress(
            f"{name}: Spark rewrote {row['rewritten_data_files_count']} data files "
            f"({row['rewritten_bytes_count']:,} B) into {row['added_data_files_count']} "
            f"in {len(report.snapshot_ids)} commits"
        )
        unequal = [p.partition for p in report.partitions if p.rows_verified != p.rows]
        if unequal:  # Spark has committed: say which snapshot holds the table as it was, rather than guess
            raise RuntimeError(
                f"{name}: Spark's rewrite changed the row counts of partitions {unequal} (snapshots "
                f"{report.snapshot_ids}); the table as it was is snapshot {as_it_was}: "
                "`sonik rollback` restores it"
            )
        return report

    def _rewrite_data_files(
        self,
        name: str,
        rewrite: Mapping[str, str],
        sort_order: Sequence[str],
        before_day: tuple[str, str, str] | None,
        properties: Mapping[str, str],
    ) -> dict[str, Any]:
        """Iceberg's rewrite action, which takes snapshot properties (``dagster.run-id`` in the lineage); through
        Spark Connect, where the JVM is the server's, the ``rewrite_data_files`` procedure, which takes none."""
        if not _reaches_the_jvm(self._session()):
            arguments = {"table": sql_string(name), "options": _map(rewrite)}
            if sort_order:
                arguments["strategy"] = sql_string("sort")
                arguments["sort_order"] = sql_string(", ".join(f"{c} ASC NULLS LAST" for c in sort_order))
            if before_day:
                column, literal, iso = before_day
                arguments["where"] = sql_string(f"{column} < {literal} '{iso}'")
            [row] = self._call("rewrite_data_files", **arguments)
            return row
        with self._fresh_session() as session:
            iceberg, table, actions = self._java(session, name)
            action = actions.rewriteDataFiles(table)
            for key, value in rewrite.items():
                action = action.option(key, value)
            if sort_order:
                order = iceberg.SortOrder.builderFor(table.schema())
                for column in sort_order:
                    order = order.asc(column, iceberg.NullOrder.NULLS_LAST)
                action = action.sort(order.build())
            if before_day:
                column, _, iso = before_day
                action = action.filter(iceberg.expressions.Expressions.lessThan(column, iso))
            for key, value in properties.items():
                action = action.snapshotProperty(key, value)
            result = action.execute()
            return {
                "rewritten_data_files_count": result.rewrittenDataFilesCount(),
                "added_data_files_count": result.addedDataFilesCount(),
                "rewritten_bytes_count": result.rewrittenBytesCount(),
            }

    def _rewrite_manifests(
        self, name: str, before: Sequence[str], after: Sequence[str], properties: Mapping[str, str]
    ) -> dict[str, Any]:
        """Iceberg's manifest-rewrite action with snapshot properties; through Spark Connect, the procedure."""
        if not _reaches_the_jvm(self._session()):
            [row] = self._call("rewrite_manifests", before=before, after=after, table=sql_string(name))
            return row
        with self._fresh_session(before, after) as session:
            iceberg, table, actions = self._java(session, name)
            action = actions.rewriteManifests(table)
            for key, value in properties.items():
                action = action.snapshotProperty(key, value)
            result = action.execute()
            count = iceberg.relocated.com.google.common.collect.Iterables.size
            return {
                "rewritten_manifests_count": count(result.rewrittenManifests()),
                "added_manifests_count": count(result.addedManifests()),
            }

    def _java(self, session: SparkSession, name: str) -> tuple[Any, Any, Any]:
        """Iceberg's Java package, the table as Iceberg's Java API loads it, and Spark's actions on it."""
        iceberg = session._jvm.org.apache.iceberg
        table = iceberg.spark.Spark3Util.loadIcebergTable(session._jsparkSession, f"{self._catalog}.{name}")
        return iceberg, table, iceberg.spark.actions.SparkActions.get(session._jsparkSession)

    # -- manifests ------------------------------------------------------------------------------

    def rewrite_manifests(
        self, table: Table, options: ManifestRewriteOptions, snapshot_properties: Mapping[str, str], progress: Progress
    ) -> ManifestRewriteReport:
        started = time.monotonic()
        name = table_name(table)
        report = ManifestRewriteReport(table=name, dry_run=options.dry_run)
        current = table.current_snapshot()
        if current is None:
            report.skipped = "no snapshot"
            return report
        manifests = current.manifests(table.io)
        report.manifests_before = len(manifests)
        report.bytes_before = sum(m.manifest_length for m in manifests)
        if options.dry_run:
            report.skipped = "dry run"
            return report
        # rewrite_manifests reads the size from the table's property: set it for this rewrite, then put it back.
        sizing, restore = [], []
        if options.target_size_bytes:
            table_sql = f"{self._catalog}.{name}"
            sizing = [
                f"ALTER TABLE {table_sql} SET TBLPROPERTIES ('{MANIFEST_SIZE}' = '{int(options.target_size_bytes)}')"
            ]
            kept = table.properties.get(MANIFEST_SIZE)
            restore = [
                f"ALTER TABLE {table_sql} SET TBLPROPERTIES ('{MANIFEST_SIZE}' = '{kept}')"
                if kept is not None
                else f"ALTER TABLE {table_sql} UNSET TBLPROPERTIES ('{MANIFEST_SIZE}')"
            ]
        properties = {**snapshot_properties, "sonik.operation": "manifest-rewrite", "sonik.engine": self.name}
        row = self._rewrite_manifests(name, sizing, restore, properties)
        table.refresh()
        after = table.current_snapshot()
        if after is not None and after.snapshot_id != current.snapshot_id:
            report.snapshot_id = after.snapshot_id
            manifests = after.manifests(table.io)
            written = [m for m in manifests if m.added_snapshot_id == after.snapshot_id]
            report.entries = sum((m.existing_files_count or 0) + (m.added_files_count or 0) for m in written)
        else:
            report.skipped = "nothing to rewrite"
        report.manifests_after = len(manifests)
        report.bytes_after = sum(m.manifest_length for m in manifests)
        report.seconds = time.monotonic() - started
        progress(
            f"{name}: Spark rewrote {row['rewritten_manifests_count']} manifests into {row['added_manifests_count']}"
        )
        return report

    # -- expiry ---------------------------------------------------------------------------------

    def expire_snapshots(self, table: Table, options: ExpiryOptions, progress: Progress) -> ExpiryReport:
        if options.dry_run:  # Spark's procedure has no dry run: the same retention, planned locally
            return expire_snapshots(table, options, progress=progress)
        started = time.monotonic()
        name = table_name(table)
        retention, retain_last = options.for_table(table)
        older_than = options.current_time().astimezone(dt.UTC) - retention
        before = {s.snapshot_id for s in table.snapshots()}
        [row] = self._call(
            "expire_snapshots",
            table=sql_string(name),
            older_than=f"TIMESTAMP '{older_than:%Y-%m-%d %H:%M:%S.%f}'",
            retain_last=str(retain_last),
        )
        table.refresh()
        report = ExpiryReport(table=name)
        report.snapshots_expired = sorted(before - {s.snapshot_id for s in table.snapshots()})
        for kind, column in (
            (DATA, "deleted_data_files_count"),
            (DELETE, "deleted_position_delete_files_count"),
            (DELETE, "deleted_equality_delete_files_count"),
            (MANIFEST, "deleted_manifest_files_count"),
            (MANIFEST_LIST, "deleted_manifest_lists_count"),
            (STATISTICS, "deleted_statistics_files_count"),
        ):
            if row.get(column):
                report.files_deleted[kind] += row[column]
        report.seconds = time.monotonic() - started
        progress(
            f"{name}: Spark expired {len(report.snapshots_expired)} snapshots and deleted "
            f"{sum(report.files_deleted.values())} files"
        )
        return report

    # -- orphans --------------------------------------------------------------------------------

    def remove_orphan_files(self, table: Table, options: OrphanOptions, progress: Progress) -> OrphanReport:
        if options.older_than < SPARK_ORPHAN_FLOOR:
            raise OrphanWindowTooShort(
                f"Spark's remove_orphan_files refuses a window under 24 hours (asked: {options.older_than}); "
                "nothing was deleted; run orphans_job with SONIK_ENGINE=local for a shorter one"
            )
        started = time.monotonic()
        name = table_name(table)
        report = OrphanReport(table=name, dry_run=options.dry_run)
        older_than = (options.now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC) - options.older_than
        rows = self._call(
            "remove_orphan_files",
            table=sql_string(name),
            older_than=f"TIMESTAMP '{older_than:%Y-%m-%d %H:%M:%S.%f}'",
            dry_run="true",  # Spark finds them; the lakehouse's own deletion rule deletes them
        )
        found = stat_files(table, sorted({file_key(r["orphan_file_location"]) for r in rows}))
        refuse_other_tables(table, [f for f in found if f.key.endswith(".metadata.json")])
        report.deleted = check_keys_deletable(table, [f.key for f in found])
        for orphan in found:
            kind = kind_of_unreferenced(orphan.key)
            report.files_deleted[kind] += 1
            report.bytes_deleted[kind] += orphan.size
        if report.deleted and not options.dry_run:
            delete_files(table, report.deleted)
        if report.deleted:
            progress(
                f"{name}: {'would delete' if options.dry_run else 'deleted'} {len(report.deleted)} orphan files "
                f"Spark found ({sum(report.bytes_deleted.values()):,} B)"
            )
        report.seconds = time.monotonic() - started
        return report


def _map(options: Mapping[str, str]) -> str:
    return "map(" + ", ".join(f"{sql_string(k)}, {sql_string(v)}" for k, v in options.items()) + ")"


def _rewrite_options(table: Table, options: CompactionOptions) -> dict[str, str]:
    """rewrite_data_files' options for ours: the same target, small-file share, file groups and progress."""
    target = options.target_file_size_bytes or int(table.properties.get("write.target-file-size-bytes", 512 << 20))
    spark = {
        "target-file-size-bytes": str(target),
        "min-file-size-bytes": str(min(int(target * options.small_file_ratio), target - 1)),  # Spark: below target
        "min-input-files": str(options.min_input_files),
        "max-file-group-size-bytes": str(options.max_file_group_size_bytes),
    }
    if options.partial_progress:
        spark |= {
            "partial-progress.enabled": "true",
            "partial-progress.max-commits": str(options.partial_progress_max_commits),
        }
    return spark


def _days_before(table: Table, day: dt.date) -> tuple[str, str, str] | None:
    """(column, SQL literal type, ISO value) bounding the table's day-partition source column before ``day``."""
    schema = table.schema()
    for pfield in table.spec().fields:
        if is_day_field(pfield, schema):
            column = schema.find_field(pfield.source_id)
            if isinstance(column.field_type, DateType):
                return column.name, "DATE", day.isoformat()
            if isinstance(column.field_type, TimestampType):
                return column.name, "TIMESTAMP_NTZ", f"{day}T00:00:00"
            if isinstance(column.field_type, TimestamptzType):
                return column.name, "TIMESTAMP", f"{day}T00:00:00+00:00"
    return None


def _rewrites_by_partition(table: Table, snapshot_ids: list[int]) -> list[PartitionRewrite]:
    """Per partition, the files the rewrite commits removed and added (read from the manifests they wrote)."""
    by_partition: dict[str, PartitionRewrite] = {}
    for snapshot_id in snapshot_ids:
        snapshot = table.snapshot_by_id(snapshot_id)
        for manifest in snapshot.manifests(table.io):
            if manifest.added_snapshot_id != snapshot_id:
                continue
            for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=False):
                if entry.snapshot_id != snapshot_id:
                    continue
                data = entry.data_file
                partition = describe_partition(table, data.spec_id, data.partition)
                rewrite = by_partition.setdefault(partition, PartitionRewrite(partition, 0, 0, 0))
                if entry.status == ManifestEntryStatus.DELETED:
                    rewrite.files_before += 1
                    rewrite.bytes_before += data.file_size_in_bytes
                    rewrite.rows += data.record_count
                elif entry.status == ManifestEntryStatus.ADDED:
                    rewrite.files_after += 1
                    rewrite.bytes_after += data.file_size_in_bytes
                    rewrite.rows_verified += data.record_count
    for rewrite in by_partition.values():
        rewrite.groups = 1 if rewrite.files_before else 0
    return sorted(by_partition.values(), key=lambda p: p.partition)


def _reaches_the_jvm(session: SparkSession) -> bool:
    """A classic session reaches its JVM through py4j; a Spark Connect session's JVM is the server's."""
    return getattr(session, "_jvm", None) is not None


def _close_catalog(session: SparkSession, catalog_name: str) -> None:
    """Close the Iceberg catalog a session opened (its JDBC connections), once the session is done with it."""
    try:
        session._jsparkSession.sessionState().catalogManager().catalog(catalog_name).icebergCatalog().close()
    except Exception as exc:  # a catalog with nothing to close (REST), or never opened
        log.debug("closing the Spark session's catalog %s: %s", catalog_name, exc)
