"""Reading the data files PyIceberg planned with DuckDB's own Parquet reader.

PyIceberg plans which files hold the rows asked for: it opens only the manifests whose partition bounds
in the manifest list match (one a month after ``manifests_job``), then keeps the files whose bounds
match. DuckDB then reads exactly those files. Two reasons to read this way rather than ``iceberg_scan``:

* DuckDB 1.5.5's ``iceberg_scan`` decodes every manifest entry of the snapshot while binding, before a
  filter applies (duckdb/duckdb-iceberg#995, fixed after 1.5.5 by #1197), so a one-day read of a
  three-year table pays for its thousand files; planned here it pays for one month's manifest.
* DuckDB's reader streams under its memory limit, where rows handed to it from Python as Arrow batches
  are held outside it (compaction sorts more than memory this way).

It is right only where the files need no mapping beyond names: no delete files, no column ever
renamed, primitive types only; added columns read as NULL, widened ones are cast. Anything else gets
None, and the caller falls back to ``iceberg_scan`` or PyIceberg's reader (``planned_select`` does the
former).
"""

from __future__ import annotations

from collections.abc import Iterable

import duckdb
from pyiceberg.expressions import BooleanExpression
from pyiceberg.schema import Schema
from pyiceberg.table import FileScanTask, Table

from sonik_pipeline.lakehouse.duckdb_io.sql import duckdb_type, sql_identifier, sql_string


def columns_keep_their_names(table: Table) -> bool:
    """True when no column was ever renamed: every file then names its columns as the schema does today."""
    current = table.schema()
    for schema in table.metadata.schemas:
        for column in schema.fields:
            try:
                if current.find_column_name(column.field_id) not in (None, column.name):
                    return False
            except ValueError:
                continue
    return True


def duckdb_path(location: str) -> str:
    """A data file's location as DuckDB opens it (local files without their scheme)."""
    return location.removeprefix("file://")


def empty_select(schema: Schema) -> str:
    """A SELECT of no rows with the table's columns: what an empty table, or no matching file, reads as."""
    columns = ", ".join(
        f"CAST(NULL AS {duckdb_type(f.field_type) or 'VARCHAR'}) AS {sql_identifier(f.name)}" for f in schema.fields
    )
    return f"SELECT {columns} WHERE false"


def native_select(table: Table, con: duckdb.DuckDBPyConnection, tasks: Iterable[FileScanTask]) -> str | None:
    """A SELECT of the files' rows with DuckDB's Parquet reader, typed as the schema today; or None."""
    tasks = list(tasks)
    fields = table.schema().fields
    types = {f.name: duckdb_type(f.field_type) for f in fields}
    if any(t.delete_files for t in tasks) or None in types.values() or not columns_keep_their_names(table):
        return None
    if not tasks:
        return empty_select(table.schema())
    files = "[" + ", ".join(sql_string(duckdb_path(t.file.file_path)) for t in tasks) + "]"
    source = f"read_parquet({files}, union_by_name = true)"
    present = {name for (name, *_) in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    columns = []
    for f in fields:
        value = sql_identifier(f.name) if f.name in present else "NULL"  # a column added after the file
        columns.append(f"CAST({value} AS {types[f.name]}) AS {sql_identifier(f.name)}")
    return f"SELECT {', '.join(columns)} FROM {source}"


def planned_select(table: Table, con: duckdb.DuckDBPyConnection, row_filter: str | BooleanExpression) -> str:
    """A SELECT of the files PyIceberg plans for ``row_filter`` (a superset of its rows: filter them again),
    or of ``iceberg_scan`` where those files cannot be read natively."""
    select = native_select(table, con, table.scan(row_filter=row_filter).plan_files())
    if select is None:
        select = f"SELECT * FROM iceberg_scan({sql_string(table.metadata_location)})"
    return select
