"""What every ``sonik`` command shares: its one-line errors, argument types, the catalog and the output formats."""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

# Only the standard library at the top of this module and of every command module: `sonik --help` builds
# the whole parser, and PyIceberg, DuckDB, PyArrow and SQLAlchemy cost about a second to import. Each
# command imports what it uses when it runs (benchmarks/cli.py measures it).


class UsageError(ValueError):
    """Bad input from the user: printed as one line, never a stack trace."""


def user_errors() -> tuple[type[Exception], ...]:
    """The failures a user causes or can fix (bad input or settings, a catalog unreachable or locked, a table
    whose files are damaged, named), each printed as one line; anything else is a bug and keeps its
    traceback, so it is reported rather than hidden behind a message.

    A function, not a constant: the classes live in heavy modules, imported only once an error is caught
    (by then the command that raised it has imported them anyway).
    """
    from sonik_pipeline.lakehouse.reads.timetravel import TimeTravelError
    from sonik_pipeline.lakehouse.tables.catalog import CatalogUnavailable, TableUnreadable
    from sonik_pipeline.settings import SettingsError

    return (UsageError, SettingsError, CatalogUnavailable, TableUnreadable, TimeTravelError)


def day_argument(text: str) -> dt.date:
    from sonik_pipeline.lakehouse.days import parse_day

    try:
        return parse_day(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def positive_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


class SonikParser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other ``sonik`` error (the usage is one --help away)."""

    def error(self, message: str):
        self.exit(2, f"sonik: error: {message} (see {self.prog} --help)\n")


def catalog_from_settings():
    from sonik_pipeline.lakehouse.tables.catalog import open_catalog
    from sonik_pipeline.settings import CATALOG_NAME, Settings

    settings = Settings.from_env()
    return open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)


def lakehouse_duckdb(catalog) -> duckdb.DuckDBPyConnection:
    """DuckDB on the lakehouse, held to SONIK_DUCKDB_MEMORY_LIMIT as the Dagster steps are."""
    import duckdb

    from sonik_pipeline.lakehouse.duckdb_io.extensions import lakehouse_connection
    from sonik_pipeline.settings import Settings

    return lakehouse_connection(duckdb.connect(), catalog.properties, Settings.from_env().duckdb_memory_limit)


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    return str(value)


def print_rows(columns: list[str], rows: list[tuple], fmt: str, out=None) -> None:
    """Rows as an aligned table (for people), CSV or JSON (for programs)."""
    out = out or sys.stdout
    if fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(columns)
        writer.writerows([[_cell(v) for v in row] for row in rows])
    elif fmt == "json":
        records = [dict(zip(columns, row, strict=True)) for row in rows]
        json.dump(records, out, default=_cell, indent=2)
        out.write("\n")
    else:
        cells = [columns, *[[_cell(v) for v in row] for row in rows]]
        widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
        for n, row in enumerate(cells):
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() + "\n")
            if n == 0:
                out.write("  ".join("-" * w for w in widths) + "\n")
        out.write(f"({len(rows)} row{'s' if len(rows) != 1 else ''})\n")


def add_format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output (default table)")
