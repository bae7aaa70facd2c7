"""Opening the catalog: what a user sees when it cannot be opened, and the embedded default on a fresh machine."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy.exc

from sonik_pipeline.lakehouse.tables.catalog import (
    STORAGE_ROOT,
    CatalogUnavailable,
    catalog_properties,
    open_catalog,
    storage_root,
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_an_unreachable_server_is_named_without_its_password(tmp_path: Path) -> None:
    port = _closed_port()
    uri = f"postgresql+psycopg://sonik:hunter2@127.0.0.1:{port}/catalog"

    with pytest.raises(CatalogUnavailable) as raised:
        open_catalog("sonik", uri, (tmp_path / "warehouse").as_uri())

    message = str(raised.value)
    assert message.startswith(
        f"cannot open the Iceberg catalog postgresql+psycopg://sonik:***@127.0.0.1:{port}/catalog"
    )
    assert "Connection refused; check SONIK_CATALOG_URI and that the PostgreSQL server is running" in message
    assert "hunter2" not in message and "\n" not in message
    assert isinstance(raised.value.__cause__, sqlalchemy.exc.OperationalError)  # kept for a run's stack trace


def test_a_relative_sqlite_catalog_lives_under_the_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sqlite:///lh/catalog.db is relative (SQLAlchemy's reading): its folder is made there, not at /lh."""
    monkeypatch.chdir(tmp_path)

    catalog = open_catalog("sonik", "sqlite:///lh/catalog.db", (tmp_path / "warehouse").as_uri())

    assert catalog.list_namespaces() == []
    assert (tmp_path / "lh" / "catalog.db").is_file()


def _hold_exclusive_lock(database: Path) -> subprocess.Popen:
    """Another process holding SQLite's exclusive lock on ``database`` until its stdin closes."""
    code = (
        "import sqlite3, sys\n"
        f"con = sqlite3.connect({str(database)!r}, isolation_level=None)\n"
        "con.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "locked\n"
    return holder


def test_a_sqlite_catalog_locked_past_its_busy_timeout_is_one_line_with_the_wait(tmp_path: Path) -> None:
    # Given a catalog with a table, waiting 1 s for a lock, and a fresh process opening it
    database = tmp_path / "catalog.db"
    warehouse = (tmp_path / "warehouse").as_uri()
    catalog = open_catalog("sonik", f"sqlite:///{database}?timeout=1", warehouse)
    catalog.create_namespace("music")
    table = catalog.create_table("music.t", schema=pa.schema([pa.field("x", pa.int64())]))
    expected = (
        f"the SQLite catalog {database} stayed locked by another process for 1 s (its busy timeout): a long write "
        f"holds it; re-run when that has finished (`lsof {database}` lists the processes using it)"
    )

    # When another process holds the lock during a read, a commit, and an open
    holder = _hold_exclusive_lock(database)
    try:
        with pytest.raises(CatalogUnavailable) as read:
            catalog.load_table("music.t")
        with pytest.raises(CatalogUnavailable) as commit:
            table.append(pa.table({"x": [1]}))
        started = time.monotonic()
        with pytest.raises(CatalogUnavailable) as opened:
            open_catalog("sonik", f"sqlite:///{database}?timeout=1.0", warehouse)
        waited = time.monotonic() - started
    finally:
        holder.communicate("", timeout=30)

    # Then each is one line with the wait, the driver's error kept as its cause
    assert str(read.value) == str(commit.value) == expected
    assert str(opened.value) == expected.replace("for 1 s", "for 1.0 s")
    assert "database is locked" in str(read.value.__cause__)
    assert waited >= 1
    # And nothing was committed, and the catalog works again once the lock is gone
    assert catalog.load_table("music.t").current_snapshot() is None
    table.append(pa.table({"x": [1]}))
    assert catalog.load_table("music.t").scan().count() == 1


def test_the_catalogs_warehouse_is_sonik_warehouse_unless_pyiceberg_names_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given PyIceberg's own settings for the catalog, without a warehouse of their own
    monkeypatch.setenv("PYICEBERG_CATALOG__SONIK__S3__ENDPOINT", "http://127.0.0.1:8333")
    uri = "http://127.0.0.1:8181"

    # Then SONIK_WAREHOUSE is the catalog's warehouse and the storage root alike, as it always was
    plain = catalog_properties("sonik", uri, "s3://lake/wh")
    assert (plain["warehouse"], plain[STORAGE_ROOT], plain["s3.endpoint"]) == (
        "s3://lake/wh",
        "s3://lake/wh",
        "http://127.0.0.1:8333",
    )
    assert storage_root(plain) == "s3://lake/wh"

    # When PyIceberg's settings name the warehouse, as Polaris, Lakekeeper, Nessie and S3 Tables want
    arn = "arn:aws:s3tables:us-east-1:111122223333:bucket/lake"
    monkeypatch.setenv("PYICEBERG_CATALOG__SONIK__WAREHOUSE", arn)
    named = catalog_properties("sonik", uri, "s3://lake/wh")

    # Then the catalog is given that name, while the files stay held to SONIK_WAREHOUSE
    assert (named["warehouse"], named[STORAGE_ROOT], named["uri"]) == (arn, "s3://lake/wh", uri)
    assert storage_root(named) == "s3://lake/wh"
    assert storage_root({"warehouse": "file:///opened/elsewhere"}) == "file:///opened/elsewhere"
