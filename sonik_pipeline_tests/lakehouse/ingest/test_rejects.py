"""The quarantine you can act on: ``sonik rejects`` lists it, ``sonik rejects replay`` sends events to their day."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import In

from sonik_pipeline.cli import main
from sonik_pipeline.lakehouse.ingest.rejects import ReplayFile, Staying, belongs_to_text, plan_replay, replay_file_name
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.landing import LandingZone, landing_events
from sonik_pipeline.lakehouse.sources.landing_writer import atomic_landing_file, write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.settings import Settings

D18, D19, D20 = dt.date(2026, 4, 18), dt.date(2026, 4, 19), dt.date(2026, 4, 20)
WRONG_DAY = "played_at outside 2026-04-20 (UTC)"


def _event(play_id: str, played_at: str, **changes) -> str:
    event = {"play_id": play_id, "user_id": 1, "track_id": 2, "artist": "A", "title": "T", "played_at": played_at}
    return json.dumps({**event, **changes})


# An upload the app dropped into 2026-04-20's folder: plays of other days, and events no replay can fix.
UPLOAD = [
    _event("late-18-a", "2026-04-18T10:00:00Z"),
    _event("late-18-b", "2026-04-18T23:59:59Z"),
    _event("late-18-c", "2026-04-19T01:00:00+03:00"),  # 2026-04-18 22:00 UTC
    _event("late-19", "2026-04-19 12:00:00"),  # naive: UTC
    _event("late-18-bad", "2026-04-18T11:00:00Z", country="usa"),  # still fails in its own day
    _event("same-day-bad", "2026-04-20T11:00:00Z", country="usa"),  # belongs to 2026-04-20 itself
    "{not json",
]
REPLAYED = {"late-18-a", "late-18-b", "late-18-c", "late-19"}


# -- pure logic ------------------------------------------------------------------------------------


def test_a_replay_plan_sends_each_group_to_its_day_and_leaves_its_own_day_and_unreadable_ones() -> None:
    plan = plan_replay(
        D20,
        [
            (WRONG_DAY, D19, 1),
            (WRONG_DAY, D18, 3),
            ("country is not a two-letter code", D20, 2),
            ("malformed JSON", None, 1),
        ],
    )

    assert plan.files == [
        ReplayFile(D18, replay_file_name(D20, WRONG_DAY), WRONG_DAY, 3),
        ReplayFile(D19, replay_file_name(D20, WRONG_DAY), WRONG_DAY, 1),
    ]
    assert plan.staying == [
        Staying("country is not a two-letter code", 2, readable=True),
        Staying("malformed JSON", 1, readable=False),
    ]
    assert plan.events == 4


def test_replay_file_names_are_fixed_per_day_and_group_and_read_as_json_lines() -> None:
    name = replay_file_name(D20, WRONG_DAY)

    assert name == replay_file_name(D20, WRONG_DAY)
    assert name.startswith("replay-from-2026-04-20-played-at-outside-2026-04-20-utc-") and name.endswith(".jsonl")
    assert name != replay_file_name(D19, WRONG_DAY)
    assert replay_file_name(D20, "a b") != replay_file_name(D20, "a-b")  # same slug, different groups


def test_belongs_to_says_one_day_a_range_or_nothing() -> None:
    assert belongs_to_text(D18, D18, 1) == "2026-04-18"
    assert belongs_to_text(D18, D20, 2) == "2026-04-18...2026-04-20 (2 days)"
    assert belongs_to_text(None, None, 0) == ""


def test_a_landing_file_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    zone = LandingZone.at(tmp_path)
    folder = tmp_path / "plays" / "2026-04-18"
    with atomic_landing_file(zone, D18, "replay.jsonl") as out:
        out.write(b"old\n")

    with pytest.raises(RuntimeError), atomic_landing_file(zone, D18, "replay.jsonl") as out:
        out.write(b"half")
        assert sorted(p.name for p in folder.iterdir()) == [".replay.jsonl.tmp", "replay.jsonl"]  # readers skip it
        raise RuntimeError("upload cut")

    assert [p.name for p in folder.iterdir()] == ["replay.jsonl"]
    assert (folder / "replay.jsonl").read_text() == "old\n"
    with atomic_landing_file(zone, D18, "replay.jsonl") as out:
        out.write(b"new\n")
    assert (folder / "replay.jsonl").read_text() == "new\n"


# -- the round trip, through the sonik command ----------------------------------------------------


@pytest.fixture
def sonik_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment `sonik` reads, on this test's lakehouse; returns the landing zone folder."""
    monkeypatch.setenv("SONIK_HOME", str(settings.home))
    monkeypatch.setenv("SONIK_CATALOG_URI", settings.catalog_uri)
    monkeypatch.setenv("SONIK_SOURCE", "landing")
    return Path(settings.landing_dir)


