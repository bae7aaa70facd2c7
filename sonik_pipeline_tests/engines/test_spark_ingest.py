"""SONIK_ENGINE=spark ingests plays: row for row what the local engine ingests, through Dagster.

One landing zone (good events in several JSON styles, every fault the quarantine names, duplicates within
and across files, a long line, a Parquet file with a mistyped column, an unreadable file, then a late file)
is ingested by the local engine into one fresh lakehouse and by Spark in local mode into another, on the
SQLite and the PostgreSQL catalog; plays, the quarantine, the record of landing files and the metadata are
compared. The guards (too many rejects, a day left with nothing valid) and the synthetic source run on Spark too.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.days import format_days, played_at_filter
from sonik_pipeline.lakehouse.ingest.validation import DUPLICATE_REASON, reason_group
from sonik_pipeline.lakehouse.marts.queries import DAILY_MARTS as DAILY_MART_DEFS
from sonik_pipeline.lakehouse.sources.events import MAX_LINE_BYTES
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import private_postgres_database, run_asset_job
from sonik_pipeline_tests.engines.spark_available import SPARK_TESTS
from sonik_pipeline_tests.lakehouse.sources.test_json_lines_equivalence import corpus, every_mutation

pytestmark = SPARK_TESTS

DAY_1, DAY_2 = "2026-04-20", "2026-04-21"
# What the metadata of a day must say alike on both engines (timings, snapshot ids and bytes are each run's own).
SAME_METADATA = (
    "rows_written",
    "rows_before",
    "rows_rejected",
    "rejected_by_reason",
    "duplicates_dropped",
    "events_read",
    "unreadable_files_skipped",
    "landing_files_read",
    "late_files",
    "late_events",
    "late_data",
    "dagster/row_count",
)
DAILY_MARTS = dg.AssetSelection.groups("marts")
LENIENT = {"ops": {"plays": {"config": {"max_reject_share": 0.5, "skip_unreadable_files": True}}}}


def _events_as_lines(day: str, n: int, seed: int) -> list[dict]:
    events = synthetic_batch(dt.date.fromisoformat(day), n, seed=seed).to_pylist()
    for event in events:
        event["played_at"] = event["played_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return events


def _landing_zone(root: Path) -> None:
    """Two days of the app's files holding every kind of fault, and duplicates across files."""
    day_1, day_2 = root / "plays" / DAY_1, root / "plays" / DAY_2
    day_1.mkdir(parents=True)
    day_2.mkdir(parents=True)
    (day_1 / "a.jsonl").write_bytes(corpus(1, 3000, 0.02))
    (day_1 / "b.jsonl").write_bytes(every_mutation(2))
    # Parquet: events repeating a.jsonl's (duplicates across files and formats), and a column of the wrong type
    again = [json.loads(line) for line in (day_1 / "a.jsonl").read_text(errors="replace").splitlines()[:40]]
    again = [e for e in again if isinstance(e, dict) and isinstance(e.get("play_id"), str)][:20]
    fresh = synthetic_batch(dt.date.fromisoformat(DAY_1), 300, seed=9)
    play_ids = [e["play_id"] for e in again] + fresh["play_id"].to_pylist()[len(again) :]
    user_ids = [str(u) if u % 7 else "x" for u in fresh["user_id"].to_pylist()]  # text, some not a number
    rows = fresh.set_column(0, "play_id", pa.array(play_ids)).set_column(1, "user_id", pa.array(user_ids))
    pq.write_table(rows, day_1 / "c.parquet")
    long_line = json.dumps({**_events_as_lines(DAY_1, 1, 5)[0], "title": "x" * (MAX_LINE_BYTES + 10)})
    good = [json.dumps(e) for e in _events_as_lines(DAY_1, 50, 6)]
    (day_1 / "d.jsonl").write_text("\n".join([*good[:25], long_line, *good[25:]]) + "\n")
    (day_2 / "a.jsonl").write_bytes(corpus(3, 2000, 0.02).replace(DAY_1.encode(), DAY_2.encode()))
    (day_2 / "b.parquet").write_bytes(b"PAR1 cut short")  # unreadable: quarantined, skipped by LENIENT


