"""Building DuckDB SQL safely: quoting of strings and identifiers, and Iceberg types as DuckDB types."""

from __future__ import annotations

from pyiceberg.types import (
    BinaryType,
    BooleanType,
    DateType,
    DecimalType,
    DoubleType,
    FixedType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    StringType,
    TimestampType,
    TimestamptzType,
    TimeType,
    UUIDType,
)

_DUCKDB_TYPES: dict[type[IcebergType], str] = {
    BooleanType: "BOOLEAN",
    IntegerType: "INTEGER",
    LongType: "BIGINT",
    FloatType: "FLOAT",
    DoubleType: "DOUBLE",
    DateType: "DATE",
    TimeType: "TIME",
    TimestampType: "TIMESTAMP",
    TimestamptzType: "TIMESTAMPTZ",
    StringType: "VARCHAR",
    BinaryType: "BLOB",
    FixedType: "BLOB",
    UUIDType: "UUID",
}


def sql_string(value: str) -> str:
    """A SQL string literal: ``it's`` -> ``'it''s'``."""
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """A quoted SQL identifier, with embedded double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


def duckdb_type(field_type: IcebergType) -> str | None:
    """The DuckDB type of an Iceberg primitive type, or None for one DuckDB should not be trusted with here."""
    if isinstance(field_type, DecimalType):
        return f"DECIMAL({field_type.precision}, {field_type.scale})"
    return _DUCKDB_TYPES.get(type(field_type))
