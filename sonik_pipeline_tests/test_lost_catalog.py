"""A lost or wrong catalog costs no data: nothing is created over a lost table, orphan removal never takes
another table's files, and `sonik reattach` gives the table back as it was."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
from pyiceberg.catalog import Catalog
from sqlalchemy.engine import make_url

from sonik_pipeline import cli
from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables import attachment
from sonik_pipeline.lakehouse.tables.attachment import TableLocationTaken, expected_location
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS, op_output_metadata, private_postgres_database, run_asset_job

FIRST, LAST = "2026-04-18", "2026-04-20"
DEFAULT_ORPHAN_RUN = {"ops": {"remove_orphans": {"config": {}}}}  # the scheduled job's 72-hour window


def _files(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


def _age_everything(warehouse: Path, days: int = 7) -> None:
    """The probe's `find ... -exec touch -d '7 days ago'`: every file past any orphan window."""
    then = time.time() - days * 86400
    for path in warehouse.rglob("*"):
        if path.is_file():
            os.utime(path, (then, then))


@contextmanager
def lost_catalog(settings: Settings, catalog: Catalog) -> Iterator[Settings]:
    """The same warehouse with an empty catalog: SQLite's catalog.db deleted, or Postgres pointed at a new database."""
    catalog.engine.dispose()  # its pooled connections would still see a deleted SQLite file
    if settings.catalog_uri.startswith("sqlite"):
        Path(make_url(settings.catalog_uri).database).unlink()
        # The same file under a URI this process has not opened yet: a new run's process opens it afresh.
        yield _with_catalog(settings, settings.catalog_uri + "?timeout=30")
        return
    with private_postgres_database(os.environ["SONIK_TEST_POSTGRES_URL"]) as empty:
        lost = _with_catalog(settings, empty)
        yield lost
        open_catalog(CATALOG_NAME, lost.catalog_uri, lost.warehouse).engine.dispose()  # before the database goes


def _with_catalog(settings: Settings, uri: str) -> Settings:
    return Settings.from_env(
        {"SONIK_HOME": str(settings.home), "SONIK_CATALOG_URI": uri, "SONIK_EVENTS_PER_DAY": str(SMALL_DAY_EVENTS)}
    )


