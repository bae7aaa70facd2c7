"""Ingesting a landing day reads nothing from outside the landing zone and nothing without bound."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.ingest.run import UnreadableLandingFiles, ingest_day
from sonik_pipeline.lakehouse.sources.events import MAX_LINE_BYTES
from sonik_pipeline.lakehouse.sources.landing import landing_events
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch

DAY = dt.date(2026, 4, 20)


def _table(catalog: Catalog, name: str):
    return catalog.load_table(name).scan().to_arrow()


def test_a_file_linked_from_outside_the_landing_zone_is_never_ingested(catalog: Catalog, tmp_path: Path) -> None:
    # Given a day of 40 events, and a link in its folder to a file of valid events outside the landing zone
    landing = tmp_path / "landing"
    write_landing_day(landing, DAY, synthetic_batch(DAY, 40), files=2)
    [outside] = write_landing_day(tmp_path / "elsewhere", DAY, synthetic_batch(DAY, 5, seed=9), files=1)
    link = landing / "plays" / str(DAY) / "z.jsonl"
    link.symlink_to(outside)
    secret_ids = set(synthetic_batch(DAY, 5, seed=9).column("play_id").to_pylist())

    # When the day is ingested, the run fails naming the link and where it leads
    with pytest.raises(UnreadableLandingFiles, match=f"unreadable landing file {link} .link out of the landing zone"):
        ingest_day(catalog, DAY, landing_events(landing, DAY))

    # Then the quarantine records the link with no content, and nothing of the outside file is anywhere
    [reject] = _table(catalog, "music.plays_rejected").to_pylist()
    assert reject["source_file"] == str(link)
    assert reject["reason"] == f"link out of the landing zone: resolves to {outside}, outside {landing}; not read"
    assert reject["payload"] == ""
    assert _table(catalog, "music.plays").num_rows == 0

    # And skipping it, the day is exactly the files inside the landing zone
    result = ingest_day(catalog, DAY, landing_events(landing, DAY), skip_unreadable_files=True)
    plays = _table(catalog, "music.plays")
    assert result.rows_written == plays.num_rows == 40
    assert not secret_ids & set(plays.column("play_id").to_pylist())
    assert result.unreadable_files_skipped == (str(link),)


def _landing_day_with(landing: Path, line: str, at: int) -> Path:
    """A day of 60 synthetic events in one file, with ``line`` inserted as line number ``at``."""
    [path] = write_landing_day(landing, DAY, synthetic_batch(DAY, 60), files=1)
    lines = Path(path).read_text().splitlines()
    lines.insert(at - 1, line)
    Path(path).write_text("\n".join(lines) + "\n")
    return Path(path)


def _event(title: str) -> str:
    return json.dumps(
        {
            "play_id": "p-long",
            "user_id": 1,
            "track_id": 2,
            "artist": "A",
            "title": title,
            "played_at": "2026-04-20T10:00:00Z",
            "duration_seconds": 10,
            "country": "US",
            "device": "tv",
        },
        ensure_ascii=False,
    )


def test_a_line_over_the_bound_is_quarantined_by_its_line_number_and_the_day_lands(
    catalog: Catalog, tmp_path: Path
) -> None:
    # Given a day of 60 events with a 3 MB line (a title of 1.5 million two-byte characters) as line 31
    line = _event("é" * 1_500_000)
    path = _landing_day_with(tmp_path / "landing", line, at=31)

    # When the day is ingested
    result = ingest_day(catalog, DAY, landing_events(tmp_path / "landing", DAY))

    # Then the 60 events land, the long line is quarantined by its number, and its payload is bounded
    plays = _table(catalog, "music.plays")
    assert result.rows_written == plays.num_rows == 60
    assert pc.max(pc.binary_length(plays.column("title"))).as_py() < 100
    [reject] = _table(catalog, "music.plays_rejected").to_pylist()
    size = len(line.encode())
    assert (reject["source_file"], reject["source_line"]) == (str(path), 31)
    assert reject["reason"] == f"line longer than {MAX_LINE_BYTES:,} bytes: {size:,} bytes"
    assert reject["payload"] == line.encode()[:4_096].decode(errors="ignore") + f"… [truncated: {size:,} bytes]"
    assert result.totals.rejected_by_reason == {f"line longer than {MAX_LINE_BYTES:,} bytes": 1}


def test_a_text_field_over_the_bound_is_quarantined_with_its_whole_line(catalog: Catalog, tmp_path: Path) -> None:
    line = _event("x" * 100_000)
    path = _landing_day_with(tmp_path / "landing", line, at=2)

    result = ingest_day(catalog, DAY, landing_events(tmp_path / "landing", DAY))

    assert result.rows_written == 60
    [reject] = _table(catalog, "music.plays_rejected").to_pylist()
    assert (reject["source_file"], reject["source_line"]) == (str(path), 2)
    assert reject["reason"] == "title longer than 4,096 bytes: 100,000 bytes"
    assert reject["payload"] == line
