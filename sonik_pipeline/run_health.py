"""Run health: a run whose worker process is gone is marked failed, so its pool slot and queue place are freed.

Dagster's run monitoring fails such a run only when the run launcher can health-check its workers
(K8sRunLauncher, DockerRunLauncher). DefaultRunLauncher, which starts runs as local processes, cannot.
While the code server that launched a run lives, it notices its worker die and marks the run failed
(run monitoring's ``free_slots_after_run_end_seconds`` then frees its slots). When that code server is
gone too (the daemon or ``dagster dev`` killed or restarted, the host or container restarted, the OOM
killer) nobody notices: the run stays STARTED, holds its ``iceberg_maintenance`` slot and its
``sonik/maintenance`` queue place, and every later maintenance run waits forever. ``dead_run_sensor``
closes that gap from the daemon.

Two Dagster internals are read here only: the ``.dagster/grpc_info`` tag DefaultRunLauncher puts on the
runs it starts, and the failure reason types. test_run_health_daemon, on runs the real launcher started,
fails if an upgrade changes either.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.storage.tags import GRPC_INFO_TAG

CHECK_INTERVAL_SECONDS = 30
# DefaultRunLauncher starts runs on the code server's host; the daemon's own code servers say "localhost".
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# The worker reports its pid as its first engine event; a process at that pid that started later is another
# process (the pid was reused, typically after a reboot). The margin absorbs clock steps: missing a dead
# worker whose pid was reused within a minute leaves a run stuck, which is safer than failing a live one.
PID_REUSE_MARGIN_SECONDS = 60.0
# The worker's pid event comes right after RUN_STARTING; a few engine events are plenty to find it.
ENGINE_EVENTS_TO_SCAN = 10
WORKER_GONE = (
    "run worker process {pid} is gone (killed or out of memory); marked failed by dead_run_sensor "
    "so its pool slots and queue place are freed"
)


@dataclass(frozen=True)
class RunWorker:
    """A launched run's worker process, as the worker reported itself when it started."""

    run_id: str
    pid: int
    reported_at: float  # epoch seconds of its "Started process for run (pid: N)" event


@dataclass(frozen=True)
class RunHealth:
    """What one check saw: the launcher, the local workers it checked, and the runs whose worker is gone."""

    launcher: str
    checked: tuple[RunWorker, ...] = ()
    dead: tuple[tuple[dg.DagsterRun, RunWorker], ...] = ()

    def summary(self) -> str:
        if self.launcher != dg.DefaultRunLauncher.__name__:
            return f"runs are launched by {self.launcher}, whose workers Dagster's run monitoring health-checks"
        if not self.checked:
            return "no started run with a local run worker"
        failed = ", ".join(f"{run.run_id} (pid {worker.pid})" for run, worker in self.dead)
        alive = len(self.checked) - len(self.dead)
        return f"started runs checked: {len(self.checked)}, workers alive: {alive}" + (
            f"; marked failed: {failed}" if failed else ""
        )


def process_started_at(pid: int) -> float | None:
    """When the live process ``pid`` started (epoch seconds); None when there is none or only a zombie.

    Elsewhere than Linux the start time is unknown: an existing process counts as started at -inf, so a
    reused pid looks alive and the run is left alone.
    """
    if sys.platform.startswith("linux"):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            boot = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        except (FileNotFoundError, ProcessLookupError):
            return None
        fields = stat.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 (state) onwards
        if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
            return None
        return int(boot.split()[1]) + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start, in ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # another user's process: it exists
    return -math.inf


def worker_is_gone(worker: RunWorker, started_at: Callable[[int], float | None] = process_started_at) -> bool:
    """No process has the worker's pid, or the one that has it started after the worker reported."""
    started = started_at(worker.pid)
    return started is None or started > worker.reported_at + PID_REUSE_MARGIN_SECONDS


def local_run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunWorker | None:
    """The worker of a run DefaultRunLauncher started on this host, from the worker's own first engine event.

    None for a run launched elsewhere or not launched at all (``dagster job execute`` in a terminal):
    its pid, if any, is not one this host can judge.
    """
    grpc_info = run.tags.get(GRPC_INFO_TAG)
    if not grpc_info or json.loads(grpc_info).get("host") not in LOCAL_HOSTS:
        return None
    records = instance.event_log_storage.get_records_for_run(
        run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT, limit=ENGINE_EVENTS_TO_SCAN
    ).records
    for record in records:
        entry = record.event_log_entry
        pid = entry.dagster_event.engine_event_data.metadata.get("pid") if entry.dagster_event else None
        if pid is not None:
            return RunWorker(run.run_id, int(pid.value), entry.timestamp)
    return None


def find_dead_runs(
    instance: dg.DagsterInstance, started_at: Callable[[int], float | None] = process_started_at
) -> RunHealth:
    """The STARTED runs whose local run worker is gone; reads the instance and changes nothing."""
    launcher = instance.run_launcher
    if not isinstance(launcher, dg.DefaultRunLauncher):
        return RunHealth(type(launcher).__name__)
    checked, dead = [], []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        worker = local_run_worker(instance, run)
        if worker is None:
            continue
        checked.append(worker)
        if not worker_is_gone(worker, started_at):
            continue
        # Read the status again after the pid check: a run that just finished had a worker that just exited.
        latest = instance.get_run_by_id(run.run_id)
        if latest is not None and latest.status == dg.DagsterRunStatus.STARTED:
            dead.append((latest, worker))
    return RunHealth(type(launcher).__name__, tuple(checked), tuple(dead))


def fail_dead_run(instance: dg.DagsterInstance, run: dg.DagsterRun, worker: RunWorker) -> None:
    """Mark the run failed, saying why in its log, and free its op concurrency slots now."""
    instance.report_run_failed(
        run,
        message=WORKER_GONE.format(pid=worker.pid),
        job_failure_data=JobFailureData(error=None, failure_reason=RunFailureReason.UNEXPECTED_TERMINATION),
    )
    # Failing a run frees its queue place but not its op slots (run monitoring would, a while later).
    if instance.event_log_storage.supports_global_concurrency_limits:
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)


@dg.sensor(
    name="dead_run_sensor",
    minimum_interval_seconds=CHECK_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=(
        "Marks failed a started run whose local run worker process is gone (killed, out of memory, a restart), "
        "freeing its pool slots and queue place, which DefaultRunLauncher's run monitoring cannot notice."
    ),
)
def dead_run_sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
    health = find_dead_runs(context.instance)
    for run, worker in health.dead:
        fail_dead_run(context.instance, run, worker)
        context.log.warning(f"run {run.run_id} ({run.job_name}): " + WORKER_GONE.format(pid=worker.pid))
    return dg.SkipReason(health.summary())
