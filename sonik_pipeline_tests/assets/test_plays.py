import datetime as dt
import json
from pathlib import Path

import dagster as dg
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, StringType

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.ingest import run as ingest_module
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, TableDef
from sonik_pipeline.settings import Settings
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS

DAY = "2026-04-20"


def _run(
    defs: dg.Definitions,
    partition: str | None = None,
    first: str | None = None,
    last: str | None = None,
    run_config: dict | None = None,
) -> dg.ExecuteInProcessResult:
    job = defs.resolve_job_def("plays_job")
    tags = {}
    if first:
        tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    return job.execute_in_process(
        partition_key=partition,
        tags=tags,
        run_config=run_config,
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dict]:
    return {m.partition: m.metadata for m in result.asset_materializations_for_node("plays")}


def _count(catalog: Catalog, day: str) -> int:
    start = dt.datetime.fromisoformat(day)
    table = catalog.load_table("music.plays")
    return table.scan(
        row_filter=f"played_at >= '{start.isoformat()}' and played_at < '{(start + dt.timedelta(days=1)).isoformat()}'"
    ).count()


def test_first_materialization_writes_the_day_and_reports_it(defs, catalog: Catalog) -> None:
    result = _run(defs, DAY)

    assert result.success
    table = catalog.load_table("music.plays")
    snapshot = table.current_snapshot()
    meta = _materializations(result)[DAY]
    assert table.scan().count() == SMALL_DAY_EVENTS
    assert meta["rows_written"].value == SMALL_DAY_EVENTS
    assert meta["rows_rejected"].value == 0
    assert meta["table_rows"].value == SMALL_DAY_EVENTS
    assert meta["snapshot_id"].value == str(snapshot.snapshot_id)
    [data_file] = [task.file for task in table.scan().plan_files()]  # 2,000 rows: one file, far under 128 MiB
    assert meta["data_files_added"].value == 1
    assert meta["bytes_added"].value == data_file.file_size_in_bytes == int(snapshot.summary["added-files-size"])
    assert meta["duration_seconds"].value > 0
    assert len(meta["preview"].value.records) == 5
    assert snapshot.summary["dagster.run-id"] == result.run_id
    assert snapshot.summary["dagster.partition"] == DAY


def test_rerunning_a_day_replaces_it_with_one_more_snapshot(defs, catalog: Catalog) -> None:
    _run(defs, DAY)
    ids_before = set(catalog.load_table("music.plays").scan().to_arrow().column("play_id").to_pylist())

    result = _run(defs, DAY)

    table = catalog.load_table("music.plays")
    assert result.success
    assert table.scan().count() == SMALL_DAY_EVENTS
    assert len(table.snapshots()) == 2
    assert set(table.scan().to_arrow().column("play_id").to_pylist()) == ids_before  # deterministic source
    meta = _materializations(result)[DAY]
    assert (meta["rows_replaced"].value, meta["operation"].value) == (SMALL_DAY_EVENTS, "overwrite")


def test_a_range_runs_in_one_run_and_one_commit(defs, catalog: Catalog, sonik_home: Path) -> None:
    result = _run(defs, first="2026-04-18", last=DAY)

    assert result.success
    days = ["2026-04-18", "2026-04-19", DAY]
    meta = _materializations(result)
    assert sorted(meta) == days
    assert [_count(catalog, d) for d in days] == [SMALL_DAY_EVENTS] * 3
    table = catalog.load_table("music.plays")
    [snapshot] = table.snapshots()  # the three days are one atomic snapshot
    assert snapshot.summary["dagster.partition"] == "2026-04-18...2026-04-20"
    assert {meta[d]["snapshot_id"].value for d in days} == {str(snapshot.snapshot_id)}
    assert [meta[d]["rows_written"].value for d in days] == [SMALL_DAY_EVENTS] * 3
    data_dir = sonik_home / "warehouse" / "music" / "plays" / "data"
    assert sorted(p.name for p in data_dir.iterdir()) == [f"played_day={d}" for d in days]


def test_days_per_commit_groups_a_long_range(defs, catalog: Catalog) -> None:
    config = {"ops": {"plays": {"config": {"days_per_commit": 2}}}}

    result = _run(defs, first="2026-04-16", last=DAY, run_config=config)

    assert result.success
    partitions = sorted(s.summary["dagster.partition"] for s in catalog.load_table("music.plays").snapshots())
    assert partitions == ["2026-04-16...2026-04-17", "2026-04-18...2026-04-19", DAY]


