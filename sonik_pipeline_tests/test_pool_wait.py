"""A maintenance run started with `dagster job execute` and killed with -9 blocks nothing: the next one frees its
slot; while an alive run holds the slot, the next one names it, sleeps, and stops on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterEvent, DagsterEventType
from dagster._core.events import EngineEventData  # the pid event a worker reports; only Dagster makes one

from sonik_pipeline.jobs import MAINTENANCE_POOL
from sonik_pipeline.maintenance_executor import wait_for_pool
from sonik_pipeline.run_health import HOST_TAG, WORKER_GONE, find_dead_runs
from sonik_pipeline_tests.test_run_health import maintenance_like_job

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Holds the SQLite catalog's lock, so a maintenance run that opens the catalog stays in its op (holding the slot).
HOLD_THE_CATALOG = """
import sqlite3, sys, time
lock = sqlite3.connect(sys.argv[1], isolation_level=None)
lock.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def terminal(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's terminal: the shipped instance config in a fresh DAGSTER_HOME, a fresh lakehouse."""
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((REPO / "dagster_home" / "dagster.yaml").read_text())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONIK_", "PYICEBERG_"))}
    env.update(DAGSTER_HOME=str(home), SONIK_HOME=str(tmp_path / "lakehouse"), HOME=str(tmp_path))
    subprocess.run([str(BIN / "sonik"), "tables"], env=env, check=True, capture_output=True)  # creates catalog.db
    return env


def _hold_catalog(env: dict[str, str], seconds: float) -> subprocess.Popen:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_CATALOG, str(Path(env["SONIK_HOME"]) / "catalog.db"), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _execute(env: dict[str, str], job: str, log: Path) -> subprocess.Popen:
    with log.open("w") as out:  # the child has its own copy of the descriptor
        return subprocess.Popen(
            [str(BIN / "dagster"), "job", "execute", "-m", "sonik_pipeline.definitions", "-j", job],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen) -> None:
    process.kill()
    process.wait()
    if process.stdout:
        process.stdout.close()


def _runs(env: dict[str, str]) -> dict[str, dg.DagsterRun]:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return {run.job_name: run for run in instance.get_runs()}


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def _holds_the_slot(env: dict[str, str]) -> bool:
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        return bool(instance.event_log_storage.get_concurrency_info(MAINTENANCE_POOL).claimed_slots)


def _orphans_job_holding_the_slot(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen, subprocess.Popen]:
    """(the catalog's lock holder, orphans_job executed in a terminal), once the job's op holds the slot."""
    holder = _hold_catalog(env, 120)
    first = _execute(env, "orphans_job", tmp_path / "first.log")
    _wait_until(lambda: _holds_the_slot(env))
    return holder, first


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "spark"])  # the wait is the executor's, before any engine is asked
def test_a_killed_dagster_job_execute_run_lets_the_next_maintenance_run_through(
    terminal: dict[str, str], tmp_path: Path, engine: str
) -> None:
    # Given orphans_job started in a terminal, in its op (holding the slot), killed with -9
    holder, first = _orphans_job_holding_the_slot(terminal, tmp_path)
    try:
        first.kill()
        first.wait()
    finally:
        _stop(holder)

    # When the next maintenance job is started the same way
    second = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "sonik_pipeline.definitions", "-j", "expiry_job"],
        env={**terminal, "SONIK_ENGINE": engine},
        capture_output=True,
        text=True,
        timeout=180,
    )

    # Then it frees the dead run's slot, saying whose, and completes; the dead run is failed, saying why
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    runs = _runs(terminal)
    dead = runs["orphans_job"]
    assert f"freed the {MAINTENANCE_POOL} slot held by run {dead.run_id} (orphans_job, STARTED, pid {first.pid}" in (
        second.stdout + second.stderr
    )
    assert dead.status == dg.DagsterRunStatus.FAILURE
    assert runs["expiry_job"].status == dg.DagsterRunStatus.SUCCESS
    assert dead.tags[HOST_TAG]
    with dg.DagsterInstance.from_config(terminal["DAGSTER_HOME"]) as instance:
        [failure] = instance.get_records_for_run(dead.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert failure.event_log_entry.dagster_event.message == WORKER_GONE.format(pid=first.pid)


@pytest.mark.slow
def test_a_run_waiting_on_an_alive_holder_names_it_sleeps_and_stops_on_sigterm(
    terminal: dict[str, str], tmp_path: Path
) -> None:
    # Given orphans_job alive in its op, holding the slot
    holder, first = _orphans_job_holding_the_slot(terminal, tmp_path)
    try:
        # When expiry_job is started and waits
        second = _execute(terminal, "expiry_job", tmp_path / "second.log")
        _wait_until(lambda: "waiting for the" in (tmp_path / "second.log").read_text())
        cpu_before = _cpu_seconds(second.pid)
        time.sleep(5)
        cpu_waiting = _cpu_seconds(second.pid) - cpu_before

        # Then it names the holder, sleeps rather than spins, and SIGTERM ends it at once
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=20)
        log = (tmp_path / "second.log").read_text()
        holding = _runs(terminal)["orphans_job"]
        assert (
            f"waiting for the {MAINTENANCE_POOL} slot (1 at a time), held by run {holding.run_id} "
            f"(orphans_job, STARTED, pid {first.pid} on this host) since " in log
        )
        assert cpu_waiting < 1.0  # of 5 s: Dagster's own wait would spin a core
        assert _runs(terminal)["expiry_job"].status == dg.DagsterRunStatus.FAILURE
        assert holding.status == dg.DagsterRunStatus.STARTED  # the alive holder is left alone
    finally:
        _stop(first)
        _stop(holder)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _in_terminal_run(instance: dg.DagsterInstance, pid: int, **tags: str) -> dg.DagsterRun:
    """A STARTED run as `dagster job execute` leaves it: no launcher tag, an "Executing steps in process" event."""
    run = instance.create_run_for_job(maintenance_like_job, tags=tags)
    for event in (
        DagsterEvent(
            event_type_value=DagsterEventType.ENGINE_EVENT.value,
            job_name=run.job_name,
            message=f"Executing steps in process (pid: {pid})",
            event_specific_data=EngineEventData.in_process(pid),
        ),
        DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name),
    ):
        instance.report_dagster_event(event, run_id=run.run_id)
    return run


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_terminal_run_on_local_storage_is_judged_by_its_pid_and_one_tagged_elsewhere_is_not() -> None:
    instance = dg.DagsterInstance.get()
    alive = _in_terminal_run(instance, os.getpid())
    dead = _in_terminal_run(instance, _exited_pid())
    elsewhere = _in_terminal_run(instance, _exited_pid(), **{HOST_TAG: "another-host.internal"})

    health = find_dead_runs(instance)

    assert {w.run_id for w in health.checked} == {alive.run_id, dead.run_id}
    assert [run.run_id for run, _ in health.dead] == [dead.run_id]
    assert elsewhere.run_id not in {w.run_id for w in health.checked}


def test_wait_for_pool_returns_at_once_when_the_slot_is_free_and_frees_a_finished_runs_slot() -> None:
    instance = dg.DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots(MAINTENANCE_POOL, 1)
    finished = _in_terminal_run(instance, os.getpid())
    instance.event_log_storage.claim_concurrency_slot(MAINTENANCE_POOL, finished.run_id, "step")
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=finished.job_name),
        run_id=finished.run_id,
    )
    said: list[str] = []

    checks = wait_for_pool(instance, MAINTENANCE_POOL, "this-run", said.append, sleep=pytest.fail)

    assert checks == 1
    assert said and said[0].startswith(f"freed the {MAINTENANCE_POOL} slot held by run {finished.run_id}")
    assert instance.event_log_storage.get_concurrency_info(MAINTENANCE_POOL).claimed_slots == []
