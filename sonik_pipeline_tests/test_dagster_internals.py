"""The contract with Dagster's internals (sonik_pipeline/dagster_internals.py): fast, in-process, fails by name.

An upgrade that moves or renames a private name fails the import of this module, naming it; one that changes
what a name is or does fails the test for it here, rather than a sensor tick or a maintenance run later.
test_run_health_daemon checks the same internals against runs the real launcher started.
"""

import os
import signal
import time

import dagster as dg
import pytest

from sonik_pipeline import dagster_internals as internals


def test_every_internal_name_is_there() -> None:
    assert [name for name in internals.__all__ if getattr(internals, name, None) is None] == []


def test_a_dead_worker_can_be_reported_with_run_monitorings_own_reason() -> None:
    data = internals.JobFailureData(error=None, failure_reason=internals.RunFailureReason.UNEXPECTED_TERMINATION)

    assert data.failure_reason is internals.RunFailureReason.UNEXPECTED_TERMINATION


def test_the_local_run_storages_are_the_ones_dagster_uses_on_this_machine() -> None:
    # The test's DAGSTER_HOME has no dagster.yaml: run storage is SQLite files there; an ephemeral one is in memory
    assert isinstance(dg.DagsterInstance.get().run_storage, internals.SqliteRunStorage)
    with dg.DagsterInstance.ephemeral() as ephemeral:
        assert isinstance(ephemeral.run_storage, internals.InMemoryRunStorage)


def test_a_pools_concurrency_info_is_a_concurrency_key_info_with_its_limit_and_claimed_slots() -> None:
    instance = dg.DagsterInstance.get()
    instance.event_log_storage.set_concurrency_slots("contract_pool", 1)
    instance.event_log_storage.claim_concurrency_slot("contract_pool", "a-run", "a-step")

    info = instance.event_log_storage.get_concurrency_info("contract_pool")

    assert isinstance(info, internals.ConcurrencyKeyInfo)
    assert info.limit == 1 and [slot.run_id for slot in info.claimed_slots] == ["a-run"]


def test_the_launchers_host_tag_is_a_dagster_system_tag() -> None:
    assert internals.GRPC_INFO_TAG == ".dagster/grpc_info"  # what run_health looks for on launched runs


def test_an_interrupt_is_raised_at_once_where_the_executor_waits() -> None:
    # Ctrl-C during the wait for the pool: the wait ends with the error Dagster ends an interrupted run with
    with pytest.raises(dg.DagsterExecutionInterruptedError), internals.raise_execution_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # the handler raises as soon as the signal lands


def test_the_freshness_wrapper_still_finds_dagsters_evaluation() -> None:
    # plays_freshness delegates to the function Dagster's factory decorates; an upgrade that moves it fails here.
    [check] = dg.build_time_partition_freshness_checks(assets=["plays"], deadline_cron="0 6 * * *")
    assert callable(internals.decorated_check_fn(check))
