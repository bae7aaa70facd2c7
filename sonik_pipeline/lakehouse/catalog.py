"""Opening the Iceberg catalog from a URI and a warehouse, the same way for SQLite, Postgres or REST."""

from __future__ import annotations

import functools
from pathlib import Path
from urllib.parse import urlsplit

import sqlalchemy.exc
from pydantic import ValidationError
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import RESTError
from pyiceberg.table import Table
from pyiceberg.utils.config import Config
from sqlalchemy.engine import make_url

from sonik_pipeline.settings import catalog_uri_problem, redact

# SQLite serialises writers; waiting for the lock beats failing a commit with "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 60


class CatalogUnavailable(Exception):  # noqa: N818 - reads as what it is
    """The catalog cannot be opened (bad URI, server down, unusable SQLite path): one line saying what to do."""


def _with_sqlite_busy_timeout(uri: str) -> str:
    if not uri.startswith("sqlite") or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if urlsplit(uri).query else '?'}timeout={SQLITE_BUSY_TIMEOUT_SECONDS}"


def catalog_properties(name: str, uri: str, warehouse: str) -> dict[str, str]:
    """PyIceberg's configuration of catalog ``name`` as it stands now, with our URI and warehouse on top.

    That is ``~/.pyiceberg.yaml`` and ``PYICEBERG_CATALOG__<NAME>__*`` variables, such as
    ``PYICEBERG_CATALOG__SONIK__S3__ENDPOINT`` for ``s3.endpoint``: object-storage endpoints and
    credentials stay in PyIceberg's standard settings, never in Dagster config. ``load_catalog`` reads
    the environment once, at import; reading it here too means a changed environment is always seen.
    """
    configured = Config().get_catalog_config(name) or {}
    return {**{k: str(v) for k, v in configured.items()}, "uri": _with_sqlite_busy_timeout(uri), "warehouse": warehouse}


def _what_to_do(uri: str) -> str:
    if uri.startswith("sqlite"):
        return "check that SONIK_HOME (or the SONIK_CATALOG_URI path) is a writable folder and the catalog path a file"
    if uri.startswith("postgresql"):
        return "check SONIK_CATALOG_URI and that the PostgreSQL server is running and accepts connections"
    return "check SONIK_CATALOG_URI and that the REST catalog is running"


def _first_line(exc: BaseException, password: str | None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # SQLAlchemy prefixes the driver's exception class: "(psycopg.OperationalError) connection failed: ..."
    text = text.split(") ", 1)[1] if text.startswith("(") and ") " in text else text
    return text.replace(password, "***") if password else text


@functools.cache
def _catalog(name: str, properties: tuple[tuple[str, str], ...]) -> Catalog:
    """One catalog per configuration and process: its SQL engine and connection pool are reused by every
    step, check and command rather than opened (and left to the garbage collector) each time. A changed
    configuration (URI, warehouse, ``s3.*`` settings) is another key, so it is always seen."""
    return load_catalog(name, **dict(properties))


def open_catalog(name: str, uri: str, warehouse: str) -> Catalog:
    """Load the catalog named ``name``; the URI scheme picks SQL (sqlite, postgresql) or REST (http).

    Failures a user causes and can fix (a bad URI, a server that is down or refuses, a SQLite file
    that cannot be created or opened) are one ``CatalogUnavailable``, naming the URI without its
    password; the original error stays chained for a Dagster run's stack trace.
    """
    shown = redact(uri)
    if problem := catalog_uri_problem(uri):
        raise CatalogUnavailable(f"cannot open the Iceberg catalog {shown}: {problem}")
    try:
        if uri.startswith("sqlite:///"):
            # The embedded default must work on a fresh machine: create the folder the SQLite file lives in.
            # SQLAlchemy's reading: sqlite:///relative/catalog.db is relative, sqlite:////abs/catalog.db absolute.
            path = make_url(uri).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        return _catalog(name, tuple(sorted(catalog_properties(name, uri, warehouse).items())))
    except (
        OSError,  # a folder that cannot be created; requests' ConnectionError is an OSError too
        ModuleNotFoundError,  # postgresql+DRIVER with DRIVER not installed
        sqlalchemy.exc.ArgumentError,  # includes NoSuchModuleError (an unknown dialect or driver)
        sqlalchemy.exc.DBAPIError,  # OperationalError (unreachable, unopenable), ProgrammingError (no rights)
        RESTError,  # a REST catalog that answers with an error
        ValidationError,  # an HTTP server that is not an Iceberg REST catalog
    ) as exc:
        raise CatalogUnavailable(
            f"cannot open the Iceberg catalog {shown}: {_first_line(exc, urlsplit(uri).password)}; {_what_to_do(uri)}"
        ) from exc


def table_name(table: Table) -> str:
    """A table's name as people write it: ``music.plays``."""
    return ".".join(table.name())