def _late_file(root: Path) -> None:
    lines = [json.dumps(e) for e in _events_as_lines(DAY_2, 200, 11)]
    (root / "plays" / DAY_2 / "late.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def twins(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, Settings]]:
    """Two fresh lakehouses on the kind of catalog under test, reading one landing zone: local and Spark."""
    landing = tmp_path / "landing"
    _landing_zone(landing)
    env = {"SONIK_SOURCE": "landing", "SONIK_LANDING_DIR": str(landing)}
    local = Settings.from_env({"SONIK_HOME": str(tmp_path / "local"), "SONIK_CATALOG_URI": settings.catalog_uri, **env})
    spark_env = {
        "SONIK_HOME": str(tmp_path / "spark"),
        "SONIK_ENGINE": "spark",
        "SONIK_SPARK_MASTER": "local[2]",
        **env,
    }
    if settings.catalog_uri.startswith("sqlite"):
        yield local, Settings.from_env(spark_env)
        return
    with private_postgres_database(os.environ["SONIK_TEST_POSTGRES_URL"]) as url:
        yield local, Settings.from_env({**spark_env, "SONIK_CATALOG_URI": url})


def _catalog(settings: Settings) -> Catalog:
    return open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)


def _plays(catalog: Catalog) -> pa.Table:
    rows = catalog.load_table("music.plays").scan().to_arrow()
    return rows.cast(
        pa.schema([f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in rows.schema])
    )


def _rejects(catalog: Catalog) -> list[tuple]:
    """(day, file, line, play_id, reason, payload or None for a duplicate) per quarantined event, sorted."""
    rows = catalog.load_table("music.plays_rejected").scan().to_arrow().to_pylist()
    found = [
        (
            str(r["ingest_day"]),
            Path(r["source_file"]).name,
            r["source_line"],
            r["play_id"],
            r["reason"],
            None if r["reason"] == DUPLICATE_REASON else r["payload"],  # Spark keeps a duplicate as typed
        )
        for r in rows
    ]
    return sorted(found, key=repr)


def _mart_rows(catalog: Catalog) -> dict[str, list[dict]]:
    found = {}
    for mart in DAILY_MART_DEFS:
        rows = catalog.load_table(mart.table.identifier).scan().to_arrow()
        found[mart.name] = rows.sort_by([(name, "ascending") for name in rows.column_names]).to_pylist()
    return found


def _sources(catalog: Catalog) -> list[tuple]:
    rows = catalog.load_table("music.plays_sources").scan().to_arrow().to_pylist()
    return sorted((str(r["day"]), Path(r["source_file"]).name, r["size_bytes"], r["events"]) for r in rows)


