import datetime as dt
from pathlib import Path

import pytest

from sonik_pipeline.lakehouse.sources.events import ArrowRows, JsonLines, SourceFile, UnreadableFile
from sonik_pipeline.lakehouse.sources.landing import (
    LandingZone,
    MissingLandingData,
    landing_events,
    list_all_days,
    list_day,
    read_landing_file,
)
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch

DAY = dt.date(2026, 4, 20)


def test_landing_files_round_trip_as_jsonl_and_parquet(tmp_path: Path) -> None:
    events = synthetic_batch(DAY, 1_000)
    write_landing_day(tmp_path, DAY, events.slice(0, 600), files=2, fmt="jsonl")
    write_landing_day(tmp_path, DAY, events.slice(600), files=1, fmt="parquet")

    batches = list(landing_events(tmp_path, DAY))

    jsonl = [b for b in batches if isinstance(b, JsonLines)]
    parquet = [b for b in batches if isinstance(b, ArrowRows)]
    assert sum(len(b.lines) for b in jsonl) == 600
    assert sum(b.rows.num_rows for b in parquet) == 400
    assert jsonl[0].line_numbers.to_pylist()[:3] == [1, 2, 3]
    assert jsonl[0].source_file.endswith("plays/2026-04-20/part-000.jsonl")
    assert '"played_at":"2026-04-20T' in jsonl[0].lines[0].as_py()


def test_a_missing_landing_day_is_an_error_not_an_empty_day(tmp_path: Path) -> None:
    with pytest.raises(MissingLandingData, match="no landing files for 2026-04-20"):
        list(landing_events(tmp_path, DAY))


def test_a_parquet_file_cut_short_is_read_as_unreadable_with_its_reason(tmp_path: Path) -> None:
    [path] = write_landing_day(tmp_path, DAY, synthetic_batch(DAY, 300), files=1, fmt="parquet")
    Path(path).write_bytes(Path(path).read_bytes()[:400])

    [batch] = list(read_landing_file(LandingZone.at(tmp_path), path))

    assert isinstance(batch, UnreadableFile)
    assert batch.source_file == path
    assert batch.error.startswith("unreadable Parquet file: ")


def test_a_file_that_vanished_after_listing_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    [batch] = list(read_landing_file(LandingZone.at(tmp_path), str(tmp_path / "gone.jsonl")))

    assert isinstance(batch, UnreadableFile)
    assert batch.error.startswith("unreadable JSON Lines file: ")


def test_a_line_that_is_not_utf8_is_read_as_escapes_and_marked(tmp_path: Path) -> None:
    day_dir = tmp_path / "plays" / str(DAY)
    day_dir.mkdir(parents=True)
    (day_dir / "part.jsonl").write_bytes(b'{"title": "ok"}\n{"title": "caf\xe9"}\n')

    [listed, batch] = list(landing_events(tmp_path, DAY))

    assert isinstance(listed, SourceFile) and listed.size == (day_dir / "part.jsonl").stat().st_size
    assert batch.lines.to_pylist() == ['{"title": "ok"}', '{"title": "caf\\xe9"}']
    assert batch.invalid_utf8.to_pylist() == [False, True]


def test_each_file_is_announced_as_listed_before_its_rows(tmp_path: Path) -> None:
    paths = write_landing_day(tmp_path, DAY, synthetic_batch(DAY, 100), files=2, fmt="jsonl")

    kinds = [type(b).__name__ for b in landing_events(tmp_path, DAY)]
    listed = [b for b in landing_events(tmp_path, DAY) if isinstance(b, SourceFile)]

    assert kinds == ["SourceFile", "JsonLines", "SourceFile", "JsonLines"]
    assert [f.path for f in listed] == paths
    assert [f.size for f in listed] == [Path(p).stat().st_size for p in paths]
    assert all(f.modified_at.tzinfo == dt.UTC for f in listed)


