import click
import dagster as dg
import pytest

from sonik_pipeline.definitions import defs as lazy_defs
from sonik_pipeline.resources import LakehouseCatalog
from sonik_pipeline.settings import SettingsError

# Every job, schedule and sensor of the code location, by name (the README and docs/operating.md name them too):
# adding or removing one without updating these fails the test below.
JOBS = {
    "plays_job",
    "daily_job",
    "compaction_job",
    "manifests_job",
    "expiry_job",
    "orphans_job",
    "rollback_job",
}
SCHEDULES = {  # schedule -> the job it runs
    "daily_schedule": "daily_job",
    "compaction_schedule": "compaction_job",
    "manifests_schedule": "manifests_job",
    "expiry_schedule": "expiry_job",
    "orphans_schedule": "orphans_job",
}
SENSORS = {"landing_sensor", "marts_follow_plays", "plays_freshness_sensor", "dead_run_sensor"}


def test_every_job_schedule_and_sensor_resolves(defs: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(defs)

    assert {job.name for job in defs.jobs} == JOBS
    # Resolved, the repository holds exactly these plus Dagster's own implicit asset job (``__ASSET_JOB``).
    assert {job.name for job in defs.resolve_all_job_defs() if not job.name.startswith("__")} == JOBS
    for name in JOBS:
        assert defs.resolve_job_def(name).name == name

    assert {schedule.name for schedule in defs.schedules} == set(SCHEDULES)
    for name, job in SCHEDULES.items():
        schedule = defs.resolve_schedule_def(name)
        assert (schedule.name, schedule.job_name) == (name, job)

    assert {sensor.name for sensor in defs.sensors} == SENSORS
    for name in SENSORS:
        assert defs.resolve_sensor_def(name).name == name


def test_user_track_interactions_is_a_rolling_view_of_four_weeks_of_plays(defs: dg.Definitions) -> None:
    asset = defs.resolve_assets_def("user_track_interactions")
    [spec] = asset.specs

    mapping = asset.get_partition_mapping(dg.AssetKey("plays"))
    assert (mapping.start_offset, mapping.end_offset) == (-27, 0)
    assert spec.group_name == "rolling" and spec.metadata["window_days"] == 28
    assert spec.metadata["dagster/table_name"] == "sonik.music_marts.user_track_interactions"
    assert asset.backfill_policy == dg.BackfillPolicy.single_run()


def test_the_code_location_loads_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("SONIK_HOME", str(tmp_path / "lh"))
    monkeypatch.setenv("SONIK_START_DATE", "2026-01-01")

    loaded = lazy_defs()

    plays = loaded.resolve_assets_def("plays")
    assert plays.partitions_def.start.date().isoformat() == "2026-01-01"
    assert plays.backfill_policy == dg.BackfillPolicy.single_run()
    resource = loaded.resources["lakehouse"]
    assert isinstance(resource, LakehouseCatalog)
    assert resource.catalog_uri == f"sqlite:///{tmp_path}/lh/catalog.db"


def test_a_catalog_uri_from_the_environment_stays_an_envvar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SONIK_CATALOG_URI", "postgresql+psycopg://sonik:secret@db/catalog")

    loaded = lazy_defs()

    assert loaded.resources["lakehouse"].catalog_uri == dg.EnvVar("SONIK_CATALOG_URI")


def test_a_bad_setting_fails_the_load_with_its_message_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """What Dagster shows of a load error is the message first and any chained cause after: keep out the chain."""
    monkeypatch.setenv("SONIK_EVENTS_PER_DAY", "-5")

    with pytest.raises(SettingsError) as raised:
        lazy_defs()

    assert str(raised.value) == (
        "SONIK_EVENTS_PER_DAY='-5': expected a positive whole number of events per day, e.g. 50000"
    )
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert isinstance(raised.value, click.ClickException)  # dagster's click commands print it as one line
