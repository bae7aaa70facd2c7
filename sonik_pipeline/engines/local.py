"""The local engine: PyIceberg and DuckDB in this process, the lakehouse's own implementations."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence

from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.engines.base import DuckDBConnect, Progress
from sonik_pipeline.lakehouse.ingest.run import DayIngestResult, IngestOptions, ingest_days
from sonik_pipeline.lakehouse.marts.queries import Mart
from sonik_pipeline.lakehouse.marts.run import MartOptions, MartReport, run_marts
from sonik_pipeline.lakehouse.sources.day_sources import DaySource
from sonik_pipeline.maintenance.compaction import CompactionOptions, CompactionReport, compact_table
from sonik_pipeline.maintenance.expiry import ExpiryOptions, ExpiryReport, expire_snapshots
from sonik_pipeline.maintenance.manifests import ManifestRewriteOptions, ManifestRewriteReport, rewrite_manifests
from sonik_pipeline.maintenance.orphans import OrphanOptions, OrphanReport, remove_orphan_files


class LocalEngine:
    """One machine: days staged in bounded memory and committed by PyIceberg; maintenance by our own code."""

    name = "local"

    def ingest_days(
        self,
        catalog: Catalog,
        source: DaySource,
        days: Sequence[dt.date],
        options: IngestOptions,
        days_per_commit: int,
        progress: Progress,
    ) -> Iterator[DayIngestResult]:
        fields = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
        read = ((day, source.events(day)) for day in days)  # a day is read only when its turn comes
        return ingest_days(catalog, read, days_per_commit=days_per_commit, progress=progress, **fields)

    def build_marts(
        self,
        catalog: Catalog,
        marts: Sequence[Mart],
        days: Sequence[dt.date],
        options: MartOptions,
        duckdb: DuckDBConnect,
        progress: Progress,
    ) -> Iterator[MartReport]:
        with duckdb() as con:
            yield from run_marts(catalog, con, marts, days, options, progress=progress)

    def compact(
        self, table: Table, options: CompactionOptions, snapshot_properties: Mapping[str, str], progress: Progress
    ) -> CompactionReport:
        return compact_table(table, options, dict(snapshot_properties), progress=progress)

    def rewrite_manifests(
        self, table: Table, options: ManifestRewriteOptions, snapshot_properties: Mapping[str, str], progress: Progress
    ) -> ManifestRewriteReport:
        return rewrite_manifests(table, options, dict(snapshot_properties), progress=progress)

    def expire_snapshots(self, table: Table, options: ExpiryOptions, progress: Progress) -> ExpiryReport:
        return expire_snapshots(table, options, progress=progress)

    def remove_orphan_files(self, table: Table, options: OrphanOptions, progress: Progress) -> OrphanReport:
        return remove_orphan_files(table, options, progress=progress)
