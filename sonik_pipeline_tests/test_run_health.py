"""Run health: run monitoring in the shipped instances, and dead_run_sensor judging real run records."""

import json
import logging
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import dagster as dg
import pytest
from dagster import DagsterEvent, DagsterEventType
from dagster._core.events import EngineEventData  # the pid event a worker reports; only Dagster makes one

from sonik_pipeline.dagster_internals import GRPC_INFO_TAG
from sonik_pipeline.jobs import MAINTENANCE_POOL
from sonik_pipeline.run_health import dead_run_sensor, find_dead_runs, process_started_at
from sonik_pipeline_tests.conftest import POSTGRES_SKIP_REASON, private_postgres_database

REPO = Path(__file__).resolve().parents[1]

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the pid start time comes from /proc")


@dg.op
def _work() -> None:
    pass


@dg.job
def maintenance_like_job() -> None:
    _work()


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


def _launched_run(instance: dg.DagsterInstance, pid: int, reported_at: float | None = None, **tags) -> dg.DagsterRun:
    """A STARTED run as DefaultRunLauncher leaves it: the grpc tag, then the worker's "Started process" event."""
    run = instance.create_run_for_job(
        maintenance_like_job, tags={GRPC_INFO_TAG: json.dumps({"host": "localhost", "socket": "/x"}), **tags}
    )
    worker_started = DagsterEvent(
        event_type_value=DagsterEventType.ENGINE_EVENT.value,
        job_name=run.job_name,
        message=f"Started process for run (pid: {pid}).",
        event_specific_data=EngineEventData.in_process(pid),
    )
    instance.handle_new_event(
        dg.EventLogEntry(
            error_info=None,
            level=logging.DEBUG,
            user_message=worker_started.message,
            run_id=run.run_id,
            timestamp=reported_at or time.time(),
            dagster_event=worker_started,
        )
    )
    started = DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=run.job_name)
    instance.report_dagster_event(started, run_id=run.run_id)
    assert instance.get_run_by_id(run.run_id).status == dg.DagsterRunStatus.STARTED
    return run


def _exited_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _dead_ids(instance: dg.DagsterInstance, **kwargs) -> list[str]:
    return [run.run_id for run, _ in find_dead_runs(instance, **kwargs).dead]


def test_a_run_whose_worker_is_alive_is_left_alone() -> None:
    instance = dg.DagsterInstance.get()
    _launched_run(instance, os.getpid())  # this test process: alive, started before it reported

    health = find_dead_runs(instance)

    assert len(health.checked) == 1 and health.dead == ()
    assert health.summary() == "started runs checked: 1, workers alive: 1"


def test_a_run_whose_worker_exited_is_dead() -> None:
    instance = dg.DagsterInstance.get()
    alive = _launched_run(instance, os.getpid())
    dead = _launched_run(instance, _exited_pid())

    assert _dead_ids(instance) == [dead.run_id]
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED  # deciding changes nothing


@LINUX
def test_a_pid_reused_by_a_later_process_is_a_dead_worker() -> None:
    instance = dg.DagsterInstance.get()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        # The worker reported this pid an hour ago (before a reboot, say); the process holding it started now.
        run = _launched_run(instance, other.pid, reported_at=time.time() - 3600)
        assert _dead_ids(instance) == [run.run_id]
    finally:
        other.kill()
        other.wait()


def test_a_run_that_finishes_during_the_check_is_not_failed() -> None:
    instance = dg.DagsterInstance.get()
    run = _launched_run(instance, _exited_pid())

    def worker_exits_after_finishing(pid: int) -> float | None:
        success = DagsterEvent(event_type_value=DagsterEventType.RUN_SUCCESS.value, job_name=run.job_name)
        instance.report_dagster_event(success, run_id=run.run_id)
        return process_started_at(pid)

    health = find_dead_runs(instance, started_at=worker_exits_after_finishing)

    assert len(health.checked) == 1 and health.dead == ()


def test_runs_not_launched_on_this_host_are_not_judged() -> None:
    instance = dg.DagsterInstance.get()
    gone = _exited_pid()
    # A run executed in a terminal (no launcher), and one a code server on another host launched.
    in_terminal = instance.create_run_for_job(maintenance_like_job)
    instance.report_dagster_event(
        DagsterEvent(event_type_value=DagsterEventType.RUN_START.value, job_name=in_terminal.job_name),
        run_id=in_terminal.run_id,
    )
    _launched_run(instance, gone, **{GRPC_INFO_TAG: json.dumps({"host": "code.internal", "port": 4000})})

    health = find_dead_runs(instance)

    assert health.checked == () and health.dead == ()


def test_runs_of_other_launchers_are_left_to_dagsters_run_monitoring(tmp_path: Path) -> None:
    (tmp_path / "dagster.yaml").write_text(
        "run_launcher:\n"
        "  module: dagster._core.launcher.sync_in_memory_run_launcher\n"
        "  class: SyncInMemoryRunLauncher\n"
        "telemetry:\n  enabled: false\n"
    )
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        _launched_run(instance, _exited_pid())

        health = find_dead_runs(instance)

    assert health.dead == () and health.checked == ()
    assert health.summary().startswith("runs are launched by SyncInMemoryRunLauncher")


@LINUX
def test_process_start_times_come_from_proc_and_zombies_count_as_gone() -> None:
    before = time.time()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = process_started_at(child.pid)
        assert started is not None and before - 2 <= started <= time.time() + 1  # /proc's boot time is whole seconds
        child.kill()
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the killed child never became a zombie"
            time.sleep(0.05)
        assert process_started_at(child.pid) is None  # killed, not yet reaped: still in /proc, but gone
    finally:
        child.kill()
        child.wait()
    assert process_started_at(child.pid) is None


def test_the_sensor_fails_a_dead_run_says_why_and_frees_its_pool_slot() -> None:
    # Given a started maintenance run holding the pool's only slot, whose worker was killed
    instance = dg.DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots(MAINTENANCE_POOL, 1)
    alive = _launched_run(instance, os.getpid())
    dead = _launched_run(instance, pid := _exited_pid())
    instance.event_log_storage.claim_concurrency_slot(MAINTENANCE_POOL, dead.run_id, "compact_tables")
    assert [s.run_id for s in instance.event_log_storage.get_concurrency_info(MAINTENANCE_POOL).claimed_slots] == [
        dead.run_id
    ]

    # When the sensor ticks
    skip = dead_run_sensor(dg.build_sensor_context(instance=instance))

    # Then that run failed, its log says why, the slot is free, and the live run is untouched
    assert instance.get_run_by_id(dead.run_id).status == dg.DagsterRunStatus.FAILURE
    [failure] = instance.all_logs(dead.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert failure.dagster_event.message == (
        f"run worker process {pid} is gone (killed or out of memory); marked failed by dead_run_sensor "
        "so its pool slots and queue place are freed"
    )
    assert instance.event_log_storage.get_concurrency_info(MAINTENANCE_POOL).claimed_slots == []
    assert instance.get_run_by_id(alive.run_id).status == dg.DagsterRunStatus.STARTED
    assert skip.skip_message == f"started runs checked: 2, workers alive: 1; marked failed: {dead.run_id} (pid {pid})"

    # And a second tick finds nothing more to do
    again = dead_run_sensor(dg.build_sensor_context(instance=instance))
    assert again.skip_message == "started runs checked: 1, workers alive: 1"
