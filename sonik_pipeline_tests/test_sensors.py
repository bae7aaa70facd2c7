"""Sensors: the freshness check on plays, judged by its sensor at a fixed clock."""

import datetime as dt

import dagster as dg

from sonik_pipeline_tests.conftest import run_asset_job


def _freshness_at(defs: dg.Definitions, monkeypatch, when: dt.datetime) -> bool:
    from dagster._core.definitions.asset_checks.asset_check_factories.freshness_checks import time_partition

    monkeypatch.setattr(time_partition, "get_current_timestamp", lambda: when.timestamp())  # the clock, fixed
    check = dg.AssetSelection.checks(dg.AssetCheckKey(dg.AssetKey("plays"), "freshness_check"))
    job = dg.define_asset_job("freshness_now", selection=check)
    result = (
        dg.Definitions.merge(defs, dg.Definitions(jobs=[job]))
        .resolve_job_def("freshness_now")
        .execute_in_process(instance=dg.DagsterInstance.get())
    )
    [evaluation] = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    return evaluation.passed


def test_freshness_fails_when_the_day_that_ended_has_not_landed_by_six(defs: dg.Definitions, monkeypatch) -> None:
    plays = defs.resolve_job_def("plays_job")
    assert plays.execute_in_process(partition_key="2026-04-19", instance=dg.DagsterInstance.get()).success

    # Before 06:00 on the 21st only the 19th is due; after it, the 20th is, and it is missing.
    assert _freshness_at(defs, monkeypatch, dt.datetime(2026, 4, 21, 5, 0, tzinfo=dt.UTC)) is True
    assert _freshness_at(defs, monkeypatch, dt.datetime(2026, 4, 21, 7, 0, tzinfo=dt.UTC)) is False

    assert plays.execute_in_process(partition_key="2026-04-20", instance=dg.DagsterInstance.get()).success
    assert _freshness_at(defs, monkeypatch, dt.datetime(2026, 4, 21, 7, 0, tzinfo=dt.UTC)) is True


def test_materializing_old_days_reports_no_freshness_result(defs: dg.Definitions, monkeypatch) -> None:
    from dagster._core.definitions.asset_checks.asset_check_factories.freshness_checks import time_partition

    # Long after the 20th's deadline, with only old days in plays: the sensor's evaluation would fail.
    monkeypatch.setattr(
        time_partition, "get_current_timestamp", lambda: dt.datetime(2026, 5, 1, tzinfo=dt.UTC).timestamp()
    )
    # As `dagster asset materialize --select plays` selects it: plays with every check on it.
    result = run_asset_job(defs, "plays_alone", "2026-04-18", selection=dg.AssetSelection.assets("plays"))

    assert result.success
    evaluated = {
        e.event_specific_data.check_name for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert evaluated and "freshness_check" not in evaluated  # the quality checks ran, freshness did not
    assert "freshness_check" in {k.name for k in defs.resolve_asset_graph().asset_check_keys}
    assert _freshness_at(defs, monkeypatch, dt.datetime(2026, 5, 1, tzinfo=dt.UTC)) is False  # the sensor's run