def test_listing_every_day_sees_data_files_only(tmp_path: Path) -> None:
    write_landing_day(tmp_path, DAY, synthetic_batch(DAY, 50), files=1)
    other = DAY - dt.timedelta(days=3)
    write_landing_day(tmp_path, other, synthetic_batch(other, 50), files=2, fmt="parquet")
    (tmp_path / "plays" / str(DAY) / "upload.jsonl.tmp").write_text("{}")
    (tmp_path / "plays" / "not-a-day").mkdir()
    (tmp_path / "plays" / "not-a-day" / "x.jsonl").write_text("{}")

    days = list_all_days(LandingZone.at(tmp_path))

    assert list(days) == [other, DAY]
    assert [Path(f.path).name for f in days[other]] == ["part-000.parquet", "part-001.parquet"]
    assert [Path(f.path).name for f in days[DAY]] == ["part-000.jsonl"]


def _outside_file(tmp_path: Path, name: str = "secret.jsonl") -> Path:
    """A file outside the landing zone holding a line that would parse as an event."""
    outside = tmp_path / "outside"
    outside.mkdir(exist_ok=True)
    secret = outside / name
    secret.write_text('{"play_id": "SECRET", "title": "from outside"}\n')
    return secret


def test_a_file_linking_out_of_the_landing_zone_is_refused_naming_where_it_leads(tmp_path: Path) -> None:
    # Given a day with a real file and a link to a file outside the landing zone
    landing = tmp_path / "landing"
    [real] = write_landing_day(landing, DAY, synthetic_batch(DAY, 10), files=1)
    secret = _outside_file(tmp_path)
    link = landing / "plays" / str(DAY) / "x.jsonl"
    link.symlink_to(secret)

    # When the day is read
    batches = list(landing_events(landing, DAY))

    # Then the link is announced, not read, and reported with where it leads; the real file is read
    read = [b for b in batches if isinstance(b, JsonLines)]
    assert [b.source_file for b in read] == [real]
    assert not any("SECRET" in line for b in read for line in b.lines.to_pylist())
    [refused] = [b for b in batches if isinstance(b, UnreadableFile)]
    assert refused.source_file == str(link)
    assert refused.error == f"link out of the landing zone: resolves to {secret}, outside {landing}; not read"
    assert str(link) in [b.path for b in batches if isinstance(b, SourceFile)]


def test_a_day_folder_linking_out_of_the_landing_zone_is_refused_and_listed_as_the_reader_reads_it(
    tmp_path: Path,
) -> None:
    # Given a day folder that is a link to a folder outside the landing zone
    landing = tmp_path / "landing"
    write_landing_day(landing, DAY - dt.timedelta(days=1), synthetic_batch(DAY, 5), files=1)
    secret = _outside_file(tmp_path, "part-000.jsonl")
    (landing / "plays" / str(DAY)).symlink_to(secret.parent, target_is_directory=True)
    zone = LandingZone.at(landing)

    # When the day is read, and the sensor lists every day
    batches = list(landing_events(landing, DAY))
    days = list_all_days(zone)

    # Then nothing of it is read, the file is reported, and the sweep lists what the day's reader announced
    assert not [b for b in batches if isinstance(b, JsonLines)]
    [refused] = [b for b in batches if isinstance(b, UnreadableFile)]
    assert refused.source_file == f"{landing}/plays/{DAY}/part-000.jsonl"
    assert refused.error == f"link out of the landing zone: resolves to {secret}, outside {landing}; not read"
    assert days[DAY] == [b for b in batches if isinstance(b, SourceFile)] == [f for _, f in list_day(zone, DAY)]


def test_a_link_that_stays_inside_the_landing_zone_is_read(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    other = DAY - dt.timedelta(days=1)
    [kept] = write_landing_day(landing, other, synthetic_batch(DAY, 7), files=1)
    (landing / "plays" / str(DAY)).mkdir()
    (landing / "plays" / str(DAY) / "moved.jsonl").symlink_to(Path(kept))

    [listed, batch] = list(landing_events(landing, DAY))

    assert isinstance(batch, JsonLines) and len(batch.lines) == 7
    assert listed.path == batch.source_file == str(landing / "plays" / str(DAY) / "moved.jsonl")


def test_listing_every_day_does_not_follow_links_below_the_day_folders(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write_landing_day(landing, DAY, synthetic_batch(DAY, 5), files=1)
    # a loop: each level of plays/DAY/again/again/... would be listed again by a recursive listing
    (landing / "plays" / str(DAY) / "again").symlink_to(landing / "plays", target_is_directory=True)

    days = list_all_days(LandingZone.at(landing))

    assert [Path(f.path).name for f in days[DAY]] == ["part-000.jsonl"]
