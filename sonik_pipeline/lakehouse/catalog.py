"""Opening the Iceberg catalog from a URI and a warehouse, the same way for SQLite, Postgres or REST."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pyiceberg.catalog import Catalog, load_catalog

# SQLite serialises writers; waiting for the lock beats failing a commit with "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 60


def _with_sqlite_busy_timeout(uri: str) -> str:
    if not uri.startswith("sqlite") or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if urlsplit(uri).query else '?'}timeout={SQLITE_BUSY_TIMEOUT_SECONDS}"


def open_catalog(name: str, uri: str, warehouse: str) -> Catalog:
    """Load the catalog named ``name``; the URI scheme picks SQL (sqlite, postgresql) or REST (http).

    PyIceberg's own configuration (``~/.pyiceberg.yaml``, ``PYICEBERG_CATALOG__<NAME>__*`` such as
    ``s3.endpoint``) is merged in by ``load_catalog``, so object-storage settings need no code here.
    """
    if uri.startswith("sqlite:///"):
        # The embedded default must work on a fresh machine: create the folder the SQLite file lives in.
        path = urlsplit(uri).path
        if path and path not in ("/", "/:memory:"):
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    return load_catalog(name, uri=_with_sqlite_busy_timeout(uri), warehouse=warehouse)
