"""A maintenance run killed mid-step with the daemon running, on the shipped instance: the next one completes.

Each test failed before the fix: a worker killed under a live code server left its pool slot held (run
monitoring frees it now); a run left STARTED by a crash of the whole daemon kept its queue place and slot
(dead_run_sensor fails it now), and rollback_job queued behind it (it no longer takes the maintenance tag
and pool). The catalog plays no part here, so they run on the embedded SQLite one.
"""

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster import DagsterEventType

from sonik_pipeline.jobs import MAINTENANCE_POOL
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.run_health import WORKER_GONE
from sonik_pipeline.settings import CATALOG_NAME, Settings

REPO = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="freezes process trees through /proc"),
]

BIN = Path(sys.executable).parent
WORKSPACE = str(REPO / "workspace.yaml")
DAY = dt.date(2026, 4, 20)
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
COMPACT_PAST_DAYS = {"ops": {"compact_tables": {"config": {"skip_recent_days": 0}}}}


@dataclass
class LocalDagster:
    """The shipped local instance in a tmp DAGSTER_HOME, a lakehouse beside it, and the daemon's log."""

    env: dict[str, str]
    instance: dg.DagsterInstance
    log: Path

    def start_daemon(self) -> subprocess.Popen:
        """`dagster-daemon run` in its own process group: it, its code server and the run workers it starts."""
        command = [str(BIN / "dagster-daemon"), "run", "-w", WORKSPACE]
        with self.log.open("a") as log:
            return subprocess.Popen(
                command, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def launch(self, job: str, run_config: dict | None = None) -> tuple[str, subprocess.Popen]:
        """`dagster job launch`, as a user queues a run: the run id it will have, and the CLI process."""
        run_id = str(uuid.uuid4())
        args = [str(BIN / "dagster"), "job", "launch", "-j", job, "-w", WORKSPACE, "--run-id", run_id]
        args += ["--config-json", json.dumps(run_config)] if run_config else []
        return run_id, subprocess.Popen(args, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    @staticmethod
    def queued(launched: tuple[str, subprocess.Popen]) -> str:
        run_id, cli = launched
        output, _ = cli.communicate(timeout=120)
        assert cli.returncode == 0, output.decode()
        return run_id

    def wait_for(self, what: str, predicate, timeout: float):
        deadline = time.monotonic() + timeout
        while not (value := predicate()):
            if time.monotonic() > deadline:
                runs = [(r.job_name, r.status.value) for r in self.instance.get_runs()]
                pytest.fail(f"no {what} within {timeout:.0f} s; runs: {runs}\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        return value

    def status(self, run_id: str) -> dg.DagsterRunStatus:
        return self.instance.get_run_by_id(run_id).status

    def slot_holders(self) -> list[str]:
        return [s.run_id for s in self.instance.event_log_storage.get_concurrency_info(MAINTENANCE_POOL).claimed_slots]

    def worker_pid(self, run_id: str) -> int:
        """The pid the run worker reported in its "Started process for run (pid: N)" engine event."""
        [pid] = [
            int(e.dagster_event.engine_event_data.metadata["pid"].value)
            for e in self.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT)
            if e.message.startswith("Started process for run")
        ]
        return pid

    def plays(self):
        settings = Settings.from_env({"SONIK_HOME": self.env["SONIK_HOME"]})
        return open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse).load_table("music.plays")


@pytest.fixture
def local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalDagster]:
    """The shipped dagster_home instance (queue, limits, run monitoring) and a lakehouse with small files."""
    home = tmp_path / "shipped_dagster_home"
    home.mkdir()
    config = yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())
    # Only the runs this test launches: runs of other sensors and of schedules (02:00 UTC) stay queued.
    config["concurrency"]["runs"]["tag_concurrency_limits"] += [
        {"key": "dagster/sensor_name", "limit": 0},
        {"key": "dagster/schedule_name", "limit": 0},
    ]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    settings = Settings.from_env({"SONIK_HOME": str(tmp_path / "lakehouse")})
    table, _ = ensure_table(open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse), PLAYS)
    for batch in range(6):  # six small files of a past day: work for compaction
        table.append(synthetic_batch(DAY, 100, batch=batch).cast(table.schema().as_arrow()))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONIK_", "PYICEBERG_"))}
    with dg.DagsterInstance.get() as instance:
        yield LocalDagster({**env, "SONIK_HOME": str(settings.home)}, instance, tmp_path / "daemon.log")


def _stop(daemon: subprocess.Popen) -> None:
    with suppress(ProcessLookupError):
        os.killpg(daemon.pid, signal.SIGKILL)
    daemon.wait(30)


def _children(pid: int) -> set[int]:
    with suppress(FileNotFoundError):
        return {int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split()}
    return set()


