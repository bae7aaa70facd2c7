"""The production path: Dagster on Postgres (deploy/dagster.yaml), a Postgres catalog, a queued multi-run backfill."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline_tests.conftest import POSTGRES_SKIP_REASON, private_postgres_database

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAYS = [dt.date(2026, 4, 11) + dt.timedelta(days=i) for i in range(10)]


@pytest.fixture
def production(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    server = os.environ.get("SONIK_TEST_POSTGRES_URL")
    if not server:
        pytest.skip(POSTGRES_SKIP_REASON)
    with private_postgres_database(server) as dagster_db, private_postgres_database(server) as catalog_db:
        home = tmp_path / "dagster_home"
        home.mkdir(exist_ok=True)
        config = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
        # This test watches the backfill alone: runs the daemon's sensors and schedules would start stay queued.
        config["concurrency"]["runs"]["tag_concurrency_limits"] += [
            {"key": "dagster/sensor_name", "limit": 0},
            {"key": "dagster/schedule_name", "limit": 0},
        ]
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SONIK_", "PYICEBERG_"))}
        env.update(
            DAGSTER_HOME=str(home),
            SONIK_DAGSTER_POSTGRES_URL=dagster_db.replace("postgresql+psycopg://", "postgresql+psycopg2://"),
            SONIK_CATALOG_URI=catalog_db,
            SONIK_WAREHOUSE=(tmp_path / "warehouse").as_uri(),
            SONIK_EVENTS_PER_DAY="500",
        )
        for key, value in env.items():
            if key.startswith(("SONIK_", "DAGSTER_HOME")):
                monkeypatch.setenv(key, value)
        yield env


def _what_failed(entry: dg.EventLogEntry) -> str:
    """A failure event's message, with the step's error when it has one: a failed backfill says why."""
    error = entry.dagster_event.step_failure_data.error if entry.dagster_event.is_step_failure else None
    return error.to_string() if error else entry.message


@pytest.mark.slow
def test_a_10_day_backfill_runs_as_parallel_queued_runs_on_postgres(production: dict, tmp_path: Path) -> None:
    # Given the daemon running against deploy/dagster.yaml (Postgres storage, queued run coordinator), on
    # storage created first: the daemon and the CLI creating a fresh Postgres schema at once race
    # ('type "snapshots" already exists') and the loser dies, as `dagster instance migrate` before the
    # first start avoids in production.
    instance = dg.DagsterInstance.get()
    log = (tmp_path / "daemon.log").open("w")
    daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")], cwd=REPO,
                              env=production, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        # When a 10-day backfill of plays_job is submitted from the CLI
        submitted = subprocess.run(
            [str(BIN / "dagster"), "job", "backfill", "-j", "plays_job", "-w", str(REPO / "workspace.yaml"),
             "--from", str(DAYS[0]), "--to", str(DAYS[-1]), "--noprompt"],
            cwd=REPO, env=production, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr

        # Then the daemon dequeues and runs them, several at once, until all succeed
        finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
        deadline = time.monotonic() + 420
        while time.monotonic() < deadline:
            # Only the backfill's runs: the daemon's sensors queue runs of their own (held back above).
            records = [r for r in instance.get_run_records() if r.dagster_run.job_name == "plays_job"]
            if len(records) == len(DAYS) and all(r.dagster_run.status in finished for r in records):
                break
            time.sleep(2)
        else:
            states = sorted((r.dagster_run.job_name, r.dagster_run.status.value) for r in instance.get_run_records())
            pytest.fail(f"backfill did not finish: {states}")
        failures = {
            r.dagster_run.tags.get("dagster/partition"): [
                _what_failed(e)
                for e in instance.all_logs(r.dagster_run.run_id)
                if e.dagster_event and e.dagster_event.is_failure
            ]
            for r in records
            if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS
        }
        assert not failures, failures
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in records) == [str(d) for d in DAYS]
        spans = sorted((r.start_time, r.end_time) for r in records)
        assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False)), (
            f"never parallel: {spans}"
        )
    finally:
        os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
        log.close()

    catalog = open_catalog("sonik", production["SONIK_CATALOG_URI"], production["SONIK_WAREHOUSE"])
    table = catalog.load_table("music.plays")
    assert [table.scan(row_filter=played_at_filter(d)).count() for d in DAYS] == [500] * len(DAYS)
