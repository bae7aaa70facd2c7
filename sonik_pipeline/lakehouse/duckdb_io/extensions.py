"""DuckDB's iceberg and httpfs extensions, loaded without the internet, and pointed at the warehouse.

``INSTALL iceberg`` downloads from DuckDB's servers, which many machines cannot reach. The
``duckdb-extension-*`` wheels ship the official extension files for this exact DuckDB version;
installing from those paths is offline and happens once per machine.

An object-storage warehouse is read with the same endpoint and credentials PyIceberg writes with:
the catalog's ``s3.*`` properties become a DuckDB S3 secret, so one set of settings serves both engines.

Every connection the project opens has a memory limit (``limit_memory``): DuckDB's own default is 80% of
the machine's memory, and its in-memory databases spill to ``.tmp`` in the working folder.
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

import duckdb

from sonik_pipeline.lakehouse.duckdb_io import DEFAULT_MEMORY_LIMIT
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_string
from sonik_pipeline.lakehouse.tables.catalog import storage_root

OBJECT_STORE_SCHEMES = ("s3", "s3a", "s3n")
SECRET_NAME = "sonik_warehouse"


def spill_directory() -> str:
    """Where DuckDB spills past its memory limit: ``sonik-duckdb`` in the system's temporary directory."""
    return str(Path(tempfile.gettempdir()) / "sonik-duckdb")


def limit_memory(
    con: duckdb.DuckDBPyConnection, memory_limit: str = DEFAULT_MEMORY_LIMIT, temp_directory: str | None = None
) -> duckdb.DuckDBPyConnection:
    """Hold ``con`` to ``memory_limit``, spilling to ``temp_directory`` (default: ``spill_directory()``)."""
    con.execute(f"SET memory_limit = {sql_string(memory_limit)}")
    con.execute(f"SET temp_directory = {sql_string(temp_directory or spill_directory())}")
    return con


def bounded_connection(memory_limit: str = DEFAULT_MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB held to ``memory_limit``: how the project opens one for its own work."""
    return limit_memory(duckdb.connect(), memory_limit)


def extension_file(name: str) -> Path:
    """The ``.duckdb_extension`` file shipped by the ``duckdb-extension-<name>`` wheel for this DuckDB."""
    package = importlib.import_module(f"duckdb_extension_{name}")
    root = Path(package.__file__).parent
    wanted = root / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
    if wanted.exists():
        return wanted
    found = sorted(root.rglob(f"{name}.duckdb_extension"))
    if not found:
        raise FileNotFoundError(f"duckdb-extension-{name} ships no {name}.duckdb_extension under {root}")
    return found[-1]


def load_extension(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """``LOAD name``, installing it from its wheel's file first when this machine has not got it yet."""
    try:
        con.execute(f"LOAD {name}")
    except duckdb.Error:
        con.execute(f"INSTALL '{extension_file(name)}'")
        con.execute(f"LOAD {name}")


def load_iceberg(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``LOAD iceberg`` (and avro, which it reads manifests with), offline."""
    load_extension(con, "avro")
    load_extension(con, "iceberg")
    return con


def uses_object_storage(properties: Mapping[str, str]) -> bool:
    """True when the warehouse is on S3 (by its scheme) or S3 is configured (a REST catalog's tables)."""
    scheme = urlsplit(storage_root(properties)).scheme
    return scheme in OBJECT_STORE_SCHEMES or any(key.startswith("s3.") for key in properties)


def s3_secret_sql(properties: Mapping[str, str]) -> str:
    """``CREATE SECRET`` for DuckDB from PyIceberg's ``s3.*`` properties (the same endpoint and keys).

    Without an access key, DuckDB resolves credentials the way PyIceberg's PyArrow S3 does: the AWS
    credential chain (environment, profile, instance or pod role).
    """
    options: dict[str, str] = {"TYPE": "s3"}
    if key_id := properties.get("s3.access-key-id"):
        options["KEY_ID"] = sql_string(key_id)
        options["SECRET"] = sql_string(properties.get("s3.secret-access-key", ""))
        if token := properties.get("s3.session-token"):
            options["SESSION_TOKEN"] = sql_string(token)
    else:
        options["PROVIDER"] = "credential_chain"
    if region := properties.get("s3.region") or properties.get("client.region"):
        options["REGION"] = sql_string(region)
    if endpoint := properties.get("s3.endpoint"):
        parsed = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["ENDPOINT"] = sql_string(parsed.netloc)
        options["USE_SSL"] = "false" if parsed.scheme == "http" else "true"
        # PyArrow addresses a custom endpoint path-style unless told otherwise; DuckDB must match.
        virtual = properties.get("s3.force-virtual-addressing", "false").lower() == "true"
        options["URL_STYLE"] = sql_string("vhost" if virtual else "path")
    body = ", ".join(f"{key} {value}" for key, value in options.items())
    return f"CREATE OR REPLACE SECRET {SECRET_NAME} ({body})"


def configure_storage(con: duckdb.DuckDBPyConnection, properties: Mapping[str, str]) -> duckdb.DuckDBPyConnection:
    """Let ``con`` read the warehouse: nothing for local files, httpfs and an S3 secret for object storage."""
    if uses_object_storage(properties):
        load_extension(con, "httpfs")
        if not properties.get("s3.access-key-id"):
            load_extension(con, "aws")  # the credential_chain provider lives in the aws extension
        con.execute(s3_secret_sql(properties))
    return con


def lakehouse_connection(
    con: duckdb.DuckDBPyConnection,
    properties: Mapping[str, str],
    memory_limit: str = DEFAULT_MEMORY_LIMIT,
    temp_directory: str | None = None,
) -> duckdb.DuckDBPyConnection:
    """A connection ready for ``iceberg_scan`` on this lakehouse: held to ``memory_limit`` (``limit_memory``),
    iceberg loaded, storage reachable, UTC."""
    limit_memory(con, memory_limit, temp_directory)
    load_iceberg(con)
    configure_storage(con, properties)
    con.execute("SET TimeZone = 'UTC'")
    return con
