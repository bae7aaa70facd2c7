"""A commit that fails leaves nothing it wrote, unless it may have landed: then it leaves everything."""

from __future__ import annotations

import datetime as dt
import errno
import sqlite3
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table.update import snapshot as snapshot_module

from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch, synthetic_events
from sonik_pipeline.lakehouse.tables.catalog import CatalogLocked, open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.maintenance.compaction import CompactionOptions, compact_table
from sonik_pipeline.settings import CATALOG_NAME

DAY = dt.date(2026, 4, 20)


def _files(warehouse: Path) -> set[str]:
    return {str(p.relative_to(warehouse)) for p in warehouse.rglob("*") if p.is_file()}


def _warehouse(catalog: Catalog) -> Path:
    return Path(catalog.properties["warehouse"].removeprefix("file://"))


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_disk_full_while_writing_the_manifest_list_leaves_no_staged_file(catalog: Catalog, monkeypatch) -> None:
    # Given a day already ingested
    ingest_day(catalog, DAY, synthetic_events(DAY, 1_000))
    before = _files(_warehouse(catalog))
    current = catalog.load_table(PLAYS.identifier).metadata_location

    # When the next day's commit finds the disk full as it writes its manifest list
    monkeypatch.setattr(snapshot_module, "write_manifest_list", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        ingest_day(catalog, DAY + dt.timedelta(days=1), synthetic_events(DAY + dt.timedelta(days=1), 1_000))

    # Then neither its data files nor its manifests stay, and the table is as it was
    assert _files(_warehouse(catalog)) == before
    assert catalog.load_table(PLAYS.identifier).metadata_location == current


def test_a_catalog_locked_past_its_timeout_leaves_no_staged_file(tmp_path: Path) -> None:
    # Given a day ingested into a SQLite catalog that waits 1 s for a lock
    database = tmp_path / "catalog.db"
    catalog = open_catalog(CATALOG_NAME, f"sqlite:///{database}?timeout=1", (tmp_path / "warehouse").as_uri())
    ingest_day(catalog, DAY, synthetic_events(DAY, 1_000))
    before = _files(tmp_path / "warehouse")

    # When another process holds the catalog's write lock through the next day's commit
    holder = sqlite3.connect(database, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(CatalogLocked, match="stayed locked by another process for 1 s"):
            ingest_day(catalog, DAY + dt.timedelta(days=1), synthetic_events(DAY + dt.timedelta(days=1), 1_000))
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    # Then nothing it staged or wrote stays (data files, manifests, manifest lists, metadata files)
    assert _files(tmp_path / "warehouse") == before
    assert catalog.load_table(PLAYS.identifier).scan().count() == 1_000


def test_a_commit_that_landed_before_its_error_keeps_every_file(catalog: Catalog, monkeypatch) -> None:
    # Given a day ingested
    ingest_day(catalog, DAY, synthetic_events(DAY, 1_000))
    table, _ = ensure_table(catalog, PLAYS)

    # When a commit lands but the answer is lost (an error raised after the catalog swapped its pointer)
    swap = type(catalog).commit_table

    def lost_answer(self, *args, **kwargs):
        swap(self, *args, **kwargs)
        raise RuntimeError("connection reset after the commit")

    monkeypatch.setattr(type(catalog), "commit_table", lost_answer)
    with pytest.raises(RuntimeError, match="connection reset"):
        ingest_day(catalog, DAY + dt.timedelta(days=1), synthetic_events(DAY + dt.timedelta(days=1), 1_000))
    monkeypatch.undo()

    # Then what landed reads in full: not one of its files was taken for a failed commit's
    table.refresh()
    assert table.scan().count() >= 1_000
    for task in table.scan().plan_files():
        assert Path(task.file.file_path.removeprefix("file://")).exists()
    assert table.scan().to_arrow().num_rows == table.scan().count()


def test_a_compaction_whose_commit_fails_leaves_no_rewritten_file(catalog: Catalog, monkeypatch) -> None:
    # Given a day of eight small files
    table, _ = ensure_table(catalog, PLAYS)
    for batch in range(8):
        table.append(synthetic_batch(DAY, 100, batch=batch).cast(table.schema().as_arrow()))
    before = _files(_warehouse(catalog))

    # When its compaction's commit finds the disk full
    monkeypatch.setattr(snapshot_module, "write_manifest_list", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        compact_table(catalog.load_table(PLAYS.identifier), CompactionOptions(min_input_files=2))

    # Then the rewritten files are gone with everything the commit wrote
    assert _files(_warehouse(catalog)) == before
