import datetime as dt
import os

from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.health import table_health
from sonik_pipeline.maintenance.compaction import CompactionOptions, compact_table

DAY = dt.date(2026, 4, 20)


def _local(location: str) -> str:
    return location.removeprefix("file://")


def test_health_counts_files_manifests_and_snapshots_from_the_tables_metadata(catalog: Catalog) -> None:
    # Given four small appends to one day, the first at a known time
    table, _ = ensure_table(catalog, PLAYS)
    for batch in range(4):
        table.append(synthetic_batch(DAY, 200, batch=batch).cast(table.schema().as_arrow()))
    table = catalog.load_table(PLAYS.identifier)
    first = min(s.timestamp_ms for s in table.snapshots())
    now = dt.datetime.fromtimestamp(first / 1000 + 5 * 3600, dt.UTC)  # five hours after the first commit

    health = table_health(table, now)

    files = table.inspect.files()
    assert health.table == "music.plays"
    assert health.data_files == files.num_rows == 4
    assert health.small_files == 4  # each a few KiB against a 128 MiB target
    assert health.data_bytes == sum(files["file_size_in_bytes"].to_pylist())
    assert health.avg_file_mb == round(health.data_bytes / 4 / 2**20, 3)
    assert health.delete_files == 0
    assert health.snapshots == 4
    assert health.manifests == len(table.current_snapshot().manifests(table.io)) == 4
    assert health.metadata_json_bytes == os.path.getsize(_local(table.metadata_location))
    assert health.oldest_snapshot_age_hours == 5.0


def test_compaction_shows_in_the_health_as_fewer_small_files(catalog: Catalog) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    for batch in range(6):
        table.append(synthetic_batch(DAY, 200, batch=batch).cast(table.schema().as_arrow()))
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    before = table_health(catalog.load_table(PLAYS.identifier), now)

    compact_table(catalog.load_table(PLAYS.identifier), CompactionOptions(min_input_files=2))
    after = table_health(catalog.load_table(PLAYS.identifier), now)

    assert (before.data_files, before.small_files) == (6, 6)
    assert (after.data_files, after.small_files) == (1, 1)  # one file, still under the target: small, but one
    assert after.snapshots == before.snapshots + 1
    assert after.data_bytes < before.data_bytes  # one file's footer and dictionaries instead of six


def test_an_empty_table_is_all_zeros_but_its_metadata(catalog: Catalog) -> None:
    table, _ = ensure_table(catalog, PLAYS)

    health = table_health(table, dt.datetime(2030, 1, 1, tzinfo=dt.UTC))

    figures = health.figures()
    assert figures.pop("metadata_json_bytes") > 0
    assert set(figures.values()) == {0}