def test_a_failing_day_keeps_the_days_before_it_and_says_which(settings: Settings, catalog: Catalog, tmp_path: Path):
    # Given three landing days of which the third has no files
    landing = tmp_path / "landing"
    for day in (dt.date(2026, 4, 18), dt.date(2026, 4, 19)):
        write_landing_day(landing, day, synthetic_batch(day, 30), files=1)

    result = _run(_landing_defs(settings, landing), first="2026-04-18", last=DAY)

    assert not result.success
    failure = result.failure_data_for_node("plays")
    assert "no landing files for 2026-04-20" in failure.error.message
    assert failure.user_failure_data.metadata["days_committed"].value == ["2026-04-18", "2026-04-19"]
    assert [_count(catalog, d) for d in ("2026-04-18", "2026-04-19", DAY)] == [30, 30, 0]
    materialized = {e.partition for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"}
    assert materialized == {"2026-04-18", "2026-04-19"}


def _landing_defs(settings: Settings, landing: Path) -> dg.Definitions:
    landing_settings = Settings(**{**settings.__dict__, "source": "landing", "landing_dir": str(landing)})
    return build_definitions(landing_settings)


BAD_LINES = [
    "{this is not json",
    json.dumps(
        {
            "play_id": "bad-type",
            "user_id": "abc",
            "track_id": 1,
            "artist": "A",
            "title": "T",
            "played_at": "2026-04-20T10:00:00Z",
        }
    ),
    json.dumps(
        {"play_id": "bad-missing", "user_id": 1, "track_id": 1, "artist": "A", "played_at": "2026-04-20T10:00:00Z"}
    ),
    json.dumps(
        {
            "play_id": "bad-day",
            "user_id": 1,
            "track_id": 1,
            "artist": "A",
            "title": "T",
            "played_at": "2026-04-19T23:59:59Z",
        }
    ),
]


def test_landing_zone_bad_events_land_in_quarantine_while_good_ones_land(
    settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    # Given a landing day with 1,000 good events, a duplicate of one of them, and one event of each bad kind
    landing = tmp_path / "landing"
    good = synthetic_batch(dt.date(2026, 4, 20), 1_000)
    write_landing_day(landing, dt.date(2026, 4, 20), good, files=2)
    duplicate = json.dumps({**good.slice(0, 1).to_pylist()[0], "played_at": "2026-04-20T12:00:00Z"})
    # "zz-" sorts after the part files, so its copy of an event is the second one seen
    (landing / "plays" / DAY / "zz-late.jsonl").write_text("\n".join([*BAD_LINES, duplicate]) + "\n")

    # When the day is ingested from the landing zone
    result = _run(_landing_defs(settings, landing), DAY)

    # Then the good rows land and every bad one is in quarantine with its reason, file and line
    assert result.success
    assert _count(catalog, DAY) == 1_000
    rejects = catalog.load_table("music.plays_rejected").scan().to_arrow().sort_by("source_line").to_pylist()
    assert [(r["reason"].split(":")[0], r["source_line"]) for r in rejects] == [
        ("malformed JSON", 1),
        ("wrong type for user_id", 2),
        ("missing required field title", 3),
        ("played_at outside 2026-04-20 (UTC)", 4),
        ("duplicate play_id", 5),
    ]
    assert rejects[0]["payload"] == "{this is not json"
    assert all(r["source_file"].endswith("zz-late.jsonl") and r["dagster_run_id"] == result.run_id for r in rejects)
    assert {str(r["ingest_day"]) for r in rejects} == {DAY}
    meta = _materializations(result)[DAY]
    assert meta["rows_rejected"].value == 4
    assert meta["duplicates_dropped"].value == 1
    assert meta["rejected_by_reason"].value["malformed JSON"] == 1


def test_too_many_rejects_fail_the_run_after_quarantine_and_leave_plays_unchanged(
    settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    day = dt.date(2026, 4, 20)
    write_landing_day(landing, day, synthetic_batch(day, 40), files=1)
    assert _run(_landing_defs(settings, landing), DAY).success
    before = catalog.load_table("music.plays").current_snapshot().snapshot_id
    (landing / "plays" / DAY / "broken.jsonl").write_text("\n".join(["{oops"] * 10) + "\n")

    result = _run(_landing_defs(settings, landing), DAY)

    assert not result.success
    failure = result.failure_data_for_node("plays").error.message
    assert "10 of 50 events (20.0%) failed validation, above the 5.0% threshold" in failure
    assert "malformed JSON (10)" in failure
    assert catalog.load_table("music.plays").current_snapshot().snapshot_id == before
    assert catalog.load_table("music.plays_rejected").scan().count() == 10


def test_the_threshold_is_configurable(settings: Settings, catalog: Catalog, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    day = dt.date(2026, 4, 20)
    write_landing_day(landing, day, synthetic_batch(day, 40), files=1)
    (landing / "plays" / DAY / "broken.jsonl").write_text("\n".join(["{oops"] * 10) + "\n")

    result = _run(
        _landing_defs(settings, landing), DAY, run_config={"ops": {"plays": {"config": {"max_reject_share": 0.25}}}}
    )

    assert result.success
    assert _count(catalog, DAY) == 40


def test_a_missing_landing_day_fails_clearly(settings: Settings, tmp_path: Path) -> None:
    result = _run(_landing_defs(settings, tmp_path / "empty"), DAY)

    assert not result.success
    assert "no landing files for 2026-04-20" in result.failure_data_for_node("plays").error.message


def test_an_optional_column_added_in_code_evolves_the_table_on_the_next_write(
    defs, catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(defs, "2026-04-19")
    old_files = {t.file.file_path for t in catalog.load_table("music.plays").scan().plan_files()}
    schema = Schema(*PLAYS.schema.fields, NestedField(11, "listening_context", StringType()))
    evolved = TableDef(PLAYS.namespace, PLAYS.name, schema, PLAYS.spec)
    monkeypatch.setattr(ingest_module, "PLAYS", evolved)

    result = _run(defs, DAY)

    assert result.success
    assert _materializations(result)[DAY]["schema_evolved"].value == "added: listening_context"
    table = catalog.load_table("music.plays")
    assert table.schema().find_field("listening_context").required is False
    assert old_files <= {t.file.file_path for t in table.scan().plan_files()}  # nothing rewritten
    assert table.scan().to_arrow().column("listening_context").null_count == 2 * SMALL_DAY_EVENTS


def _parquet_day(landing: Path, events: int, files: int) -> list[Path]:
    day = dt.date.fromisoformat(DAY)
    write_landing_day(landing, day, synthetic_batch(day, events), files=files, fmt="parquet")
    return sorted((landing / "plays" / DAY).glob("*.parquet"))


def test_an_unreadable_landing_file_fails_the_day_and_leaves_plays_unchanged(
    settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    # Given a day of 4 Parquet files, ingested in full
    landing = tmp_path / "landing"
    files = _parquet_day(landing, 2_000, files=4)
    defs = _landing_defs(settings, landing)
    assert _run(defs, DAY).success
    before = catalog.load_table("music.plays").current_snapshot().snapshot_id

    # When one file is cut short (an interrupted upload) and the day is ingested again
    with files[1].open("r+b") as f:
        f.truncate(500)
    result = _run(defs, DAY)

    # Then the run fails naming the file, plays keeps all 2,000 rows, and the quarantine records the file
    assert not result.success
    message = result.failure_data_for_node("plays").error.message
    assert f"unreadable landing file {files[1]}" in message
    assert "skip_unreadable_files" in message
    assert catalog.load_table("music.plays").current_snapshot().snapshot_id == before
    assert _count(catalog, DAY) == 2_000
    [reject] = catalog.load_table("music.plays_rejected").scan().to_arrow().to_pylist()
    assert reject["source_file"] == str(files[1])
    assert reject["reason"].startswith("unreadable Parquet file")


def test_skipping_unreadable_files_is_opt_in_and_the_shrink_guard_still_holds(
    settings: Settings, catalog: Catalog, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    files = _parquet_day(landing, 2_000, files=4)
    defs = _landing_defs(settings, landing)
    assert _run(defs, DAY).success
    before = catalog.load_table("music.plays").current_snapshot().snapshot_id
    files[1].write_bytes(files[1].read_bytes()[:500])
    skip = {"skip_unreadable_files": True}

    # Skipping the file alone would drop a quarter of the day: the shrink guard refuses
    refused = _run(defs, DAY, run_config={"ops": {"plays": {"config": skip}}})
    assert not refused.success
    message = refused.failure_data_for_node("plays").error.message
    assert "would replace 2,000 rows with 1,500 (500 fewer, 25.0%)" in message
    assert "max_shrink_share" in message
    assert catalog.load_table("music.plays").current_snapshot().snapshot_id == before

    # Allowing both, the day is what the readable files hold, and the metadata says which file was skipped
    allowed = _run(defs, DAY, run_config={"ops": {"plays": {"config": {**skip, "max_shrink_share": 1.0}}}})
    assert allowed.success
    assert _count(catalog, DAY) == 1_500
    meta = _materializations(allowed)[DAY]
    assert meta["unreadable_files_skipped"].value == [str(files[1])]
    assert (meta["rows_before"].value, meta["rows_written"].value) == (2_000, 1_500)


def test_a_reingest_that_would_shrink_the_day_fails_unless_allowed(settings: Settings, catalog: Catalog) -> None:
    # Given a day of 2,000 synthetic events
    assert _run(build_definitions(settings), DAY).success
    before = catalog.load_table("music.plays").current_snapshot().snapshot_id

    # When the source now has 1,700 (15% fewer, above the 10% default), the re-ingest is refused
    smaller = build_definitions(Settings(**{**settings.__dict__, "events_per_day": 1_700}))
    refused = _run(smaller, DAY)
    assert not refused.success
    message = refused.failure_data_for_node("plays").error.message
    assert "2026-04-20: this ingest would replace 2,000 rows with 1,700 (300 fewer, 15.0%)" in message
    assert catalog.load_table("music.plays").current_snapshot().snapshot_id == before

    # A drop within the allowed share lands; a configured share allows a bigger one
    assert _run(build_definitions(Settings(**{**settings.__dict__, "events_per_day": 1_850})), DAY).success
    assert _count(catalog, DAY) == 1_850
    assert _run(smaller, DAY, run_config={"ops": {"plays": {"config": {"max_shrink_share": 0.2}}}}).success
    assert _count(catalog, DAY) == 1_700
