"""What each ingest of a day read from the landing zone, and what of it came late."""

import datetime as dt
from pathlib import Path

from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.ingested_files import recorded_days
from sonik_pipeline.lakehouse.sources.landing import landing_events
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch, synthetic_events
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SOURCES

DAY = dt.date(2026, 4, 20)


def _ingest(catalog: Catalog, landing: Path):
    return ingest_day(catalog, DAY, landing_events(landing, DAY))


def _plays_rows(catalog: Catalog) -> int:
    return catalog.load_table("music.plays").scan().to_arrow().num_rows


def test_an_ingest_records_each_file_it_read(catalog: Catalog, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    paths = write_landing_day(landing, DAY, synthetic_batch(DAY, 300), files=3)

    result = _ingest(catalog, landing)

    [record] = recorded_days(catalog.load_table(PLAYS_SOURCES.identifier)).values()
    assert sorted(record) == paths
    assert [record[p].size for p in paths] == [Path(p).stat().st_size for p in paths]
    assert [record[p].events for p in paths] == [100, 100, 100]
    assert (result.files_read, result.late.files, result.late.events) == (3, 0, 0)


def test_a_late_file_is_counted_as_late_and_its_events_land_once(catalog: Catalog, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    events = synthetic_batch(DAY, 500)
    write_landing_day(landing, DAY, events.slice(0, 400), files=2)
    first = _ingest(catalog, landing)
    first_read = {p: r.first_read_at for p, r in recorded_days(catalog.load_table("music.plays_sources"))[DAY].items()}

    # The phone that played offline uploads later, into the day's folder.
    late_dir = tmp_path / "late"
    [late_file] = write_landing_day(late_dir, DAY, events.slice(400), files=1)
    target = landing / "plays" / str(DAY) / "late-upload.jsonl"
    Path(late_file).rename(target)
    second = _ingest(catalog, landing)
    again = _ingest(catalog, landing)  # the same files once more: nothing doubles, the late file stays late

    assert (first.rows_written, second.rows_written, again.rows_written) == (400, 500, 500)
    assert _plays_rows(catalog) == 500
    assert (second.late.files, second.late.events) == (1, 100)
    assert (again.late.files, again.late.events) == (1, 100)
    assert second.late.describe() == "late files: 1, 100 events"
    record = recorded_days(catalog.load_table("music.plays_sources"))[DAY]
    assert len(record) == 3
    assert all(record[p].first_read_at == t for p, t in first_read.items())  # earlier files keep their first read
    assert record[str(target)].first_read_at > max(first_read.values())


def test_a_grown_file_is_late_again(catalog: Catalog, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    events = synthetic_batch(DAY, 200)
    [path] = write_landing_day(landing, DAY, events.slice(0, 100), files=1)
    _ingest(catalog, landing)
    more = tmp_path / "more"
    [extra] = write_landing_day(more, DAY, events.slice(100), files=1)
    with open(path, "ab") as grown:
        grown.write(Path(extra).read_bytes())

    result = _ingest(catalog, landing)

    assert (result.rows_written, result.late.files, result.late.events) == (200, 1, 200)


def test_a_synthetic_lakehouse_has_no_record(catalog: Catalog) -> None:
    result = ingest_day(catalog, DAY, synthetic_events(DAY, 100))

    assert result.files_read == 0
    assert not catalog.table_exists(PLAYS_SOURCES.identifier)
