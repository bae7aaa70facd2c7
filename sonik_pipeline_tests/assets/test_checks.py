"""Asset checks through Dagster: plays checks block the marts on a bad day; marts reconcile with plays."""

import datetime as dt

import dagster as dg
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import EqualTo

from sonik_pipeline.assets.checks import PLAY_ID_UNIQUE, RECONCILES_WITH_PLAYS, build_plays_checks
from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.ingest.rules import CHECKED_RULES
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.writes import replace_partition, stage_files
from sonik_pipeline_tests.conftest import check_results, run_asset_job

DAYS = [f"2026-04-{d}" for d in range(14, 21)]


def test_the_plays_checks_are_the_rules_ingest_validates_with_in_their_words() -> None:
    checks = build_plays_checks(dg.DailyPartitionsDefinition(start_date="2026-04-01"))

    specs = {spec.name: spec.description for spec in checks.check_specs}

    assert specs == {rule.name: rule.description for rule in CHECKED_RULES}
    assert set(specs) == {"play_id_unique", "required_fields_present", "played_at_inside_day", "durations_in_range"}


def test_a_failing_plays_check_blocks_the_marts(defs, catalog: Catalog) -> None:
    # Given a day of plays holding a duplicated play_id (written behind the pipeline's back)
    assert run_asset_job(defs, "plays_job", DAYS[-1]).success
    table = catalog.load_table("music.plays")
    day = synthetic_batch(dt.date(2026, 4, 20), 50)
    duplicated = pa.concat_tables([day, day.slice(0, 1)])
    replace_partition(table, played_at_filter(dt.date(2026, 4, 20)), stage_files(table, [duplicated]), {})

    # When the checks and the marts run for that day (without re-ingesting plays)
    selection = dg.AssetSelection.checks_for_assets("plays") | dg.AssetSelection.groups("marts")
    result = run_asset_job(defs, "marts_only", DAYS[-1], selection=selection)

    # Then the blocking check fails and no mart is built on the bad day
    assert check_results(result)[("plays", PLAY_ID_UNIQUE)] is False
    assert not result.get_asset_materialization_events()
    assert not catalog.table_exists("music_marts.daily_top_tracks")


def test_reconciliation_fails_when_a_mart_drifts_from_plays(defs, catalog: Catalog) -> None:
    assert run_asset_job(defs, "daily_job", DAYS[-1]).success
    mart = catalog.load_table("music_marts.daily_device_mix")
    rows = mart.scan().to_arrow()
    drifted = rows.set_column(rows.schema.get_field_index("plays"), "plays", pa.array([1] * rows.num_rows, pa.int64()))
    replace_partition(
        mart,
        EqualTo("day", DAYS[-1]),
        stage_files(mart, [drifted]),
        {
            "dagster.partition": DAYS[-1],
            "sonik.plays-snapshot-id": mart.current_snapshot().summary["sonik.plays-snapshot-id"],
            "sonik.plays-metadata-location": mart.current_snapshot().summary["sonik.plays-metadata-location"],
        },
    )

    selection = dg.AssetSelection.checks_for_assets("daily_device_mix")
    result = run_asset_job(defs, "device_check", DAYS[-1], selection=selection)

    assert check_results(result) == {("daily_device_mix", RECONCILES_WITH_PLAYS): False}


def _partition_statuses(instance: dg.DagsterInstance, asset: str, check: str) -> dict[str, str]:
    key = dg.AssetCheckKey(dg.AssetKey(asset), check)
    infos = instance.event_log_storage.get_asset_check_partition_info([key])
    return {i.partition_key: i.latest_execution_status.value for i in infos if i.partition_key}


def test_a_bad_row_in_one_day_of_a_30_day_run_fails_that_days_check_and_no_other(defs, catalog: Catalog) -> None:
    # Given 30 days of plays, one of which gained a duplicated play_id behind the pipeline's back
    first, last = "2026-03-22", "2026-04-20"
    assert run_asset_job(defs, "plays_job", first, last).success
    bad = dt.date(2026, 4, 2)
    table = catalog.load_table("music.plays")
    rows = synthetic_batch(bad, 50)
    duplicated = pa.concat_tables([rows, rows.slice(0, 1)])
    replace_partition(table, played_at_filter(bad), stage_files(table, [duplicated]), {})

    # When the checks and the marts run over the 30 days
    selection = dg.AssetSelection.checks_for_assets("plays") | dg.AssetSelection.groups("marts")
    result = run_asset_job(defs, "marts_over_a_month", first, last, selection=selection)

    # Then play_id_unique failed on exactly that day, every other check and day passed, and no mart was built
    instance = dg.DagsterInstance.get()
    unique = _partition_statuses(instance, "plays", PLAY_ID_UNIQUE)
    assert len(unique) == 30
    assert {day for day, status in unique.items() if status != "SUCCEEDED"} == {str(bad)}
    assert unique[str(bad)] == "FAILED"
    for check in ("required_fields_present", "played_at_inside_day", "durations_in_range"):
        assert set(_partition_statuses(instance, "plays", check).values()) == {"SUCCEEDED"}, check
    assert not result.success and not result.get_asset_materialization_events()
    assert not catalog.table_exists("music_marts.daily_top_tracks")