def _freeze_tree(pid: int) -> set[int]:
    """SIGSTOP a process and every descendant, parents first so none forks another; the pids frozen."""
    frozen: set[int] = set()
    while pending := ({pid} | {c for p in frozen for c in _children(p)}) - frozen:
        for p in pending:
            with suppress(ProcessLookupError):
                os.kill(p, signal.SIGSTOP)
            frozen.add(p)
        time.sleep(0.2)  # a fork under way when the signal came shows up as a child now
    return frozen


def _compaction_holding_the_pool(local: LocalDagster) -> tuple[str, set[int]]:
    """A compaction_job run whose step has claimed the maintenance slot, frozen there with its worker tree.

    The catalog is locked until the freeze, so the step (in the run worker's own process) waits on it
    inside the step rather than finishing before it is frozen.
    """
    lock = sqlite3.connect(Path(local.env["SONIK_HOME"]) / "catalog.db", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        compaction = local.queued(local.launch("compaction_job", COMPACT_PAST_DAYS))
        local.wait_for("compaction step holding the pool", lambda: compaction in local.slot_holders(), 120)
        frozen = _freeze_tree(local.worker_pid(compaction))
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert not local.instance.all_logs(compaction, of_type=DagsterEventType.STEP_SUCCESS), "compaction ran too fast"
    assert local.status(compaction) == dg.DagsterRunStatus.STARTED
    return compaction, frozen


def _expiry_completes_after(local: LocalDagster, killed: str, expiry: str) -> None:
    """The queued expiry_job runs to SUCCESS once the killed run let go, and no slot is left held."""
    local.wait_for("expiry_job finishing", lambda: local.status(expiry) in FINISHED, 240)
    assert local.status(expiry) == dg.DagsterRunStatus.SUCCESS
    assert local.status(killed) == dg.DagsterRunStatus.FAILURE
    steps = [e.step_key for e in local.instance.all_logs(expiry, of_type=DagsterEventType.STEP_SUCCESS)]
    assert steps == ["expire_table_snapshots"]
    assert local.slot_holders() == []


def test_a_killed_maintenance_run_frees_the_pool_and_the_next_maintenance_run_completes(local: LocalDagster) -> None:
    # Given the daemon on the shipped instance, and a compaction whose step holds the maintenance pool
    daemon = local.start_daemon()
    try:
        compaction, worker_tree = _compaction_holding_the_pool(local)
        expiry = local.queued(local.launch("expiry_job"))

        # When its run worker and step processes are killed with -9 while the daemon and code server live on
        for pid in worker_tree:
            os.kill(pid, signal.SIGKILL)

        # Then the code server marks it failed, run monitoring frees the slot it kept, and expiry completes
        _expiry_completes_after(local, compaction, expiry)
    finally:
        _stop(daemon)
    table = local.plays()
    assert table.scan().count() == 600 and len(list(table.scan().plan_files())) == 6  # killed: nothing committed


def test_a_maintenance_run_left_started_by_a_crash_is_failed_by_dead_run_sensor_and_rollback_never_waits(
    local: LocalDagster,
) -> None:
    # Given a compaction stuck in its step (frozen), holding the maintenance queue place and pool slot
    first_snapshot = local.plays().snapshots()[0]
    daemon = local.start_daemon()
    try:
        compaction, _ = _compaction_holding_the_pool(local)
        expiry = local.launch("expiry_job")
        rollback = local.launch("rollback_job", {"ops": {"rollback_table": {"config": {
            "table": "music.plays", "to_snapshot_id": first_snapshot.snapshot_id}}}})  # fmt: skip
        expiry, rollback = local.queued(expiry), local.queued(rollback)

        # When a user rolls back meanwhile, rollback_job runs at once while maintenance waits its turn
        local.wait_for("rollback_job finishing", lambda: local.status(rollback) in FINISHED, 120)
        assert local.status(rollback) == dg.DagsterRunStatus.SUCCESS
        assert (local.status(compaction), local.status(expiry)) == (
            dg.DagsterRunStatus.STARTED,
            dg.DagsterRunStatus.QUEUED,
        )
        assert local.slot_holders() == [compaction]

        # And the whole daemon dies with -9 (a crash, a restart, the OOM killer): nobody sees the worker go
        os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(30)
        time.sleep(2)
        assert local.status(compaction) == dg.DagsterRunStatus.STARTED and local.slot_holders() == [compaction]

        # Then the next daemon's dead_run_sensor fails it, saying why, and the queued expiry completes
        daemon = local.start_daemon()
        _expiry_completes_after(local, compaction, expiry)
    finally:
        _stop(daemon)
    [failure] = local.instance.all_logs(compaction, of_type=DagsterEventType.RUN_FAILURE)
    assert failure.dagster_event.message == WORKER_GONE.format(pid=local.worker_pid(compaction))
    assert local.plays().current_snapshot().snapshot_id == first_snapshot.snapshot_id  # the rollback stands
