"""Opening the catalog: what a user sees when it cannot be opened, and the embedded default on a fresh machine."""

import socket
from pathlib import Path

import pytest
import sqlalchemy.exc

from sonik_pipeline.lakehouse.catalog import CatalogUnavailable, open_catalog


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
