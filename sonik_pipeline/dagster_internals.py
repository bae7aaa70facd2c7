"""Every use of Dagster's private API, in one place, each with why and what would replace it.

Dagster 1.13 lacks a few things this project needs; each is taken from a private module here (or, for
one, an export Dagster does not document), and ``sonik_pipeline_tests/test_dagster_internals.py`` pins
every name and hook, so an upgrade that renames or moves one fails that test by name instead of failing
a run, or a sensor tick, later.

- ``GRPC_INFO_TAG`` (``dagster._core.storage.tags``): the tag DefaultRunLauncher puts on the runs it
  launches, naming the code server's host. ``run_health`` reads it to know a run's worker is a process of
  this host, whose pid can be judged here. Replaced by a launcher that health-checks its own workers, as
  K8sRunLauncher and DockerRunLauncher do (run monitoring then fails the run without us).
- ``JobFailureData`` and ``RunFailureReason`` (``dagster._core.events``): ``dead_run_sensor`` fails a run
  whose worker is gone with the reason Dagster's own run monitoring gives (``UNEXPECTED_TERMINATION``),
  so run retries and the UI treat it as Dagster would. Replaced by the same, done by run monitoring.
- ``SqliteRunStorage`` and ``InMemoryRunStorage`` (``dagster._core.storage.runs``): a run executed in a
  terminal carries no launcher's host tag; when run storage is this machine's files or memory, its runs
  ran here. Replaced by a public way to ask where runs are stored (or by every run carrying its host).
- ``ConcurrencyKeyInfo`` (``dagster._utils.concurrency``): the type of what
  ``event_log_storage.get_concurrency_info`` returns (a pool's limit and the slots claimed), a type hint
  only. Replaced by a public export of the type.
- ``raise_execution_interrupts``: exported by ``dagster`` but not documented. Dagster holds back SIGINT
  and SIGTERM while a run executes and raises them only inside this context, as its own executors do
  around their steps; ``maintenance_executor`` waits for its pool inside it, so Ctrl-C ends the wait.
  Replaced by the executor not needing to wait (an executor that sleeps while a pool is full).
- ``decorated_check_fn``: the function ``build_time_partition_freshness_checks`` decorates (Dagster's own
  freshness evaluation), reached through ``op.compute_fn.decorated_fn``. ``plays_freshness`` wraps it so
  that it judges freshness only in runs of the check alone, not in runs that materialize old days (see
  ``assets/checks.py``). Replaced by a freshness check that Dagster leaves out of such runs, or by a
  ``FreshnessPolicy`` that judges a daily partition that never arrived.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
from dagster import raise_execution_interrupts
from dagster._core.events import JobFailureData, RunFailureReason
from dagster._core.storage.runs import InMemoryRunStorage, SqliteRunStorage
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._utils.concurrency import ConcurrencyKeyInfo

__all__ = [
    "GRPC_INFO_TAG",
    "ConcurrencyKeyInfo",
    "InMemoryRunStorage",
    "JobFailureData",
    "RunFailureReason",
    "SqliteRunStorage",
    "decorated_check_fn",
    "raise_execution_interrupts",
]


def decorated_check_fn(check: dg.AssetChecksDefinition) -> Callable:
    """The function a Dagster-built check decorates: its evaluation, to call from a check of our own."""
    return check.op.compute_fn.decorated_fn
