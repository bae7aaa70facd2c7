"""Dagster resources: the Iceberg catalog and the play-event source, each a small typed setting."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource
from pydantic import Field, PrivateAttr
from pyiceberg.catalog import Catalog

from sonik_pipeline.engines.base import Engine
from sonik_pipeline.engines.local import LocalEngine
from sonik_pipeline.lakehouse.duckdb_io.extensions import lakehouse_connection
from sonik_pipeline.lakehouse.sources.day_sources import DaySource, LandingDays, SyntheticDays
from sonik_pipeline.lakehouse.sources.events import RawBatch
from sonik_pipeline.lakehouse.sources.landing_changes import WatchSettings
from sonik_pipeline.lakehouse.tables.catalog import catalog_properties, open_catalog
from sonik_pipeline.settings import (
    CATALOG_NAME,
    DEFAULT_DUCKDB_MEMORY_LIMIT,
    DEFAULT_EVENTS_PER_DAY,
    EngineKind,
    SourceKind,
)


class LakehouseCatalog(dg.ConfigurableResource):
    """The Iceberg catalog and warehouse every asset reads and writes."""

    catalog_name: str = Field(default=CATALOG_NAME, description="Iceberg catalog name.")
    catalog_uri: str = Field(
        description="Catalog URI: sqlite:///... (embedded), postgresql+psycopg://... or http(s):// (REST)."
    )
    warehouse: str = Field(description="Warehouse root: file:///... locally, s3://bucket/path in production.")

    def load(self) -> Catalog:
        return open_catalog(self.catalog_name, self.catalog_uri, self.warehouse)

    def properties(self) -> dict[str, str]:
        """The catalog's full configuration, including PyIceberg's ``s3.*`` settings from the environment."""
        return catalog_properties(self.catalog_name, self.catalog_uri, self.warehouse)


class LakehouseEngine(dg.ConfigurableResource):
    """What does the heavy work the assets and ops ask for: ingest, marts and table maintenance.

    ``local``: PyIceberg and DuckDB in the run's own process. ``spark``: ingest by the project's validator in
    Spark's executors, the marts by Spark SQL and table maintenance by Iceberg's Spark procedures, in a session
    started on first use through dagster-pyspark's lazy session (Spark Connect with ``spark_remote``, else
    ``spark_master``).
    """

    kind: EngineKind = Field(default="local", description="local (PyIceberg + DuckDB) or spark.")
    lakehouse: LakehouseCatalog = Field(description="The catalog the engine's own session opens, under the same name.")
    spark_master: str = Field(default="local[*]", description="Spark master: local[N], spark://, k8s://, yarn.")
    spark_remote: str = Field(
        default="", description="A Spark Connect URL (sc://host:15002); set, it wins over master."
    )
    spark_jars: list[str] = Field(
        default=[], description="Jar paths for the session (empty: the offline Iceberg runtime and JDBC driver)."
    )
    spark_packages: list[str] = Field(
        default=[], description="Maven coordinates for spark.jars.packages (production), e.g. the Iceberg runtime."
    )
    spark_conf: dict[str, str] = Field(default={}, description="More Spark configuration, applied last.")
    _spark: Any = PrivateAttr(default=None)

    def engine(self) -> Engine:
        if self.kind == "spark":
            from sonik_pipeline.engines.spark import SparkEngine

            return SparkEngine(lambda: self._spark_resource().spark_session, self.lakehouse.catalog_name)
        return LocalEngine()

    def _spark_resource(self) -> Any:
        """dagster-pyspark's lazily started session, configured for this lakehouse (built once per run)."""
        if self._spark is None:
            from dagster_pyspark import LazyPySparkResource

            from sonik_pipeline.engines.spark_session import (
                local_executors_use_this_python,
                session_conf,
                share_sqlite_catalog,
            )

            lakehouse = self.lakehouse
            share_sqlite_catalog(lakehouse.catalog_uri)
            local_executors_use_this_python(self.spark_master, self.spark_remote or None)
            conf = session_conf(
                catalog_name=lakehouse.catalog_name,
                catalog_uri=lakehouse.catalog_uri,
                warehouse=lakehouse.warehouse,
                properties=lakehouse.properties(),
                master=self.spark_master,
                remote=self.spark_remote or None,
                jars=self.spark_jars,
                packages=self.spark_packages,
                extra=self.spark_conf,
            )
            self._spark = LazyPySparkResource(spark_config=conf)
        return self._spark

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Stop a session the run started: the next run's session opens the catalog as configured then."""
        if self._spark is not None and self._spark._spark_session is not None:
            self._spark._spark_session.stop()


class PlaySource(dg.ConfigurableResource):
    """Where a day's play events come from: the synthetic stream or the app's landing zone."""

    kind: SourceKind = Field(
        default="synthetic",
        description="synthetic: deterministic generated events; landing: files in landing_dir.",
    )
    events_per_day: int = Field(default=DEFAULT_EVENTS_PER_DAY, description="Synthetic events per day.")
    seed: int = Field(default=0, description="Synthetic seed; the same seed and day give the same events.")
    landing_dir: str = Field(
        default="landing",
        description="Landing zone root holding plays/YYYY-MM-DD/*.jsonl and *.parquet: a folder or s3://bucket/prefix.",
    )
    lakehouse: LakehouseCatalog = Field(description="Its s3.* settings also reach a landing zone on object storage.")

    def days(self) -> DaySource:
        """The source as the engines read it: a day whole (the local engine) or in parts (Spark's executors)."""
        if self.kind == "landing":
            return LandingDays(self.landing_dir, self.lakehouse.properties())
        return SyntheticDays(self.events_per_day, self.seed)

    def events(self, day: dt.date) -> Iterator[RawBatch]:
        return self.days().events(day)

    def describe(self) -> str:
        if self.kind == "landing":
            return f"landing zone {self.landing_dir}"
        return f"synthetic ({self.events_per_day:,} events/day, seed {self.seed})"


class LandingWatch(dg.ConfigurableResource):
    """How the landing sensor watches the landing zone (``lakehouse/sources/landing_changes.py`` says why)."""

    settle_seconds: int = Field(
        default=WatchSettings.settle_seconds,
        ge=0,
        description="A day with a file modified this recently is still being uploaded: it waits for a later tick.",
    )
    recent_days: int = Field(
        default=WatchSettings.recent_days, ge=1, description="The most recent days, listed on every tick."
    )
    sweep_hours: float = Field(
        default=WatchSettings.sweep_hours, gt=0, description="Every day folder is listed this often (a full sweep)."
    )

    def settings(self) -> WatchSettings:
        return WatchSettings(self.settle_seconds, self.recent_days, self.sweep_hours)


class LakehouseDuckDB(DuckDBResource):
    """DuckDB ready to read the lakehouse: iceberg (installed offline from the wheels), the warehouse's
    storage (httpfs and an S3 secret from the catalog's ``s3.*`` settings when it is object storage), UTC."""

    lakehouse: LakehouseCatalog = Field(description="The catalog whose warehouse this DuckDB reads.")
    memory_limit: str = Field(
        default=DEFAULT_DUCKDB_MEMORY_LIMIT,
        description="DuckDB's memory for a step's queries (a day of plays read once for every mart); past it, "
        "DuckDB spills to temp_directory instead of failing.",
    )
    temp_directory: str = Field(
        default="", description="Where DuckDB spills; empty: a folder in the system's temporary directory."
    )

    @contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with super().get_connection() as con:
            properties = self.lakehouse.properties()
            yield lakehouse_connection(con, properties, self.memory_limit, self.temp_directory or None)
