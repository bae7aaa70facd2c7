"""Opening the Iceberg catalog from a URI and a warehouse, the same way for SQLite, Postgres or REST."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table
from pyiceberg.utils.config import Config

# SQLite serialises writers; waiting for the lock beats failing a commit with "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 60


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


def open_catalog(name: str, uri: str, warehouse: str) -> Catalog:
    """Load the catalog named ``name``; the URI scheme picks SQL (sqlite, postgresql) or REST (http)."""
    if uri.startswith("sqlite:///"):
        # The embedded default must work on a fresh machine: create the folder the SQLite file lives in.
        path = urlsplit(uri).path
        if path and path not in ("/", "/:memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return load_catalog(name, **catalog_properties(name, uri, warehouse))


def table_name(table: Table) -> str:
    """A table's name as people write it: ``music.plays``."""
    return ".".join(table.name())
