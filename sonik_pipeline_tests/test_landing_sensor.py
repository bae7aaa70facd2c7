"""The landing sensor requests exactly the days whose landing files changed since their last ingest."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dagster as dg
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline import landing_sensor as sensor_module
from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.ingest.run import ingest_days
from sonik_pipeline.lakehouse.sources.landing import landing_events
from sonik_pipeline.lakehouse.sources.landing_changes import WatchCursor, day_ranges
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.settings import Settings
from sonik_pipeline_tests.conftest import run_asset_job

NOW = dt.datetime(2026, 4, 21, 12, 0, tzinfo=dt.UTC)  # the sensor's clock: the 20th is the last complete day
LONG_AGO = (NOW - dt.timedelta(days=1)).timestamp()
DAYS = [dt.date(2026, 4, d) for d in range(14, 20)]  # 14th..19th, ingested before the test's changes


def _days(*numbers: int) -> list[dt.date]:
    return [dt.date(2026, 4, n) for n in numbers]


def _landing_defs(settings: Settings, landing: Path) -> dg.Definitions:
    return build_definitions(Settings(**{**settings.__dict__, "source": "landing", "landing_dir": str(landing)}))


def _age(path: Path, when: float = LONG_AGO) -> None:
    os.utime(path, (when, when))


def _tick(defs: dg.Definitions, cursor: str | None = None, instance: dg.DagsterInstance | None = None):
    sensor = defs.resolve_sensor_def("landing_sensor")
    with dg.build_sensor_context(
        cursor=cursor, instance=instance or dg.DagsterInstance.get(), resources=defs.resources
    ) as context:
        return sensor(context)


def _requested(result) -> list[tuple[str, str]]:
    if isinstance(result, dg.SkipReason):
        return []
    return [
        (r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
        for r in result.run_requests
    ]


@pytest.fixture
def landing(settings: Settings, catalog: Catalog, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Six landing days of two files each, all ingested; the files last changed a day ago."""
    monkeypatch.setattr(sensor_module, "now", lambda: NOW)
    root = tmp_path / "landing"
    for day in DAYS:
        for path in write_landing_day(root, day, synthetic_batch(day, 40), files=2):
            _age(Path(path))
    list(ingest_days(catalog, ((day, landing_events(root, day)) for day in DAYS)))
    return root


def _folder(root: Path, day: dt.date) -> Path:
    return root / "plays" / str(day)


def test_the_sensor_requests_exactly_the_changed_days(settings: Settings, landing: Path, tmp_path: Path) -> None:
    defs = _landing_defs(settings, landing)
    # 14th: a new file. 15th: a file grew. 16th: a file was removed. 17th: an upload still in progress
    # (.tmp). 18th: a new file modified 10 s ago (inside the settle window). 19th: untouched.
    extra = tmp_path / "extra"
    [new] = write_landing_day(extra, DAYS[0], synthetic_batch(DAYS[0], 5, seed=7), files=1)
    Path(new).rename(_folder(landing, DAYS[0]) / "late.jsonl")
    _age(_folder(landing, DAYS[0]) / "late.jsonl")
    grown = _folder(landing, DAYS[1]) / "part-000.jsonl"
    with grown.open("a") as f:
        f.write(grown.read_text().splitlines()[0].replace('"play_id":"', '"play_id":"x') + "\n")
    _age(grown, LONG_AGO + 60)
    (_folder(landing, DAYS[2]) / "part-001.jsonl").unlink()
    (_folder(landing, DAYS[3]) / "upload.jsonl.tmp").write_text("{")
    [settling] = write_landing_day(extra, DAYS[4], synthetic_batch(DAYS[4], 5, seed=8), files=1)
    Path(settling).rename(_folder(landing, DAYS[4]) / "now.jsonl")
    _age(_folder(landing, DAYS[4]) / "now.jsonl", (NOW - dt.timedelta(seconds=10)).timestamp())

    first = _tick(defs)

    assert _requested(first) == [("2026-04-14", "2026-04-16")]  # one run for the three changed days
    assert first.run_requests[0].run_key is None  # a later late file of these days must run again
    cursor = WatchCursor.parse(first.cursor)
    assert sorted(cursor.requested) == ["2026-04-14", "2026-04-15", "2026-04-16"]

    # The next tick, before the run: nothing new is requested.
    assert _requested(_tick(defs, first.cursor)) == []

    # The run ingests the days; the late and grown files' events land once; then the record matches. The
    # removed file halves the 16th, which the shrink guard refuses unless the run allows it.
    refused = run_asset_job(defs, "plays_job", "2026-04-14", "2026-04-16")
    assert "would replace 40 rows with 20" in refused.failure_data_for_node("plays").error.message
    allow_shrink = {"ops": {"plays": {"config": {"max_shrink_share": 1.0}}}}
    result = run_asset_job(defs, "plays_job", "2026-04-14", "2026-04-16", run_config=allow_shrink)
    assert result.success
    counts = _day_counts(settings)
    assert counts[DAYS[0]] == 45 and counts[DAYS[1]] == 41 and counts[DAYS[2]] == 20
    third = _tick(defs, first.cursor)
    assert _requested(third) == []
    assert WatchCursor.parse(third.cursor).requested == {}

    # The settled file of the 18th is requested once its settle window has passed.
    later = NOW + dt.timedelta(minutes=5)
    sensor_module.now = lambda: later  # restored by monkeypatch (the fixture patched it first)
    assert _requested(_tick(defs, third.cursor)) == [("2026-04-18", "2026-04-18")]


