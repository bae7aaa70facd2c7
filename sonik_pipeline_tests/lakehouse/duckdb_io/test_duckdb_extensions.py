from pathlib import Path

import duckdb
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.duckdb_io.extensions import (
    DEFAULT_MEMORY_LIMIT,
    bounded_connection,
    configure_storage,
    extension_file,
    lakehouse_connection,
    load_iceberg,
    s3_secret_sql,
    spill_directory,
    uses_object_storage,
)
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import catalog_properties
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.writes import replace_partition, stage_files
from sonik_pipeline_tests.conftest import DAY


def test_the_wheels_ship_extensions_for_this_duckdb() -> None:
    for name in ("iceberg", "avro", "httpfs", "aws"):
        path = extension_file(name)
        assert path.name == f"{name}.duckdb_extension"
        assert f"v{duckdb.__version__}" in str(path)


def test_iceberg_loads_offline_into_an_empty_extension_directory(tmp_path: Path, catalog: Catalog) -> None:
    # Given an empty extension directory (nothing installed, no network) and a table with one day
    table, _ = ensure_table(catalog, PLAYS)
    replace_partition(table, played_at_filter(DAY), stage_files(table, [synthetic_batch(DAY, 1_234)]), {})
    con = duckdb.connect(config={"extension_directory": str(tmp_path / "ext")})

    # When the iceberg extension is loaded
    load_iceberg(con)

    # Then it was installed from the wheels and reads the table
    loaded = dict(con.execute("SELECT extension_name, loaded FROM duckdb_extensions() WHERE loaded").fetchall())
    assert loaded.get("iceberg") and loaded.get("avro")
    assert list((tmp_path / "ext").rglob("iceberg.duckdb_extension"))
    metadata = catalog.load_table("music.plays").metadata_location
    assert con.execute(f"SELECT count(*) FROM iceberg_scan('{metadata}')").fetchone()[0] == 1_234


S3_PROPERTIES = {
    "warehouse": "s3://lake/warehouse",
    "s3.endpoint": "http://127.0.0.1:9000",
    "s3.access-key-id": "key",
    "s3.secret-access-key": "it's secret",
    "s3.region": "eu-west-1",
}


def test_the_s3_secret_mirrors_pyicebergs_s3_settings() -> None:
    sql = s3_secret_sql(S3_PROPERTIES)
    assert sql == (
        "CREATE OR REPLACE SECRET sonik_warehouse (TYPE s3, KEY_ID 'key', SECRET 'it''s secret', "
        "REGION 'eu-west-1', ENDPOINT '127.0.0.1:9000', USE_SSL false, URL_STYLE 'path')"
    )


def test_without_keys_duckdb_uses_the_aws_credential_chain_like_pyarrow() -> None:
    sql = s3_secret_sql({"warehouse": "s3://lake/warehouse", "s3.force-virtual-addressing": "true"})
    assert sql == "CREATE OR REPLACE SECRET sonik_warehouse (TYPE s3, PROVIDER credential_chain)"
    https = s3_secret_sql({"s3.endpoint": "https://minio.internal", "s3.access-key-id": "k"})
    assert "ENDPOINT 'minio.internal', USE_SSL true, URL_STYLE 'path'" in https


@pytest.mark.parametrize(
    ("properties", "expected"),
    [
        ({"warehouse": "file:///tmp/warehouse"}, False),
        ({"warehouse": "s3://lake/warehouse"}, True),
        ({"warehouse": "analytics", "s3.endpoint": "http://minio:9000"}, True),  # a REST catalog's warehouse name
    ],
)
def test_object_storage_is_recognised(properties: dict[str, str], expected: bool) -> None:
    assert uses_object_storage(properties) is expected


def test_duckdb_gets_an_s3_secret_only_for_object_storage(tmp_path: Path) -> None:
    con = duckdb.connect(config={"extension_directory": str(tmp_path / "ext")})
    configure_storage(con, {"warehouse": "file:///tmp/warehouse"})
    assert con.execute("SELECT count(*) FROM duckdb_secrets()").fetchone()[0] == 0

    configure_storage(con, S3_PROPERTIES)

    secret = con.execute("SELECT name, type, provider, scope FROM duckdb_secrets()").fetchall()
    assert secret == [("sonik_warehouse", "s3", "config", ["s3://", "s3n://", "s3a://"])]


def test_pyicebergs_environment_settings_are_read_when_the_catalog_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    # PyIceberg reads PYICEBERG_* once at import; settings made later must still reach catalog and DuckDB.
    monkeypatch.setenv("PYICEBERG_CATALOG__SONIK__S3__ENDPOINT", "http://127.0.0.1:9000")
    monkeypatch.setenv("PYICEBERG_CATALOG__SONIK__S3__ACCESS_KEY_ID", "key")
    properties = catalog_properties("sonik", "sqlite:////tmp/c.db", "s3://lake/w")
    assert properties["s3.endpoint"] == "http://127.0.0.1:9000"
    assert properties["s3.access-key-id"] == "key"
    assert properties["warehouse"] == "s3://lake/w"
    assert properties["uri"] == "sqlite:////tmp/c.db?timeout=60"


def _memory_settings(con: duckdb.DuckDBPyConnection) -> tuple[str, str]:
    return con.execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')").fetchone()


def _as_duckdb_shows(amount: str) -> str:
    with duckdb.connect() as con:
        con.execute(f"SET memory_limit = '{amount}'")
        return con.execute("SELECT current_setting('memory_limit')").fetchone()[0]


def test_every_connection_the_project_opens_is_held_to_a_memory_limit(tmp_path: Path) -> None:
    # DuckDB's own default is 80% of the machine's memory, spilling to .tmp in the working folder
    default = (_as_duckdb_shows(DEFAULT_MEMORY_LIMIT), spill_directory())

    assert _memory_settings(bounded_connection()) == default
    assert _memory_settings(lakehouse_connection(duckdb.connect(), {})) == default  # what the CLI opens
    chosen = lakehouse_connection(duckdb.connect(), {}, "300MB", str(tmp_path / "spill"))
    assert _memory_settings(chosen) == (_as_duckdb_shows("300MB"), str(tmp_path / "spill"))
    assert _memory_settings(duckdb.connect())[0] != default[0]
