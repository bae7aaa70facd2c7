"""SONIK_ENGINE=spark builds the marts: row for row what the local engine builds, through Dagster.

The same days of plays (the synthetic source, local ingest) go into two fresh lakehouses; the marts are
materialized by the local engine in one and by Spark in local mode in the other, on the SQLite and the
PostgreSQL catalog, and every mart table, its commits and the assets' metadata are compared.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.days import epoch_day, format_days, played_at_filter
from sonik_pipeline.lakehouse.marts.queries import DAILY_MARTS, ROLLING_MARTS
from sonik_pipeline.lakehouse.marts.run import PLAYS_METADATA_PROPERTY, PLAYS_SNAPSHOT_PROPERTY
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import USER_TRACK_DAYS_TABLE
from sonik_pipeline.lakehouse.tables.writes import data_file_days
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import check_results, private_postgres_database, run_asset_job
from sonik_pipeline_tests.engines.spark_available import SPARK_TESTS

pytestmark = SPARK_TESTS

# Plays on six days, none on the 19th: the marts of the 17th..20th hold an empty day, and the rolling views'
# windows reach back over days with and without plays.
PLAYS_RANGES = [("2026-04-14", "2026-04-18"), ("2026-04-20", "2026-04-20")]
FIRST, LAST = "2026-04-17", "2026-04-20"
MARTS = (*DAILY_MARTS, *ROLLING_MARTS)
MART_SELECTION = dg.AssetSelection.groups("marts", "rolling")


@pytest.fixture
def spark_settings(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A second fresh lakehouse on the same kind of catalog, whose marts Spark builds."""
    home = tmp_path / "spark_lakehouse"
    if settings.catalog_uri.startswith("sqlite"):
        yield _spark(Settings.from_env({"SONIK_HOME": str(home), "SONIK_EVENTS_PER_DAY": str(settings.events_per_day)}))
        return
    with private_postgres_database(os.environ["SONIK_TEST_POSTGRES_URL"]) as url:
        env = {"SONIK_HOME": str(home), "SONIK_CATALOG_URI": url, "SONIK_EVENTS_PER_DAY": str(settings.events_per_day)}
        yield _spark(Settings.from_env(env))


def _spark(settings: Settings) -> Settings:
    return dataclasses.replace(settings, engine="spark", spark_master="local[2]")


def _catalog(settings: Settings) -> Catalog:
    return open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)


def _local_ingest(settings: Settings) -> None:
    """The same plays in each lakehouse: the synthetic source is deterministic, and the local engine ingests it."""
    local = build_definitions(dataclasses.replace(settings, engine="local"))
    for first, last in PLAYS_RANGES:
        assert run_asset_job(local, "plays_job", first, last).success


def _mart_rows(catalog: Catalog) -> dict[str, list[dict]]:
    """Every mart table's rows, sorted by all of its columns."""
    found = {}
    for mart in MARTS:
        rows = catalog.load_table(mart.table.identifier).scan().to_arrow()
        found[mart.name] = rows.sort_by([(name, "ascending") for name in rows.column_names]).to_pylist()
    return found


def _materialized(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str | None], dict]:
    """(asset, partition) -> the metadata a run recorded for it."""
    found = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        found[(materialization.asset_key.to_user_string(), materialization.partition)] = materialization.metadata
    return found


def _comparable(metadata: dict) -> dict:
    """What must be the same whatever the engine (timings, snapshot ids and bytes are each run's own)."""
    same = ("rows", "dagster/row_count", "rows_in_run", "days_in_run", "days_with_plays")
    found = {key: metadata[key].value for key in same if key in metadata}
    if "top_rows" in metadata:
        found["top_rows"] = [record.data for record in metadata["top_rows"].value.records]
    return found


def _files_holding_other_days(table: Table, day: str) -> int:
    """Data files holding ``day`` and other days too, from their bounds of ``day``."""
    field_id = table.schema().find_field("day").field_id
    target = epoch_day(dt.date.fromisoformat(day))
    spans = [data_file_days(task.file, field_id) for task in table.scan().plan_files()]
    return sum(1 for lo, hi in spans if lo <= target <= hi and lo < hi)


