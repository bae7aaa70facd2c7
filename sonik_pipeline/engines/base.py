"""The operations every engine provides, in the lakehouse's own terms: days, tables, options and reports.

An engine takes the same options and returns the same reports whatever does the work, so the assets and
ops that call it (and the metadata they show) are the same on every engine. The project's own safety
rules (deletions only inside the table's location and the warehouse, the orphan window's floor, one
maintenance run at a time) are kept by the callers and the options, before any engine is asked.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from duckdb import DuckDBPyConnection
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.ingest.run import DayIngestResult, IngestOptions
from sonik_pipeline.lakehouse.marts.queries import Mart
from sonik_pipeline.lakehouse.marts.run import MartOptions, MartReport
from sonik_pipeline.lakehouse.sources.day_sources import DaySource
from sonik_pipeline.maintenance.compaction import CompactionOptions, CompactionReport
from sonik_pipeline.maintenance.expiry import ExpiryOptions, ExpiryReport
from sonik_pipeline.maintenance.manifests import ManifestRewriteOptions, ManifestRewriteReport
from sonik_pipeline.maintenance.orphans import OrphanOptions, OrphanReport

Progress = Callable[[str], None]
# Opens a DuckDB connection ready for the lakehouse (the ``duckdb`` resource's ``get_connection``): where the
# local engine computes; an engine that computes elsewhere never opens it.
DuckDBConnect = Callable[[], AbstractContextManager[DuckDBPyConnection]]


class Engine(Protocol):
    """What does the lakehouse's heavy work; each call is one of the pipeline's operations."""

    name: str

    def ingest_days(
        self,
        catalog: Catalog,
        source: DaySource,
        days: Sequence[dt.date],
        options: IngestOptions,
        days_per_commit: int,
        progress: Progress,
    ) -> Iterator[DayIngestResult]:
        """Validate, quarantine and replace each of the consecutive ``days`` in ``music.plays`` from ``source``,
        ``days_per_commit`` to a commit, yielding a day once it is committed."""
        ...

    def build_marts(
        self,
        catalog: Catalog,
        marts: Sequence[Mart],
        days: Sequence[dt.date],
        options: MartOptions,
        duckdb: DuckDBConnect,
        progress: Progress,
    ) -> Iterator[MartReport]:
        """Compute ``marts`` for the consecutive ``days`` from plays at one snapshot, and replace each mart's days
        in one commit recording that snapshot; yields each mart once committed."""
        ...

    def compact(
        self, table: Table, options: CompactionOptions, snapshot_properties: Mapping[str, str], progress: Progress
    ) -> CompactionReport:
        """Rewrite small data files into target-sized ones (Iceberg's rewrite_data_files)."""
        ...

    def rewrite_manifests(
        self, table: Table, options: ManifestRewriteOptions, snapshot_properties: Mapping[str, str], progress: Progress
    ) -> ManifestRewriteReport:
        """Rewrite the manifests clustered by partition and sized (Iceberg's rewrite_manifests)."""
        ...

    def expire_snapshots(self, table: Table, options: ExpiryOptions, progress: Progress) -> ExpiryReport:
        """Expire snapshots past retention and delete what only they reached (Iceberg's expire_snapshots)."""
        ...

    def remove_orphan_files(self, table: Table, options: OrphanOptions, progress: Progress) -> OrphanReport:
        """Delete old files no metadata references (Iceberg's remove_orphan_files)."""
        ...
