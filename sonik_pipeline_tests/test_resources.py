"""The Dagster resources: the catalog, the play source and DuckDB, each as a run would set them up."""

import datetime as dt
from pathlib import Path

import dagster as dg

from sonik_pipeline.lakehouse.sources.events import ArrowRows, JsonLines
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.resources import LakehouseCatalog, LakehouseDuckDB, PlaySource
from sonik_pipeline.settings import Settings

DAY = dt.date(2026, 4, 20)


def _lakehouse(settings: Settings) -> LakehouseCatalog:
    return LakehouseCatalog(catalog_uri=settings.catalog_uri, warehouse=settings.warehouse)


def test_the_catalog_resource_opens_the_configured_catalog(settings: Settings) -> None:
    lakehouse = _lakehouse(settings)
    catalog = lakehouse.load()
    catalog.create_namespace("music")

    assert lakehouse.properties()["warehouse"] == settings.warehouse
    assert ("music",) in lakehouse.load().list_namespaces()


def test_the_synthetic_source_yields_the_configured_day(settings: Settings) -> None:
    source = PlaySource(kind="synthetic", events_per_day=300, lakehouse=_lakehouse(settings))

    batches = list(source.events(DAY))

    assert [b.rows.num_rows for b in batches] == [300]
    assert batches[0].rows.equals(synthetic_batch(DAY, 300))
    assert source.describe() == "synthetic (300 events/day, seed 0)"


def test_the_landing_source_reads_the_days_files(settings: Settings, tmp_path: Path) -> None:
    write_landing_day(tmp_path, DAY, synthetic_batch(DAY, 120), files=2, fmt="jsonl")
    write_landing_day(tmp_path / "other", DAY, synthetic_batch(DAY, 1), files=1)
    source = PlaySource(kind="landing", landing_dir=str(tmp_path), lakehouse=_lakehouse(settings))

    batches = list(source.events(DAY))

    assert [type(b).__name__ for b in batches] == ["SourceFile", "JsonLines", "SourceFile", "JsonLines"]
    assert sum(len(b.lines) for b in batches if isinstance(b, JsonLines)) == 120
    assert source.describe() == f"landing zone {tmp_path}"
    assert not any(isinstance(b, ArrowRows) for b in batches)


def test_duckdb_is_ready_for_the_lakehouse_in_utc(settings: Settings) -> None:
    duckdb = LakehouseDuckDB(database=":memory:", lakehouse=_lakehouse(settings))
    with dg.build_init_resource_context() as context:
        duckdb.setup_for_execution(context)
    with duckdb.get_connection() as con:
        loaded = {
            name for (name,) in con.execute("SELECT extension_name FROM duckdb_extensions() WHERE loaded").fetchall()
        }
        [(zone,)] = con.execute("SELECT current_setting('TimeZone')").fetchall()

    assert {"iceberg", "avro"} <= loaded
    assert zone == "UTC"


def test_duckdb_keeps_the_resources_memory_limit_and_spill_folder(settings: Settings, tmp_path: Path) -> None:
    spill = str(tmp_path / "spill")
    resource = LakehouseDuckDB(
        database=":memory:", lakehouse=_lakehouse(settings), memory_limit="300MB", temp_directory=spill
    )
    with dg.build_init_resource_context() as context:
        resource.setup_for_execution(context)
    with resource.get_connection() as con:
        [(limit, folder)] = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory')"
        ).fetchall()
        con.execute("SET memory_limit = '300MB'")
        [(as_set,)] = con.execute("SELECT current_setting('memory_limit')").fetchall()

    assert (limit, folder) == (as_set, spill)
