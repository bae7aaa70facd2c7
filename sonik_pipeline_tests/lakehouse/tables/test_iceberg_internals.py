"""The contract with PyIceberg's internals (lakehouse/tables/iceberg_internals.py): fast, in-process, fails by name.

An upgrade that renames a private symbol, or stops calling a hook we override, must fail here, naming
it, rather than silently change how compaction or manifest rewriting resolve a conflict.
"""

import datetime as dt
import itertools
import uuid
from pathlib import Path

import pytest
from pyiceberg.exceptions import ValidationException
from pyiceberg.table import Table
from pyiceberg.table.update.snapshot import _SnapshotProducer

from sonik_pipeline.lakehouse.days import epoch_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables import iceberg_internals
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.iceberg_internals import DataFileWriter, RewriteDataFiles, missing_internals
from sonik_pipeline.settings import CATALOG_NAME

DAY = dt.date(2026, 4, 20)


@pytest.fixture
def plays(tmp_path: Path) -> Table:
    catalog = open_catalog(CATALOG_NAME, f"sqlite:///{tmp_path / 'catalog.db'}", (tmp_path / "warehouse").as_uri())
    table, _ = ensure_table(catalog, PLAYS)
    for batch in range(2):
        table.append(synthetic_batch(DAY, 50, batch=batch).cast(table.schema().as_arrow()))
    return catalog.load_table(PLAYS.identifier)


def _other_writer(table: Table) -> Table:
    """The same table through a second catalog handle, as another process would see it."""
    properties = table.catalog.properties
    return open_catalog(CATALOG_NAME, properties["uri"], properties["warehouse"]).load_table(PLAYS.identifier)


def _staged(table: Table, rows: int, batch: int) -> list:
    data = synthetic_batch(DAY, rows, batch=batch).cast(table.schema().as_arrow())
    [(key, part)] = iceberg_internals.split_by_partition(table, data)
    writer = DataFileWriter(table, key, uuid.uuid4(), itertools.count(), 128 * 1024 * 1024)
    writer.write(part)
    return writer.close()


def test_every_internal_symbol_is_there() -> None:
    assert missing_internals() == [], "PyIceberg lacks internals this project relies on"


def test_every_producer_attribute_the_overrides_read_is_set(plays: Table) -> None:
    with plays.transaction() as txn:
        producer = RewriteDataFiles(txn, plays.io, {})
        assert missing_internals(producer) == [], "PyIceberg's _SnapshotProducer no longer sets these attributes"


def test_every_transaction_attribute_the_cache_is_keyed_on_is_set(plays: Table) -> None:
    txn = iceberg_internals.transaction(plays)
    assert missing_internals(transaction=txn) == [], "PyIceberg's Transaction no longer sets these attributes"

    del txn._updates  # as a PyIceberg that renamed it would leave it
    assert missing_internals(transaction=txn) == ["Transaction()._updates"]


def test_a_symbol_patched_away_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(_SnapshotProducer, "_existing_manifests")
    assert missing_internals() == ["_SnapshotProducer._existing_manifests"]


def test_staged_files_belong_to_the_tables_spec_and_partition(plays: Table) -> None:
    files = _staged(plays, 30, batch=7)
    assert [(f.record_count, f.spec_id, f.partition[0]) for f in files] == [(30, 0, epoch_day(DAY))]
    assert files[0].file_path.startswith(plays.location() + "/data/played_day=2026-04-20/00000-0-")


def test_the_writer_rolls_on_the_bytes_pyiceberg_has_written(plays: Table) -> None:
    # ParquetFormatWriter._fos is where the bytes on storage are read from; a tiny target rolls every write
    [(key, _)] = iceberg_internals.split_by_partition(plays, synthetic_batch(DAY, 1).cast(plays.schema().as_arrow()))
    writer = DataFileWriter(plays, key, uuid.uuid4(), itertools.count(), target_bytes=1)
    for batch in range(3):
        writer.write(synthetic_batch(DAY, 10, batch=batch).cast(plays.schema().as_arrow()))
    files = writer.close()
    assert [f.record_count for f in files] == [10, 10, 10], "ParquetFormatWriter._fos no longer tells the bytes"
    assert all(f.file_size_in_bytes == plays.io.new_input(f.file_path).__len__() for f in files)