def _sonik(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert main(list(args)) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def _ingest(catalog: Catalog, landing: Path, day: dt.date) -> None:
    ingest_day(catalog, day, landing_events(landing, day), progress=lambda _: None)


def _copies(catalog: Catalog, table: str, ids: set[str], **where) -> dict[str, int]:
    rows = catalog.load_table(table).scan(row_filter=In("play_id", ids)).to_arrow().to_pylist()
    counts: dict[str, int] = {}
    for row in rows:
        if all(str(row[k]) == v for k, v in where.items()):
            counts[row["play_id"]] = counts.get(row["play_id"], 0) + 1
    return counts


def test_replay_round_trips_quarantined_events_into_their_day_once(
    sonik_env: Path, catalog: Catalog, capsys: pytest.CaptureFixture
) -> None:
    # Given no quarantine yet, then two landing days, one with an upload of plays from other days
    landing = sonik_env
    assert _sonik(capsys, "rejects") == "no quarantined events\n"
    for day in (D18, D20):
        write_landing_day(landing, day, synthetic_batch(day, 200), files=1)
    (landing / "plays" / "2026-04-20" / "upload.jsonl").write_text("\n".join(UPLOAD) + "\n")
    _ingest(catalog, landing, D18)
    _ingest(catalog, landing, D20)

    # Then the plays of other days are quarantined, each reason naming the day it belongs to
    reasons = {
        r["play_id"]: r["reason"] for r in catalog.load_table("music.plays_rejected").scan().to_arrow().to_pylist()
    }
    assert reasons["late-18-a"] == f"{WRONG_DAY}: belongs to 2026-04-18 (2026-04-18 10:00:00)"
    assert reasons["late-18-c"] == f"{WRONG_DAY}: belongs to 2026-04-18 (2026-04-18 22:00:00)"
    assert reasons["late-19"] == f"{WRONG_DAY}: belongs to 2026-04-19 (2026-04-19 12:00:00)"

    # And `sonik rejects` counts them by day and reason group, with a sample
    listed = json.loads(_sonik(capsys, "rejects", "--format", "json"))
    assert [(g["ingest_day"], g["reason"], g["events"], g["belongs_to"]) for g in listed] == [
        ("2026-04-20", WRONG_DAY, 5, "2026-04-18...2026-04-19 (2 days)"),
        ("2026-04-20", "country is not a two-letter code", 1, "2026-04-20"),
        ("2026-04-20", "malformed JSON", 1, ""),
    ]
    assert listed[0]["sample_play_id"] == "late-18-a"
    assert listed[0]["sample_source"].endswith("plays/2026-04-20/upload.jsonl:1")
    table = _sonik(capsys, "rejects", "--day", "2026-04-20", "--reason", "malformed JSON")
    assert "malformed JSON" in table and "(1 row)" in table
    assert _sonik(capsys, "rejects", "--day", "2026-04-19") == "no quarantined events for 2026-04-19\n"

    # When a dry run, then the replay of 2026-04-20, writes the events back into the folders of their days
    assert "would write 5 events" in _sonik(capsys, "rejects", "replay", "--day", "2026-04-20", "--dry-run")
    assert not (landing / "plays" / "2026-04-19").exists()
    out = _sonik(capsys, "rejects", "replay", "--day", "2026-04-20")

    # Then each file holds its day's events, and the events that cannot move are named with what to do
    name = replay_file_name(D20, WRONG_DAY)
    day18, day19 = (landing / "plays" / str(d) / name for d in (D18, D19))
    assert sorted(json.loads(line)["play_id"] for line in day18.read_text().splitlines()) == [
        "late-18-a",
        "late-18-b",
        "late-18-bad",
        "late-18-c",
    ]
    assert [json.loads(line)["play_id"] for line in day19.read_text().splitlines()] == ["late-19"]
    assert "wrote 5 events of 2026-04-20's quarantine" in out
    assert (
        "1 event belongs to 2026-04-20 itself (reason country is not a two-letter code): "
        "fix the source or the rules and re-run 2026-04-20"
    ) in out
    assert "1 event has no readable played_at (reason malformed JSON)" in out
    assert "--select plays --partition 2026-04-18\n" in out and "--partition 2026-04-19\n" in out

    for attempt in range(2):  # and a second replay and ingest double nothing
        # When the days they belong to are ingested
        _ingest(catalog, landing, D18)
        _ingest(catalog, landing, D19)

        # Then every replayed event is in music.plays exactly once, and the one still bad is back in quarantine once
        assert _copies(catalog, "music.plays", REPLAYED | {"late-18-bad"}) == dict.fromkeys(REPLAYED, 1), attempt
        assert _copies(catalog, "music.plays_rejected", {"late-18-bad"}, ingest_day="2026-04-18") == {"late-18-bad": 1}
        assert [p.name for p in day18.parent.iterdir() if p.name.startswith((".", "replay"))] == [name]
        _sonik(capsys, "rejects", "replay", "--day", "2026-04-20")

    # And nothing is lost: every event of the upload is in plays once, or in quarantine with a reason
    ids = {json.loads(line)["play_id"] for line in UPLOAD if line.startswith('{"')}
    in_plays, quarantined = (_copies(catalog, t, ids) for t in ("music.plays", "music.plays_rejected"))
    assert all(in_plays.get(i) == 1 or (i not in in_plays and quarantined.get(i)) for i in ids)
    assert {i for i in ids if i not in in_plays} == {"late-18-bad", "same-day-bad"}
    assert reasons[None] == "malformed JSON"  # the line with no play_id, kept by its file and line


def test_replay_of_one_reason_group_writes_only_that_group(
    sonik_env: Path, catalog: Catalog, capsys: pytest.CaptureFixture
) -> None:
    landing = sonik_env
    write_landing_day(landing, D20, synthetic_batch(D20, 200), files=1)
    (landing / "plays" / "2026-04-20" / "upload.jsonl").write_text("\n".join(UPLOAD) + "\n")
    _ingest(catalog, landing, D20)

    out = _sonik(capsys, "rejects", "replay", "--day", "2026-04-20", "--reason", "malformed JSON")

    assert out.splitlines() == [
        "1 event has no readable played_at (reason malformed JSON): fix the source and re-run 2026-04-20"
    ]
    assert not (landing / "plays" / "2026-04-18").exists()
    assert main(["rejects", "replay", "--day", "2026-04-20", "--reason", "no such reason"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "sonik: error: no quarantined events for 2026-04-20 with reason 'no such reason'; its reasons:"
    )
    assert f"'{WRONG_DAY}' (5)" in err and len(err.splitlines()) == 1


def test_a_replay_plan_leaves_events_of_days_no_partition_holds_with_the_reason() -> None:
    first, last = dt.date(2025, 1, 1), dt.date(2026, 12, 1)
    plan = plan_replay(
        D20,
        [
            (WRONG_DAY, D18, 2),
            (WRONG_DAY, dt.date(1970, 1, 1), 1),
            (WRONG_DAY, dt.date(2024, 6, 1), 1),
            (WRONG_DAY, dt.date(2024, 7, 1), 2),
            (WRONG_DAY, dt.date(2099, 1, 1), 1),
        ],
        first_day=first,
        last_day=last,
    )

    assert plan.files == [ReplayFile(D18, replay_file_name(D20, WRONG_DAY), WRONG_DAY, 2)]
    assert plan.staying == [
        Staying(
            WRONG_DAY, 1, readable=False, outside="1970-01-01: the Unix epoch (a played_at of 0), not a play's time"
        ),
        Staying(
            WRONG_DAY, 3, readable=False, outside="2024-06-01...2024-07-01: before 2025-01-01, the first partition"
        ),
        Staying(
            WRONG_DAY, 1, readable=False, outside="2099-01-01: after 2026-12-01, the newest day the pipeline can ingest"
        ),
    ]
    assert plan_replay(D20, [(WRONG_DAY, dt.date(1970, 1, 1), 1)]).files == []  # never 1970-01-01, bounds or not


# Events of 2026-04-20's folder whose played_at no partition can take: none may be written anywhere.
NOWHERE = [
    _event("epoch", "1970-01-01T00:00:00Z"),
    _event("too-old", "2024-06-01T10:00:00Z"),  # before SONIK_START_DATE (2025-01-01)
    _event("future", "2099-01-01T10:00:00Z"),
    _event("not-a-time", "yesterday"),
    json.dumps({"play_id": "no-time", "user_id": 1, "track_id": 2, "artist": "A", "title": "T"}),
]


def test_replay_writes_nothing_outside_the_partitions_and_says_why_each_event_stays(
    sonik_env: Path, catalog: Catalog, capsys: pytest.CaptureFixture
) -> None:
    # Given a day whose upload holds events of no partition, next to one late play of 2026-04-18
    landing = sonik_env
    write_landing_day(landing, D20, synthetic_batch(D20, 200), files=1)
    upload = [*NOWHERE, _event("late-18-a", "2026-04-18T10:00:00Z")]
    (landing / "plays" / "2026-04-20" / "upload.jsonl").write_text("\n".join(upload) + "\n")
    _ingest(catalog, landing, D20)

    # When it is replayed, dry run first
    dry = _sonik(capsys, "rejects", "replay", "--day", "2026-04-20", "--dry-run")
    out = _sonik(capsys, "rejects", "replay", "--day", "2026-04-20")

    # Then only the late play is written, into 2026-04-18's folder, and no other folder appears
    assert "would write 1 event " in dry and "wrote 1 event " in out
    assert sorted(p.name for p in (landing / "plays").iterdir()) == ["2026-04-18", "2026-04-20"]
    [written] = (landing / "plays" / "2026-04-18").iterdir()
    assert [json.loads(line)["play_id"] for line in written.read_text().splitlines()] == ["late-18-a"]
    # And each event that stays is named with its reason and why it cannot move
    for text in (dry, out):
        assert (
            f"1 event belongs to 1970-01-01: the Unix epoch (a played_at of 0), not a play's time (reason {WRONG_DAY})"
            in text
        )
        assert f"1 event belongs to 2024-06-01: before 2025-01-01, the first partition (reason {WRONG_DAY})" in text
        assert "1 event belongs to 2099-01-01: after " in text and "the newest day the pipeline can ingest" in text
        assert "no readable played_at" in text


def test_an_unreadable_landing_file_is_listed_as_a_file_not_an_event(
    sonik_env: Path, catalog: Catalog, capsys: pytest.CaptureFixture
) -> None:
    # Given a day ingested without its one unreadable Parquet file (skipped, and quarantined as a file)
    landing = sonik_env
    write_landing_day(landing, D20, synthetic_batch(D20, 50), files=1)
    broken = landing / "plays" / "2026-04-20" / "broken.parquet"
    broken.write_bytes(b"PAR1 cut short")
    (landing / "plays" / "2026-04-20" / "upload.jsonl").write_text("{not json\n")
    ingest_day(catalog, D20, landing_events(landing, D20), skip_unreadable_files=True, progress=lambda _: None)

    # When the quarantine is listed
    listed = json.loads(_sonik(capsys, "rejects", "--format", "json"))
    table = _sonik(capsys, "rejects")
    replay = _sonik(capsys, "rejects", "replay", "--day", "2026-04-20", "--dry-run")

    # Then the file counts as a file, not as an event, and is named with what to do
    by_reason = {g["reason"]: g for g in listed}
    assert by_reason["unreadable Parquet file"]["events"] == 0
    assert by_reason["unreadable Parquet file"]["files"] == 1
    assert by_reason["unreadable Parquet file"]["sample_source"].endswith("plays/2026-04-20/broken.parquet")
    assert (by_reason["malformed JSON"]["events"], by_reason["malformed JSON"]["files"]) == (1, 0)
    assert "1 unreadable landing file, not events:" in table
    assert "plays/2026-04-20/broken.parquet (ingest of 2026-04-20): unreadable Parquet file: " in table
    # And a replay writes nothing for it and says it is a file to replace, not an event without a time
    assert "1 file unreadable (reason unreadable Parquet file): replace or remove it and re-run 2026-04-20" in replay
    assert "1 event has no readable played_at (reason malformed JSON)" in replay
    assert "unreadable Parquet file" not in replay.split("has no readable played_at")[0].rsplit("\n", 1)[-1]
    assert sorted(p.name for p in (landing / "plays").iterdir()) == ["2026-04-20"]