def _day_metadata(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key == dg.AssetKey("plays") and materialization.partition:
            metadata = materialization.metadata
            found[materialization.partition] = {k: metadata[k].value for k in SAME_METADATA if k in metadata}
            found[materialization.partition]["preview"] = metadata["preview"].value.records
    return found


def test_spark_ingests_the_landing_zone_row_for_row_as_the_local_engine(twins: tuple[Settings, Settings]) -> None:
    local, spark = twins
    landing = Path(local.landing_dir)

    # When both engines ingest the two days in one run each, then again after a late file
    runs = {}
    for name, settings in (("local", local), ("spark", spark)):
        runs[name] = [run_asset_job(build_definitions(settings), "plays_job", DAY_1, DAY_2, run_config=LENIENT)]
    _late_file(landing)
    for name, settings in (("local", local), ("spark", spark)):
        runs[name].append(run_asset_job(build_definitions(settings), "plays_job", DAY_2, run_config=LENIENT))

    # Then every run succeeded, and plays, the quarantine and the record of files read are the same
    assert all(r.success for rs in runs.values() for r in rs)
    local_catalog, spark_catalog = _catalog(local), _catalog(spark)
    local_plays, spark_plays = _plays(local_catalog), _plays(spark_catalog)
    assert local_plays.num_rows > 5000
    assert spark_plays.sort_by("play_id").equals(local_plays.sort_by("play_id"))
    local_rejects, spark_rejects = _rejects(local_catalog), _rejects(spark_catalog)
    assert spark_rejects == local_rejects
    reasons = {reason_group(r[4]) for r in local_rejects}
    assert {DUPLICATE_REASON, "malformed JSON", "wrong type for user_id", "line longer than 1,048,576 bytes"} <= reasons
    assert any(r[4].startswith("unreadable Parquet file") for r in local_rejects)
    duplicates_across_files = [r for r in spark_rejects if r[4] == DUPLICATE_REASON and r[1] == "c.parquet"]
    assert len(duplicates_across_files) >= 15  # the Parquet file's copies of a.jsonl's events
    assert _sources(spark_catalog) == _sources(local_catalog)
    # ... each run reports the same for each day (the late file too), with the same preview
    for local_run, spark_run in zip(runs["local"], runs["spark"], strict=True):
        assert _day_metadata(spark_run) == _day_metadata(local_run)
    late = _day_metadata(runs["spark"][1])[DAY_2]
    assert late["late_files"] == 1 and late["late_events"] == 200
    # ... and Spark committed the plays of both days in one snapshot carrying the run and its days
    plays = spark_catalog.load_table("music.plays")
    first_commit = next(s for s in plays.snapshots() if s.summary["dagster.run-id"] == runs["spark"][0].run_id)
    assert first_commit.summary["dagster.partition"] == format_days(dt.date(2026, 4, 20), dt.date(2026, 4, 21))
    assert "spark.app.id" in first_commit.summary  # written by Spark, not by PyIceberg
    assert plays.current_snapshot().summary["dagster.run-id"] == runs["spark"][1].run_id
    # ... writing each day's rows where they were judged, a file a task slot (2), not one a landing file (4)
    day_1_files = plays.scan(row_filter=played_at_filter(dt.date.fromisoformat(DAY_1))).plan_files()
    assert 1 <= len(day_1_files) <= 2

    # When each engine builds the daily marts of both days from the plays it ingested
    for settings in (local, spark):
        assert run_asset_job(build_definitions(settings), "marts", DAY_1, DAY_2, selection=DAILY_MARTS).success

    # Then every mart holds the same rows in both lakehouses
    assert _mart_rows(spark_catalog) == _mart_rows(local_catalog)


def _failure(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.event_specific_data.error.message


def test_spark_keeps_the_guards_and_empties_a_day_left_with_nothing_valid(twins: tuple[Settings, Settings]) -> None:
    _, spark = twins
    defs = build_definitions(spark)
    assert run_asset_job(defs, "plays_job", DAY_1, run_config=LENIENT).success
    catalog = _catalog(spark)
    rows_before = _plays(catalog).num_rows

    # When the day's files are replaced by a file of bad lines only, and the day is ingested with the default guards
    day_dir = Path(spark.landing_dir) / "plays" / DAY_1
    for path in day_dir.iterdir():
        path.unlink()
    (day_dir / "bad.jsonl").write_text("\n".join(["{not json", '{"play_id": 1}', "[]"] * 10) + "\n")
    rejects_before = _rejects(catalog)
    shrinking = run_asset_job(defs, "plays_job", DAY_1)
    refused = run_asset_job(
        defs, "plays_job", DAY_1, run_config={"ops": {"plays": {"config": {"max_shrink_share": 1.0}}}}
    )

    # Then the first run is refused for the shrink before anything is written, the second for its rejects after
    # its quarantine is: each says why, and plays is unchanged
    assert "would replace 3,3" in _failure(shrinking) and "fewer" in _failure(shrinking)
    assert "30 of 30 events (100.0%) failed validation" in _failure(refused)
    assert _plays(catalog).num_rows == rows_before
    assert len(rejects_before) > 30 and len(_rejects(catalog)) == 30

    # When the run accepts the rejects and the shrink: the day is replaced by nothing, not left as it was
    accepting = {"ops": {"plays": {"config": {"max_reject_share": 1.0, "max_shrink_share": 1.0}}}}
    assert run_asset_job(defs, "plays_job", DAY_1, run_config=accepting).success
    assert _plays(catalog).num_rows == 0
    assert len(_rejects(catalog)) == 30


def test_spark_ingests_the_synthetic_source_as_the_local_engine(settings: Settings, tmp_path: Path) -> None:
    if not settings.catalog_uri.startswith("sqlite"):
        pytest.skip("the catalog makes no difference here: the landing test runs on both")
    local = dataclasses.replace(settings, events_per_day=300_000)
    spark = Settings.from_env(
        {"SONIK_HOME": str(tmp_path / "spark"), "SONIK_ENGINE": "spark", "SONIK_SPARK_MASTER": "local[2]"}
    )
    spark = dataclasses.replace(spark, events_per_day=300_000)  # three batches: three splits
    for settings_ in (local, spark):
        assert run_asset_job(build_definitions(settings_), "plays_job", DAY_1).success
    local_plays, spark_plays = _plays(_catalog(local)), _plays(_catalog(spark))
    assert local_plays.num_rows == spark_plays.num_rows == 300_000
    assert spark_plays.sort_by("play_id").equals(local_plays.sort_by("play_id"))
