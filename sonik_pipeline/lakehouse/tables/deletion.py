"""The rule every deletion of a lakehouse file passes: inside the table's location and the warehouse.

Iceberg metadata holds absolute paths, so a lakehouse copied elsewhere (a backup, a test copy) still
points at the original's files, and maintenance run on the copy would delete the original's. Expiry,
orphan removal, discarding staged files and compaction's clean-up check all their files here before
deleting any. Locations are compared as PyIceberg's FileIO resolves them when it deletes (scheme,
bucket or host, path), on a "/" boundary; ``file:///x`` and ``/x`` are the same file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.tables.catalog import storage_root, table_name

# Schemes PyIceberg's PyArrowFileIO serves with the same filesystem.
_SAME_SCHEME = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


class UnsafeDeletion(RuntimeError):
    """A deletion was refused before any file was deleted: a file lies outside its table or the warehouse."""


def _parts(location: str) -> tuple[str, str, str]:
    scheme, netloc, path = PyArrowFileIO.parse_location(location)
    if scheme == "file":
        path = os.path.realpath(path)  # what the OS would delete: '..' and symbolic links resolved
    return _SAME_SCHEME.get(scheme, scheme), netloc, path.rstrip("/") or "/"


def is_within(location: str, root: str, *, strictly: bool = False) -> bool:
    """Whether ``location`` is ``root`` or below it (strictly: below it only)."""
    scheme, netloc, path = _parts(location)
    root_scheme, root_netloc, root_path = _parts(root)
    if (scheme, netloc) != (root_scheme, root_netloc):
        return False
    return path.startswith(root_path.rstrip("/") + "/") or (not strictly and path == root_path)


def _is_location(warehouse: str | None) -> bool:
    """A catalog opened without our storage root may name its warehouse; then only the table rule applies."""
    return bool(warehouse) and ("://" in warehouse or warehouse.startswith("/"))


def configured_warehouse(table: Table) -> str | None:
    """``SONIK_WAREHOUSE``, where the table's files must lie, even when the catalog's ``warehouse`` is a name."""
    return storage_root(table.catalog.properties) or None


def check_table_location(table: Table) -> None:
    """Refuse a table stored outside the configured warehouse: its files are some other lakehouse's."""
    warehouse = configured_warehouse(table)
    if _is_location(warehouse) and not is_within(table.location(), warehouse):
        raise UnsafeDeletion(
            f"{table_name(table)} is stored at {table.location()}, outside the configured warehouse "
            f"{warehouse}: a copied lakehouse still points at the original's files (Iceberg metadata holds "
            "absolute paths); nothing was deleted"
        )


def check_deletable(table: Table, locations: Iterable[str]) -> list[str]:
    """All of ``locations``, once every one is checked to lie under the table's location and the warehouse."""
    locations = list(locations)
    if not locations:
        return locations
    check_table_location(table)
    outside = [loc for loc in locations if not is_within(loc, table.location(), strictly=True)]
    if outside:
        raise UnsafeDeletion(
            f"{table_name(table)}: {len(outside)} of {len(locations)} files to delete lie outside the "
            f"table's location {table.location()} (e.g. {outside[0]}), and only files under it are deleted; "
            "nothing was deleted"
        )
    return locations


def delete_locations(table: Table, locations: Iterable[str]) -> None:
    """Delete files of ``table`` through its FileIO, all checked first; files already gone are skipped."""
    for location in check_deletable(table, locations):
        try:
            table.io.delete(location)
        except FileNotFoundError:
            pass
