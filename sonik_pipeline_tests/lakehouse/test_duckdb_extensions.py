from pathlib import Path

import duckdb
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.duckdb_extensions import extension_file, load_iceberg
from sonik_pipeline.lakehouse.events import synthetic_batch
from sonik_pipeline.lakehouse.ingest import day_filter
from sonik_pipeline.lakehouse.tables import PLAYS, ensure_table
from sonik_pipeline.lakehouse.writes import replace_partition, stage_files
from sonik_pipeline_tests.conftest import DAY


def test_the_wheels_ship_extensions_for_this_duckdb() -> None:
    for name in ("iceberg", "avro"):
        path = extension_file(name)
        assert path.name == f"{name}.duckdb_extension"
        assert f"v{duckdb.__version__}" in str(path)


def test_iceberg_loads_offline_into_an_empty_extension_directory(tmp_path: Path, catalog: Catalog) -> None:
    # Given an empty extension directory (nothing installed, no network) and a table with one day
    table, _ = ensure_table(catalog, PLAYS)
    replace_partition(table, day_filter(DAY), stage_files(table, [synthetic_batch(DAY, 1_234)]), {})
    con = duckdb.connect(config={"extension_directory": str(tmp_path / "ext")})

    # When the iceberg extension is loaded
    load_iceberg(con)

    # Then it was installed from the wheels and reads the table
    loaded = dict(con.execute("SELECT extension_name, loaded FROM duckdb_extensions() WHERE loaded").fetchall())
    assert loaded.get("iceberg") and loaded.get("avro")
    assert list((tmp_path / "ext").rglob("iceberg.duckdb_extension"))
    metadata = catalog.load_table("music.plays").metadata_location
    assert con.execute(f"SELECT count(*) FROM iceberg_scan('{metadata}')").fetchone()[0] == 1_234
