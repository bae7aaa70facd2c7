import dagster as dg
import pytest

from sonik_pipeline.definitions import defs as lazy_defs
from sonik_pipeline.resources import LakehouseCatalog


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