def _day_counts(settings: Settings) -> dict[dt.date, int]:
    from sonik_pipeline.lakehouse.tables.catalog import open_catalog

    catalog = open_catalog("sonik", settings.catalog_uri, settings.warehouse)
    days = catalog.load_table("music.plays").scan(selected_fields=("played_at",)).to_arrow().column("played_at")
    counts: dict[dt.date, int] = {}
    for value in days.to_pylist():
        counts[value.date()] = counts.get(value.date(), 0) + 1
    return counts


def test_a_file_arriving_twice_is_not_doubled(settings: Settings, catalog: Catalog, landing: Path, tmp_path: Path):
    defs = _landing_defs(settings, landing)
    [late] = write_landing_day(tmp_path / "x", DAYS[5], synthetic_batch(DAYS[5], 7, seed=9), files=1)
    target = _folder(landing, DAYS[5]) / "late.jsonl"
    target.write_bytes(Path(late).read_bytes())
    _age(target)

    assert _requested(_tick(defs)) == [("2026-04-19", "2026-04-19")]
    assert run_asset_job(defs, "plays_job", "2026-04-19").success
    # The same upload again (the app retried): a second file with the same events.
    (_folder(landing, DAYS[5]) / "late-retry.jsonl").write_bytes(Path(late).read_bytes())
    _age(_folder(landing, DAYS[5]) / "late-retry.jsonl")
    assert _requested(_tick(defs)) == [("2026-04-19", "2026-04-19")]
    result = run_asset_job(defs, "plays_job", "2026-04-19")

    assert result.success
    assert _day_counts(settings)[DAYS[5]] == 47  # 40 + 7 once: the retry's play_ids are duplicates
    # Nothing lost, nothing doubled: every line in the day's folder is in plays once or quarantined with a reason.
    lines = sum(len(p.read_text().splitlines()) for p in _folder(landing, DAYS[5]).glob("*.jsonl"))
    rejected = catalog.load_table("music.plays_rejected").scan(row_filter="ingest_day = '2026-04-19'").to_arrow()
    assert lines == 54 == 47 + rejected.num_rows
    assert set(rejected.column("reason").to_pylist()) == {"duplicate play_id"}
    metadata = next(
        e.event_specific_data.materialization.metadata
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION" and e.event_specific_data.materialization.partition
    )
    assert metadata["late_files"].value == 2 and metadata["late_events"].value == 14
    assert metadata["late_data"].value == "late files: 2, 14 events"


def test_a_recent_tick_lists_only_the_recent_days(settings: Settings, landing: Path, tmp_path: Path) -> None:
    # A day older than the recent window changed: only the full sweep, at its slower interval, sees it.
    defs = _landing_defs(Settings(**{**settings.__dict__, "landing_recent_days": 3}), landing)
    [new] = write_landing_day(tmp_path / "x", DAYS[0], synthetic_batch(DAYS[0], 3, seed=3), files=1)
    Path(new).rename(_folder(landing, DAYS[0]) / "very-late.jsonl")
    _age(_folder(landing, DAYS[0]) / "very-late.jsonl")
    just_swept = WatchCursor(swept_at=NOW.timestamp() - 60).dump()
    sweep_due = WatchCursor(swept_at=NOW.timestamp() - 7 * 3600).dump()

    assert _requested(_tick(defs, just_swept)) == []
    assert _requested(_tick(defs, sweep_due)) == [("2026-04-14", "2026-04-14")]


def test_an_emptied_folder_is_never_requested(settings: Settings, landing: Path) -> None:
    for path in _folder(landing, DAYS[2]).iterdir():
        path.unlink()

    assert _requested(_tick(_landing_defs(settings, landing))) == []


def test_the_sensor_runs_by_default_only_for_the_landing_source(settings: Settings, tmp_path: Path) -> None:
    synthetic = build_definitions(settings).resolve_sensor_def("landing_sensor")
    landing = _landing_defs(settings, tmp_path / "landing").resolve_sensor_def("landing_sensor")

    assert synthetic.default_status == dg.DefaultSensorStatus.STOPPED
    assert landing.default_status == dg.DefaultSensorStatus.RUNNING


def test_changed_days_become_a_few_ranges() -> None:
    assert day_ranges(_days(3, 1, 2, 7, 8, 12), max_runs=3) == [
        (_days(1)[0], _days(3)[0]),
        (_days(7)[0], _days(8)[0]),
        (_days(12)[0], _days(12)[0]),
    ]
    assert day_ranges(_days(1, 2, 7, 8, 12), max_runs=2) == [(_days(1)[0], _days(2)[0]), (_days(7)[0], _days(12)[0])]
    assert day_ranges([], max_runs=3) == []
