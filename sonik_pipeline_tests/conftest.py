"""Shared fixtures: every test gets its own lakehouse and Dagster home, isolated from the user's config."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings

DAY = dt.date(2026, 4, 20)
SMALL_DAY_EVENTS = 2_000


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No SONIK_*/PYICEBERG_* from the developer's shell; a private DAGSTER_HOME and HOME for config files."""
    for name in list(os.environ):
        if name.startswith(("SONIK_", "PYICEBERG_")) and name != "SONIK_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))


@pytest.fixture
def sonik_home(tmp_path: Path) -> Path:
    return tmp_path / "lakehouse"


@pytest.fixture
def settings(sonik_home: Path) -> Settings:
    return Settings.from_env({"SONIK_HOME": str(sonik_home), "SONIK_EVENTS_PER_DAY": str(SMALL_DAY_EVENTS)})


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    return open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)


@pytest.fixture
def defs(settings: Settings):
    return build_definitions(settings)