def test_a_concurrent_append_to_the_partition_being_rewritten_does_not_fail_it(plays: Table) -> None:
    # Given a rewrite of the day's two files into one, planned on the current snapshot
    old = [task.file for task in plays.scan().plan_files()]
    new = _staged(plays, 100, batch=9)
    try:
        with plays.transaction() as txn:
            producer = RewriteDataFiles(txn, plays.io, {"sonik.operation": "compaction"})
            with producer:
                for data_file in old:
                    producer.delete_data_file(data_file)
                for data_file in new:
                    producer.append_data_file(data_file)
            # When another writer appends to the same day before the rewrite commits
            _other_writer(plays).append(synthetic_batch(DAY, 20, batch=3).cast(plays.schema().as_arrow()))
    except ValidationException as conflict:
        pytest.fail(
            f"an append failed the rewrite: is _OverwriteFiles._validate_concurrency still the hook? {conflict}"
        )

    # Then PyIceberg retried through our hook, which let the append stand beside the rewrite
    assert producer.validations == 1, "PyIceberg no longer calls _OverwriteFiles._validate_concurrency on retry"
    plays.refresh()
    assert plays.current_snapshot().snapshot_id == producer.snapshot_id
    assert plays.scan().count() == 120
    assert len(list(plays.scan().plan_files())) == 2


def test_a_concurrent_delete_of_a_replaced_file_fails_the_rewrite(plays: Table) -> None:
    old = [task.file for task in plays.scan().plan_files()]
    new = _staged(plays, 100, batch=9)
    with pytest.raises(ValidationException):
        with plays.transaction() as txn:
            producer = RewriteDataFiles(txn, plays.io, {})
            with producer:
                for data_file in old:
                    producer.delete_data_file(data_file)
                for data_file in new:
                    producer.append_data_file(data_file)
            other = _other_writer(plays)
            with other.transaction() as other_txn:
                with other_txn.update_snapshot().overwrite() as overwrite:
                    overwrite.delete_data_file(old[0])  # someone else removed a file the rewrite replaces
    assert producer.validations == 1, "PyIceberg no longer calls _OverwriteFiles._validate_concurrency on retry"
    plays.refresh()
    assert plays.scan().count() == 50  # only the other writer's delete landed


def test_the_manifest_rewrite_hooks_build_the_new_snapshot(plays: Table) -> None:
    # Two appends, two manifests; a rebuild that writes every live entry into one manifest
    def one_manifest(data_manifests, new_writer):
        with new_writer(plays.spec()) as writer:
            for manifest in data_manifests:
                for entry in manifest.fetch_manifest_entry(plays.io):
                    writer.existing(entry)
        return [writer.to_manifest_file()]

    with plays.transaction() as txn:
        producer = iceberg_internals.ReplaceManifests(txn, plays.io, one_manifest, {"sonik.operation": "test"})
        producer.commit()

    plays.refresh()
    snapshot = plays.current_snapshot()
    assert producer.attempts == 1, "PyIceberg no longer calls _SnapshotProducer._existing_manifests"
    assert snapshot.summary.operation.value == "replace", "PyIceberg no longer calls _SnapshotProducer._summary"
    assert snapshot.summary["total-records"] == "100"
    assert len(snapshot.manifests(plays.io)) == 1
    assert plays.scan().count() == 100


def test_the_caching_transaction_builds_the_metadata_once_per_state(
    plays: Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyiceberg.table as pyiceberg_table

    real = pyiceberg_table.update_table_metadata
    calls = []
    monkeypatch.setattr(pyiceberg_table, "update_table_metadata", lambda *a, **k: calls.append(1) or real(*a, **k))
    txn = iceberg_internals.transaction(plays)

    first = [txn.table_metadata for _ in range(10)]
    txn.set_properties({"sonik.test": "1"})  # a staged update is a new state
    after = txn.table_metadata

    assert len(calls) == 2, "Transaction.table_metadata no longer goes through update_table_metadata"
    assert all(m is first[0] for m in first)
    assert after.properties["sonik.test"] == "1" and "sonik.test" not in first[0].properties
