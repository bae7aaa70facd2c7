"""The maintenance jobs' executor: Dagster's in-process executor, which first waits for the pool slot itself.

Maintenance ops share the ``iceberg_maintenance`` pool (one at a time). A step that cannot claim the slot
is left by Dagster 1.13's executor in a loop that never sleeps (``interval_to_next_pending_claim_check``
returns at most 0: a core at 100%), that says only every five minutes that it is blocked, and that a
terminal's Ctrl-C or SIGTERM does not reach. Worse, a holder killed with -9 under ``dagster job execute``
(no run worker, so ``dead_run_sensor`` had nothing to judge) kept the slot for ever.

So before the steps run, ``wait_for_pool`` looks at who holds the slot: a finished run's slot is freed,
a started run whose process on this host is gone is failed and its slot freed (``run_health``), and an
alive holder is named with its job and since when, once a minute, while this run sleeps between checks
(Ctrl-C and SIGTERM end it at once). Only when a slot is free does Dagster's own executor claim it and run the steps.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import dagster as dg

from sonik_pipeline.dagster_internals import raise_execution_interrupts
from sonik_pipeline.run_health import HOST_TAG, pool_holders, release_dead_holders

CHECK_SECONDS = 5.0
REPORT_SECONDS = 60.0


def wait_for_pool(
    instance: dg.DagsterInstance,
    pool: str,
    run_id: str,
    log: Callable[[str], None],
    check_seconds: float = CHECK_SECONDS,
    report_seconds: float = REPORT_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Return once a slot of ``pool`` is free for ``run_id``, freeing dead holders' slots; the checks it took."""
    last_report: float | None = None
    checks = 0
    while True:
        checks += 1
        info = instance.event_log_storage.get_concurrency_info(pool)
        if info.limit is None:  # no limit on this pool: nothing to wait for
            return checks
        released, alive = release_dead_holders(instance, pool_holders(instance, info, run_id))
        now = time.time()
        for holder in released:
            log(f"freed the {pool} slot held by {holder.describe(now)}: that run can no longer run")
        if len(alive) < info.limit:
            return checks
        if last_report is None or time.monotonic() - last_report >= report_seconds:
            last_report = time.monotonic()
            log(
                f"waiting for the {pool} slot ({info.limit} at a time), held by "
                + "; ".join(holder.describe(now) for holder in alive)
            )
        sleep(check_seconds)


class PoolWaitingExecutor(dg.Executor):
    """An executor that waits for ``pool`` (see ``wait_for_pool``) and then hands the plan to ``inner``."""

    def __init__(self, inner: dg.Executor, pool: str):
        self._inner = inner
        self._pool = pool

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan) -> Iterator:
        instance, run_id = plan_context.instance, plan_context.run_id
        # Its host, so that a killed process of this run is judged only where its pid means something.
        instance.add_run_tags(run_id, {HOST_TAG: socket.gethostname()})
        # Dagster holds back SIGINT/SIGTERM while a run executes and raises them only where it allows them,
        # as its own executors do around their steps; so does the wait.
        with raise_execution_interrupts():
            wait_for_pool(instance, self._pool, run_id, plan_context.log.info)
        yield from self._inner.execute(plan_context, execution_plan)


def pool_waiting_executor(pool: str) -> dg.ExecutorDefinition:
    """Dagster's in-process executor (same config) behind ``wait_for_pool`` for ``pool``."""

    @dg.executor(name="in_process_waiting_for_pool", config_schema=dg.in_process_executor.config_schema)
    def _executor(init_context: dg.InitExecutorContext) -> dg.Executor:
        return PoolWaitingExecutor(dg.in_process_executor.executor_creation_fn(init_context), pool)

    return _executor
