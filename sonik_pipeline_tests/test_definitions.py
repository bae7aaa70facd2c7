import click
import dagster as dg
import pytest

from sonik_pipeline.definitions import defs as lazy_defs
from sonik_pipeline.resources import LakehouseCatalog
from sonik_pipeline.settings import SettingsError


def test_every_job_resolves(defs: dg.Definitions) -> None:
    dg.Definitions.validate_loadable(defs)
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"plays_job"}


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
