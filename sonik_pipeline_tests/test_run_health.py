"""Run health: the shipped instances monitor runs."""

import os
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import pytest

from sonik_pipeline_tests.conftest import POSTGRES_SKIP_REASON, private_postgres_database

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("shipped", ["dagster_home", "deploy"])
def test_the_shipped_instances_load_with_run_monitoring(
    shipped: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dagster checks every run_monitoring key and value, and that the launcher allows them, when it loads."""
    with ExitStack() as stack:
        if shipped == "deploy":
            server = os.environ.get("SONIK_TEST_POSTGRES_URL")
            if not server:
                pytest.skip(POSTGRES_SKIP_REASON)
            database = stack.enter_context(private_postgres_database(server))
            monkeypatch.setenv("SONIK_DAGSTER_POSTGRES_URL", database.replace("+psycopg://", "+psycopg2://"))
        home = tmp_path / f"shipped_{shipped}"
        home.mkdir()
        (home / "dagster.yaml").write_text((REPO / shipped / "dagster.yaml").read_text())

        instance = stack.enter_context(dg.DagsterInstance.from_config(str(home)))

        assert instance.run_monitoring_enabled
        assert "MONITORING" in instance.get_required_daemon_types()
        assert isinstance(instance.run_launcher, dg.DefaultRunLauncher)
        assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0
        assert instance.run_monitoring_poll_interval_seconds <= 60