def _sonik(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.setenv("SONIK_HOME", str(settings.home))
    monkeypatch.setenv("SONIK_CATALOG_URI", settings.catalog_uri)
    code = cli.main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def _failure(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.event_specific_data.error.message


def _orphans(settings: Settings) -> dg.ExecuteInProcessResult:
    return (
        build_definitions(settings)
        .resolve_job_def("orphans_job")
        .execute_in_process(DEFAULT_ORPHAN_RUN, instance=dg.DagsterInstance.get(), raise_on_error=False)
    )


def test_a_lost_catalog_creates_nothing_over_the_table_and_reattach_gives_it_back(
    settings: Settings, catalog: Catalog, defs: dg.Definitions, monkeypatch, capsys
) -> None:
    # Given three ingested days, every file a week old
    assert run_asset_job(defs, "plays_job", FIRST, LAST).success
    table = catalog.load_table(PLAYS.identifier)
    snapshots, rows = [s.snapshot_id for s in table.snapshots()], table.scan().to_arrow().num_rows
    assert rows == 3 * SMALL_DAY_EVENTS
    warehouse = settings.home / "warehouse"
    _age_everything(warehouse)
    before = _files(warehouse)

    with lost_catalog(settings, catalog) as lost:
        # When the catalog is lost and a day is materialized, and the default orphans_job runs
        ingest = run_asset_job(build_definitions(lost), "plays_job", LAST)
        orphans = _orphans(lost)

        # Then the ingest refuses in one line that names the table, where it lives and what to do
        assert not ingest.success
        message = _failure(ingest)
        assert "cannot create music.plays: the catalog has no such table, but its files are at" in message
        assert "sonik reattach" in message and "nothing was created" in message
        # and nothing was created in the catalog or deleted from the warehouse
        assert orphans.success
        assert _files(warehouse) == before
        assert open_catalog(CATALOG_NAME, lost.catalog_uri, lost.warehouse).list_tables("music") == []

        # And `sonik tables` says the catalog lacks tables whose files are there, and fails
        code, out, err = _sonik(lost, monkeypatch, capsys, "tables")
        assert code == 1
        assert "music.plays: the catalog has no such table, but its files are at" in err
        assert "sonik reattach" in err

        # When `sonik reattach` runs
        code, out, err = _sonik(lost, monkeypatch, capsys, "reattach")

        # Then every lost table is back as it was: the same snapshots, rows, and time travel
        assert code == 0, err
        assert "music.plays" in out
        back = open_catalog(CATALOG_NAME, lost.catalog_uri, lost.warehouse).load_table(PLAYS.identifier)
        assert [s.snapshot_id for s in back.snapshots()] == snapshots
        assert back.scan().to_arrow().num_rows == rows
        for snapshot in back.snapshots():
            scanned = back.scan(snapshot_id=snapshot.snapshot_id).to_arrow().num_rows
            assert scanned == int(snapshot.summary["total-records"])
        # and the pipeline goes on where it was: a re-run day replaces its copy, orphans_job takes nothing
        assert run_asset_job(build_definitions(lost), "plays_job", LAST).success
        assert _orphans(lost).success
        removed = set(before) - set(_files(warehouse))
        # only the version-0 file of the empty quarantine the re-run created anew (it held no data)
        assert len(removed) <= 1 and all(p.startswith("music/plays_rejected/metadata/00000-") for p in removed)
        again = open_catalog(CATALOG_NAME, lost.catalog_uri, lost.warehouse).load_table(PLAYS.identifier)
        assert again.scan().to_arrow().num_rows == rows
        assert len(again.snapshots()) == len(snapshots) + 1


def test_orphan_removal_never_takes_the_files_of_a_table_created_over_a_lost_one(
    settings: Settings, catalog: Catalog, defs: dg.Definitions, monkeypatch, capsys
) -> None:
    # Given three ingested days whose catalog was lost, and a new table created over them as before the
    # fix (a catalog that does not know the old table: another engine, an older version of this project)
    assert run_asset_job(defs, "plays_job", FIRST, LAST).success
    original = catalog.load_table(PLAYS.identifier)
    snapshots = [s.snapshot_id for s in original.snapshots()]
    warehouse = settings.home / "warehouse"
    with lost_catalog(settings, catalog) as lost:
        over = open_catalog(CATALOG_NAME, lost.catalog_uri, lost.warehouse)
        over.create_namespace("music")
        new = over.create_table(PLAYS.identifier, PLAYS.schema, partition_spec=PLAYS.spec, properties=PLAYS.properties)
        assert new.location() == original.location()
        for _ in range(2):  # one day in the new table, ingested twice (a snapshot for its expiry to take)
            assert run_asset_job(build_definitions(lost), "plays_job", LAST).success
        _age_everything(warehouse)
        before = _files(warehouse)

        # When the default orphans_job runs
        orphans = _orphans(lost)

        # Then it refuses, naming both tables and the way back, and deletes nothing
        assert not orphans.success
        message = _failure(orphans)
        assert f"music.plays (uuid {new.metadata.table_uuid}) shares its location" in message
        assert f"another table (uuid {original.metadata.table_uuid}" in message
        assert "sonik reattach music.plays --replace" in message and "nothing was deleted" in message
        assert _files(warehouse) == before
        # and expiry of the new table keeps the old table's metadata files, older than all of its own
        expiry = (
            build_definitions(lost)
            .resolve_job_def("expiry_job")
            .execute_in_process(
                {"ops": {"expire_table_snapshots": {"config": {"retention_days": 0, "retain_last": 1}}}},
                instance=dg.DagsterInstance.get(),
            )
        )
        assert expiry.success and op_output_metadata(expiry, "expire_table_snapshots")["snapshots_expired"].value
        for location in [original.metadata_location, *(e.metadata_file for e in original.metadata.metadata_log)]:
            assert Path(location.removeprefix("file://")).exists()

        # When the original is re-attached in place of the new table
        code, out, err = _sonik(lost, monkeypatch, capsys, "reattach", "music.plays", "--replace")
        assert code == 0, err
        back = open_catalog(CATALOG_NAME, lost.catalog_uri, lost.warehouse).load_table(PLAYS.identifier)
        assert [s.snapshot_id for s in back.snapshots()] == snapshots

        # Then orphans_job takes the new table's files only, and every original snapshot reads in full
        orphans = _orphans(lost)
        assert orphans.success
        removed = set(before) - set(_files(warehouse))
        new_metadata = str(Path(new.metadata_location.removeprefix("file://")).relative_to(warehouse))
        assert new_metadata in removed
        for snapshot in back.snapshots():
            scanned = back.scan(snapshot_id=snapshot.snapshot_id).to_arrow().num_rows
            assert scanned == int(snapshot.summary["total-records"])


def test_a_version_0_file_of_a_creation_that_never_committed_does_not_block_creating(catalog: Catalog) -> None:
    # Given the version-0 metadata file of a first run that died before the catalog recorded its table
    catalog.create_namespace_if_not_exists(PLAYS.namespace)
    catalog.create_table(PLAYS.identifier, PLAYS.schema, partition_spec=PLAYS.spec)
    stale = catalog.load_table(PLAYS.identifier)
    catalog.drop_table(PLAYS.identifier)  # the catalog entry only: the file stays

    # When the table is created
    table, _ = ensure_table(catalog, PLAYS)

    # Then it is, at the same location, a new table beside the stale file (which held no data)
    assert table.location() == stale.location()
    assert table.metadata.table_uuid != stale.metadata.table_uuid
    assert Path(stale.metadata_location.removeprefix("file://")).exists()


def test_a_table_created_with_commits_over_its_location_is_refused_even_without_a_catalog_row(catalog: Catalog) -> None:
    # Given a table with one commit, whose catalog entry is gone
    table, _ = ensure_table(catalog, PLAYS)
    table.append(synthetic_batch(dt.date(2026, 4, 20), 10).cast(table.schema().as_arrow()))
    catalog.drop_table(PLAYS.identifier)

    # When the table is to be created again, then it is refused and the catalog stays without it
    with pytest.raises(TableLocationTaken, match=r"cannot create music\.plays: .* nothing was created"):
        ensure_table(catalog, PLAYS)
    assert not catalog.table_exists(PLAYS.identifier)


def _half_written_creation(catalog: Catalog) -> Path:
    """The version-0 file of a creation caught mid-write: the catalog row does not exist yet."""
    location = Path(expected_location(catalog, PLAYS.identifier).removeprefix("file://"))
    (location / "metadata").mkdir(parents=True)
    half = location / "metadata" / f"00000-{uuid.uuid4()}.metadata.json"
    half.write_text('{"format-version": 2, "table-uuid": "')
    return half


def test_a_concurrent_creation_caught_mid_write_is_waited_for_and_used(catalog: Catalog) -> None:
    # Given another run's creation of the table, its metadata file half-written and no catalog row yet
    catalog.create_namespace_if_not_exists(PLAYS.namespace)
    half = _half_written_creation(catalog)

    def the_other_run_finishes() -> None:
        time.sleep(0.5)
        catalog.create_table(PLAYS.identifier, PLAYS.schema, partition_spec=PLAYS.spec, properties=PLAYS.properties)
        half.unlink()

    other = threading.Thread(target=the_other_run_finishes)
    other.start()

    # When this run ensures the table meanwhile
    table, _ = ensure_table(catalog, PLAYS)
    other.join()

    # Then it waited and took the other run's table, not refusing it as a lost one
    assert table.metadata.table_uuid == catalog.load_table(PLAYS.identifier).metadata.table_uuid


def test_an_unreadable_version_0_file_that_never_becomes_a_table_is_refused_after_the_wait(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an unreadable version-0 file that no run is about to register
    catalog.create_namespace_if_not_exists(PLAYS.namespace)
    _half_written_creation(catalog)
    monkeypatch.setattr(attachment, "CREATION_SETTLE_SECONDS", 0.3)

    # When the table is to be created, then it is refused once the wait is over (it cannot be told from a table)
    with pytest.raises(TableLocationTaken, match=r"cannot create music\.plays"):
        ensure_table(catalog, PLAYS)
    assert not catalog.table_exists(PLAYS.identifier)


def test_a_table_created_by_another_run_between_our_look_and_our_commit_is_used(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given another run that creates the table right after this run looked at the location (and found nothing)
    catalog.create_namespace_if_not_exists(PLAYS.namespace)
    looked = attachment.holding

    def look_then_the_other_run_commits(*args, **kwargs):
        verdict = looked(*args, **kwargs)
        if not catalog.table_exists(PLAYS.identifier):
            catalog.create_table(PLAYS.identifier, PLAYS.schema, partition_spec=PLAYS.spec)
        return verdict

    monkeypatch.setattr(attachment, "holding", look_then_the_other_run_commits)

    # When this run's own creation then commits, then it takes the other run's table (no failure)
    table, _ = ensure_table(catalog, PLAYS)
    assert table.metadata.table_uuid == catalog.load_table(PLAYS.identifier).metadata.table_uuid
