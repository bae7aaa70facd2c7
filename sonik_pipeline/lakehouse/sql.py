"""Building DuckDB SQL safely: quoting of strings and identifiers, in one place."""

from __future__ import annotations


def sql_string(value: str) -> str:
    """A SQL string literal: ``it's`` -> ``'it''s'``."""
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """A quoted SQL identifier, with embedded double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'
