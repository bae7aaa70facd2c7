"""Shared fixtures: every test gets its own lakehouse and Dagster home, isolated from the user's config."""

from __future__ import annotations

import datetime as dt
import io
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import dagster as dg
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import ManifestFile
from sqlalchemy.engine import make_url

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings

DAY = dt.date(2026, 4, 20)
SMALL_DAY_EVENTS = 2_000


def op_output_metadata(result: dg.ExecuteInProcessResult, op: str) -> dict:
    """The metadata an op's output carried (what the UI shows for a maintenance step)."""
    [output] = [e for e in result.events_for_node(op) if e.event_type_value == "STEP_OUTPUT"]
    return output.event_specific_data.metadata


def run_asset_job(
    defs: dg.Definitions, job: str, first: str, last: str | None = None, selection=None, run_config: dict | None = None
):
    """Run an asset job (or an ad-hoc one over ``selection``) for days ``first``..``last`` in one run, in process."""
    if selection is not None:  # an ad-hoc job over part of the graph
        defs = dg.Definitions.merge(defs, dg.Definitions(jobs=[dg.define_asset_job(job, selection=selection)]))
    return defs.resolve_job_def(job).execute_in_process(
        run_config=run_config,
        tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last or first},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )


def sonik(*args: str) -> tuple[int, str, str]:
    """`sonik` as a user types it, in this process: its exit code, stdout and stderr."""
    from sonik_pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def record_manifest_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every manifest opened from now on (its entries read), in order: what a metadata read cost."""
    reads: list[str] = []
    real_fetch = ManifestFile.fetch_manifest_entry

    def recording_fetch(self, io, discard_deleted=True):
        reads.append(self.manifest_path)
        return real_fetch(self, io, discard_deleted=discard_deleted)

    monkeypatch.setattr(ManifestFile, "fetch_manifest_entry", recording_fetch)
    return reads


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], bool]:
    """(asset, check) -> passed, for every check the run evaluated."""
    return {
        (
            e.event_specific_data.asset_key.to_user_string(),
            e.event_specific_data.check_name,
        ): e.event_specific_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


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


POSTGRES_SKIP_REASON = (
    "SONIK_TEST_POSTGRES_URL is not set: the Postgres-catalog variant needs a PostgreSQL server "
    "(.ci/run sets it, e.g. postgresql://postgres@127.0.0.1:5432/test)"
)


@contextmanager
def private_postgres_database(server_url: str) -> Iterator[str]:
    """A fresh database on the test server for one test (so runs never see each other), dropped after."""
    import psycopg

    name = f"sonik_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(server_url).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def copied_lakehouse(settings: Settings, catalog: Catalog, home: Path) -> Iterator[Settings]:
    """A copy of the whole lakehouse at ``home``, made as a backup would be, and the settings that use it.

    SQLite: the ``SONIK_HOME`` folder. Postgres: the folder, and the catalog database cloned with
    ``CREATE DATABASE ... TEMPLATE`` (which needs the original free of connections), dropped after.
    """
    shutil.copytree(settings.home, home)
    if settings.catalog_uri.startswith("sqlite"):
        yield Settings.from_env({"SONIK_HOME": str(home)})
        return
    import psycopg

    catalog.engine.dispose()
    original = make_url(settings.catalog_uri)
    copy = original.set(database=f"{original.database}_copy")
    server = os.environ["SONIK_TEST_POSTGRES_URL"]
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{copy.database}" TEMPLATE "{original.database}"')
    try:
        yield Settings.from_env({"SONIK_HOME": str(home), "SONIK_CATALOG_URI": copy.render_as_string(False)})
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{copy.database}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def catalog_uri(request: pytest.FixtureRequest, sonik_home: Path) -> Iterator[str]:
    """Every integration test runs on the embedded SQLite catalog and on a real PostgreSQL catalog."""
    if request.param == "sqlite":
        yield f"sqlite:///{sonik_home / 'catalog.db'}"
        return
    server = os.environ.get("SONIK_TEST_POSTGRES_URL")
    if not server:
        pytest.skip(POSTGRES_SKIP_REASON)
    with private_postgres_database(server) as url:
        yield url


@pytest.fixture
def settings(sonik_home: Path, catalog_uri: str) -> Settings:
    return Settings.from_env(
        {"SONIK_HOME": str(sonik_home), "SONIK_CATALOG_URI": catalog_uri, "SONIK_EVENTS_PER_DAY": str(SMALL_DAY_EVENTS)}
    )


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> dict[str, str]:
    """`sonik` (in this process or another) reads the test's lakehouse (SQLite or Postgres catalog)."""
    monkeypatch.setenv("SONIK_HOME", str(settings.home))
    monkeypatch.setenv("SONIK_CATALOG_URI", settings.catalog_uri)
    return {k: v for k, v in os.environ.items() if not k.startswith("PYICEBERG_")}


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    return open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)


@pytest.fixture
def defs(settings: Settings):
    return build_definitions(settings)
