"""Turning Arrow results into metadata the Dagster UI renders."""

from __future__ import annotations

import datetime as dt
import decimal

import dagster as dg
import pyarrow as pa

_COLUMN_TYPE = {"int": "int", "uint": "int", "float": "float", "double": "float", "bool": "bool"}


def _cell(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat(sep=" ") if isinstance(value, dt.datetime) else value.isoformat()
    return str(value)


def table_preview(rows: pa.Table, limit: int = 10) -> dg.TableMetadataValue:
    """The first ``limit`` rows as a table in the UI."""
    head = rows.slice(0, limit)
    schema = dg.TableSchema(
        columns=[
            dg.TableColumn(f.name, next((v for k, v in _COLUMN_TYPE.items() if str(f.type).startswith(k)), "string"))
            for f in head.schema
        ]
    )
    records = [dg.TableRecord({k: _cell(v) for k, v in row.items()}) for row in head.to_pylist()]
    return dg.MetadataValue.table(records=records, schema=schema)
