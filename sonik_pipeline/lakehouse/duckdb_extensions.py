"""DuckDB's iceberg extension, loaded without the internet.

``INSTALL iceberg`` downloads from DuckDB's servers, which many machines cannot reach. The
``duckdb-extension-iceberg`` and ``duckdb-extension-avro`` wheels ship the official extension
files for this exact DuckDB version; installing from those paths is offline and happens once.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import duckdb

# iceberg reads manifests through avro, so both are installed from their wheels.
OFFLINE_EXTENSIONS = ("avro", "iceberg")


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


def load_iceberg(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    """``LOAD iceberg``, installing it (and avro) from the local wheel files first if needed."""
    try:
        con.execute("LOAD iceberg")
        con.execute("LOAD avro")
    except duckdb.Error:
        for name in OFFLINE_EXTENSIONS:
            con.execute(f"INSTALL '{extension_file(name)}'")
        con.execute("LOAD avro")
        con.execute("LOAD iceberg")
    return con
