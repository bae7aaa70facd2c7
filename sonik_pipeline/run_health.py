"""Run health: a run whose worker process is gone is marked failed, so its pool slot and queue place are freed.

Dagster's run monitoring fails such a run only when the run launcher can health-check its workers
(K8sRunLauncher, DockerRunLauncher). DefaultRunLauncher, which starts runs as local processes, cannot.
While the code server that launched a run lives, it notices its worker die and marks the run failed
(run monitoring's ``free_slots_after_run_end_seconds`` then frees its slots). When that code server is
gone too (the daemon or ``dagster dev`` killed or restarted, the host or container restarted, the OOM
killer) nobody notices: the run stays STARTED, holds its ``iceberg_maintenance`` slot and its
``sonik/maintenance`` queue place, and every later maintenance run waits forever. ``dead_run_sensor``
closes that gap from the daemon.

Dagster internals read here (``dagster_internals``): the ``.dagster/grpc_info`` tag DefaultRunLauncher puts on
the runs it starts, the run storage classes that are local, and the failure reason types.
test_dagster_internals pins the names; test_run_health_daemon, on runs the real launcher started, fails if
an upgrade changes what they mean.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from sonik_pipeline.dagster_internals import (
    GRPC_INFO_TAG,
    ConcurrencyKeyInfo,
    InMemoryRunStorage,
    JobFailureData,
    RunFailureReason,
    SqliteRunStorage,
)

CHECK_INTERVAL_SECONDS = 30
# The host a run executed in a terminal runs on (set by the maintenance executor): its pid is judged only there.
HOST_TAG = "sonik/host"
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
        if self.launcher != dg.DefaultRunLauncher.__name__ and not self.checked:
            return (
                f"runs are launched by {self.launcher}, whose workers Dagster's run monitoring health-checks; "
                "no started run executed in a terminal on this host"
            )
        if not self.checked:
            return "no started run with a local process"
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


def _storage_is_local(instance: dg.DagsterInstance) -> bool:
    """Run storage in files of this machine (DAGSTER_HOME's SQLite) or in memory: its runs ran here."""
    return isinstance(instance.run_storage, SqliteRunStorage | InMemoryRunStorage)


def runs_on_this_host(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether the run's process is on this host, so its pid can be judged here.

    A launched run: its launcher's code server said "localhost". A run executed where it was created
    (``dagster job execute``, ``dagster asset materialize``): the host the maintenance executor tagged
    it with, or, untagged, this host when the run storage is local files (the default instance).
    """
    if grpc_info := run.tags.get(GRPC_INFO_TAG):
        return json.loads(grpc_info).get("host") in LOCAL_HOSTS
    if host := run.tags.get(HOST_TAG):
        return host == socket.gethostname()
    return _storage_is_local(instance)


def local_run_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> RunWorker | None:
    """The process of a run on this host, from the first engine event that reports a pid.

    That is the run worker's "Started process for run" for a launched run, and "Executing steps in
    process" for one executed in a terminal. None for a run elsewhere or one that reported no pid.
    """
    if not runs_on_this_host(instance, run):
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
    judges_launched = isinstance(launcher, dg.DefaultRunLauncher)  # others are health-checked by Dagster
    checked, dead = [], []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
        if GRPC_INFO_TAG in run.tags and not judges_launched:
            continue
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


@dataclass(frozen=True)
class SlotHolder:
    """A run holding a slot of a pool, with when it started and, on this host, its process."""

    run: dg.DagsterRun
    started_at: float | None
    worker: RunWorker | None

    def describe(self, now: float) -> str:
        where = f", pid {self.worker.pid} on this host" if self.worker else ""
        when = "since an unknown time"
        if self.started_at is not None:
            started = dt.datetime.fromtimestamp(self.started_at, dt.UTC)
            when = f"since {started:%Y-%m-%d %H:%M:%S} UTC ({(now - self.started_at) / 60:.0f} min)"
        return f"run {self.run.run_id} ({self.run.job_name}, {self.run.status.value}{where}) {when}"


def pool_holders(instance: dg.DagsterInstance, info: ConcurrencyKeyInfo, except_run_id: str) -> list[SlotHolder]:
    """The other runs holding slots of the pool ``info`` describes, each once."""
    holders = []
    for run_id in dict.fromkeys(slot.run_id for slot in info.claimed_slots if slot.run_id != except_run_id):
        record = instance.get_run_record_by_id(run_id)
        if record is None:  # a deleted run's slot: nobody can free it but us
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
            continue
        run = record.dagster_run
        holders.append(SlotHolder(run, record.start_time, local_run_worker(instance, run)))
    return holders


def release_dead_holders(
    instance: dg.DagsterInstance,
    holders: list[SlotHolder],
    started_at: Callable[[int], float | None] = process_started_at,
) -> tuple[list[SlotHolder], list[SlotHolder]]:
    """(released, alive): a finished run's slots are freed; a started run whose local process is gone is failed
    (as ``dead_run_sensor`` fails it) and its slots freed; every other holder is alive, as far as can be told."""
    released, alive = [], []
    for holder in holders:
        run = holder.run
        if run.is_finished:
            instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
            released.append(holder)
        elif run.status == dg.DagsterRunStatus.STARTED and holder.worker and worker_is_gone(holder.worker, started_at):
            fail_dead_run(instance, run, holder.worker)
            released.append(holder)
        else:
            alive.append(holder)
    return released, alive


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
