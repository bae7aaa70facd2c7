import datetime as dt
import re
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.deletion import UnsafeDeletion, check_deletable, delete_locations, is_within
from sonik_pipeline.lakehouse.tables.writes import FileStager, replace_partition, stage_files
from sonik_pipeline.maintenance.expiry import ExpiryOptions, expire_snapshots
from sonik_pipeline.maintenance.orphans import OrphanOptions, remove_orphan_files
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import copied_lakehouse

DAY = dt.date(2026, 4, 20)


def test_locations_compare_by_scheme_bucket_and_whole_path_segments(tmp_path: Path) -> None:
    assert is_within("file:///wh/music/plays/data/a.parquet", "/wh")
    assert is_within("/wh/music/plays", "file:///wh/")
    assert not is_within("/wh2/music/plays", "/wh")  # a sibling sharing a prefix is not inside
    assert not is_within("/wh/../orig/music/plays", "/wh")
    assert not is_within("/wh", "/wh", strictly=True) and is_within("/wh", "/wh")
    assert is_within("s3://lake/wh/music/plays/x.parquet", "s3://lake/wh")
    assert is_within("s3a://lake/wh/music/plays/x.parquet", "s3://lake/wh")
    assert not is_within("s3://other/wh/music/plays/x.parquet", "s3://lake/wh")
    assert not is_within("gs://lake/wh/x.parquet", "s3://lake/wh")
    (tmp_path / "original").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "original")
    assert is_within(f"{tmp_path}/link/music/x.parquet", f"file://{tmp_path}/original")  # the file it would delete


def _table_with_history(catalog: Catalog):
    table, _ = ensure_table(catalog, PLAYS)
    for i in range(3):
        replace_partition(table, played_at_filter(DAY), stage_files(table, [synthetic_batch(DAY, 200, batch=i)]), {})
    return catalog.load_table("music.plays")


def _files(root: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_on_a_copied_lakehouse_expiry_orphans_and_discard_refuse_before_changing_anything(
    settings: Settings, catalog: Catalog, sonik_home: Path, tmp_path: Path
) -> None:
    # Given a copy of a lakehouse whose catalog still points at the original's files
    table = _table_with_history(catalog)
    (sonik_home / "warehouse" / "music" / "plays" / "data" / "stray.parquet").write_bytes(b"x" * 100)
    original = _files(sonik_home / "warehouse")
    with copied_lakehouse(settings, catalog, tmp_path / "copy") as copy:
        copy_catalog = open_catalog(CATALOG_NAME, copy.catalog_uri, copy.warehouse)
        on_copy = copy_catalog.load_table("music.plays")
        refusal = f"music.plays is stored at {table.location()}, outside the configured warehouse {copy.warehouse}"

        # When expiry and orphan removal run on the copy's table, Then both refuse and nothing changes
        with pytest.raises(UnsafeDeletion, match=f"^{re.escape(refusal)}.*nothing was deleted$"):
            expire_snapshots(on_copy, ExpiryOptions(retention=dt.timedelta(0), retain_last=1))
        no_window = OrphanOptions(older_than=dt.timedelta(0), i_know_no_writer_is_running=True)
        with pytest.raises(UnsafeDeletion, match=f"^{re.escape(refusal)}"):
            remove_orphan_files(on_copy, no_window)
        assert copy_catalog.load_table("music.plays").metadata_location == table.metadata_location
        assert _files(sonik_home / "warehouse") == original

        # And a writer on the copy (staging into the original's folder) may not discard files there either
        stager = FileStager(on_copy)
        stager.add(synthetic_batch(DAY, 50, batch=9))
        staged = [Path(f.file_path.removeprefix("file://")) for f in stager.finish()]
        with pytest.raises(UnsafeDeletion, match=f"^{re.escape(refusal)}"):
            stager.discard()
        assert staged and all(p.exists() for p in staged)

    table = catalog.load_table("music.plays")
    assert len(table.snapshots()) == 3 and table.scan().count() == 200


def test_a_file_outside_its_table_stops_the_whole_deletion(catalog: Catalog, sonik_home: Path) -> None:
    table = _table_with_history(catalog)
    inside = sonik_home / "warehouse" / "music" / "plays" / "data" / "stray.parquet"
    elsewhere = sonik_home / "warehouse" / "music" / "other_table" / "data" / "x.parquet"
    for path in (inside, elsewhere):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")

    with pytest.raises(UnsafeDeletion, match=r"^music\.plays: 1 of 2 files to delete lie outside the table's location"):
        delete_locations(table, [inside.as_uri(), str(elsewhere)])

    assert inside.exists() and elsewhere.exists()


def test_with_a_warehouse_that_is_a_name_only_the_table_rule_applies(settings: Settings, catalog: Catalog) -> None:
    """A REST catalog's warehouse can be a logical name, which no file lies under."""
    _table_with_history(catalog)
    named = open_catalog(CATALOG_NAME, settings.catalog_uri, "sonik_warehouse").load_table("music.plays")
    inside = f"{named.location()}/data/stray.parquet"

    assert check_deletable(named, [inside]) == [inside]
    with pytest.raises(UnsafeDeletion, match="outside the table's location"):
        check_deletable(named, [f"{settings.warehouse}/elsewhere/x.parquet"])


def test_a_catalog_that_names_its_warehouse_still_holds_its_tables_to_sonik_warehouse(
    settings: Settings, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the catalog's warehouse given by name in PyIceberg's settings (as Polaris or Lakekeeper want)
    _table_with_history(catalog)
    monkeypatch.setenv("PYICEBERG_CATALOG__SONIK__WAREHOUSE", "sonik_warehouse")
    inside = f"{catalog.load_table('music.plays').location()}/data/stray.parquet"

    # When SONIK_WAREHOUSE is the table's storage root, Then its files may be deleted
    named = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse).load_table("music.plays")
    assert named.catalog.properties["warehouse"] == "sonik_warehouse"
    assert check_deletable(named, [inside]) == [inside]

    # When SONIK_WAREHOUSE is another root (a copied lakehouse), Then nothing may be deleted, name or not
    elsewhere = (tmp_path / "copy" / "warehouse").as_uri()
    on_copy = open_catalog(CATALOG_NAME, settings.catalog_uri, elsewhere).load_table("music.plays")
    with pytest.raises(UnsafeDeletion, match=f"outside the configured warehouse {re.escape(elsewhere)}"):
        check_deletable(on_copy, [inside])