def test_spark_builds_every_mart_row_for_row_as_the_local_engine(settings: Settings, spark_settings: Settings) -> None:
    # Given the same days of plays in two fresh lakehouses
    _local_ingest(settings)
    _local_ingest(spark_settings)
    local_catalog, spark_catalog = _catalog(settings), _catalog(spark_settings)
    plays = spark_catalog.load_table("music.plays").current_snapshot()

    # When the marts of four days are materialized by the local engine in one and by Spark in the other
    local = run_asset_job(build_definitions(settings), "marts", FIRST, LAST, selection=MART_SELECTION)
    spark_defs = build_definitions(spark_settings)
    spark = run_asset_job(spark_defs, "marts", FIRST, LAST, selection=MART_SELECTION)

    # Then every mart holds the same rows, and each run reports the same days and rows
    assert local.success and spark.success
    assert _mart_rows(spark_catalog) == _mart_rows(local_catalog)
    local_meta, spark_meta = _materialized(local), _materialized(spark)
    assert spark_meta.keys() == local_meta.keys()
    for key, metadata in local_meta.items():
        assert spark_meta[key].keys() == metadata.keys(), key
        assert _comparable(spark_meta[key]) == _comparable(metadata), key
    top = _comparable(spark_meta[("daily_top_tracks", LAST)])
    assert top["rows"] == 100 and len(top["top_rows"]) == 10 and top["top_rows"][0]["rank"] == 1
    assert spark_meta[("daily_device_mix", "2026-04-19")]["rows"].value == 0  # a day without plays
    # ... the reconciliation checks pass on Spark's marts
    checks = check_results(spark)
    assert checks and all(checks.values())
    # ... and each mart is one Spark commit of the four days, carrying the run and the plays snapshot it read
    for mart in MARTS:
        table = spark_catalog.load_table(mart.table.identifier)
        [snapshot] = table.snapshots()
        summary = snapshot.summary
        assert summary.operation.value == "overwrite"
        assert summary["dagster.run-id"] == spark.run_id
        assert summary["dagster.partition"] == format_days(dt.date(2026, 4, 17), dt.date(2026, 4, 20))
        assert summary[PLAYS_SNAPSHOT_PROPERTY] == str(plays.snapshot_id)
        assert summary[PLAYS_METADATA_PROPERTY] == spark_catalog.load_table("music.plays").metadata_location
        assert "spark.app.id" in summary  # written by Spark, not by PyIceberg

    # When a day's plays are gone and each engine builds that day's marts again (Spark wrote each bucket of
    # user_track_days as one file of the four days: the other days' rows must be written back), Spark with its
    # read of plays persisted
    day = "2026-04-18"
    for catalog in (local_catalog, spark_catalog):
        catalog.load_table("music.plays").delete(played_at_filter(dt.date.fromisoformat(day)))
    assert _files_holding_other_days(spark_catalog.load_table(USER_TRACK_DAYS_TABLE.identifier), day)
    snapshots = {m.name: len(spark_catalog.load_table(m.table.identifier).snapshots()) for m in MARTS}
    assert run_asset_job(build_definitions(settings), "marts", day, selection=MART_SELECTION).success
    steps = ("daily_marts", *(m.name for m in ROLLING_MARTS))
    persisted = {op: {"config": {"materialize_plays": True}} for op in steps}
    again = run_asset_job(spark_defs, "marts", day, selection=MART_SELECTION, run_config={"ops": persisted})

    # Then the day is replaced, empty in the daily marts, the other days kept, and the marts still agree
    assert again.success
    assert _mart_rows(spark_catalog) == _mart_rows(local_catalog)
    rows = _mart_rows(spark_catalog)
    for mart in DAILY_MARTS:
        assert {str(r["day"]) for r in rows[mart.name]} == {"2026-04-17", "2026-04-20"}, mart.name
    for mart in MARTS:
        table = spark_catalog.load_table(mart.table.identifier)
        assert len(table.snapshots()) == snapshots[mart.name] + 1, mart.name  # one commit each
        assert table.current_snapshot().summary["dagster.run-id"] == again.run_id
    checks = check_results(again)
    assert checks and all(checks.values())
