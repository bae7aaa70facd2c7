import datetime as dt
import hashlib
import socket
import threading
from pathlib import Path

import dagster as dg
from pyiceberg.catalog import Catalog

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.jobs import MAINTENANCE_JOBS, MAINTENANCE_POOL, MAINTENANCE_TAG, rollback_job
from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table, lakehouse_table_names
from sonik_pipeline.lakehouse.tables.writes import replace_partition, stage_files
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import copied_lakehouse, op_output_metadata

DAY = dt.date(2026, 4, 20)
NO_ORPHAN_WINDOW = {"older_than_hours": 0, "i_know_no_writer_is_running": True}  # tests own the lakehouse


def _micro_batches(catalog: Catalog, batches: int):
    table, _ = ensure_table(catalog, PLAYS)
    for i in range(batches):
        table.append(synthetic_batch(DAY, 100, batch=i).cast(table.schema().as_arrow()))
    return catalog.load_table("music.plays")


def test_compaction_job_compacts_every_table_and_reports(defs: dg.Definitions, catalog: Catalog) -> None:
    _micro_batches(catalog, 12)
    job = defs.resolve_job_def("compaction_job")

    result = job.execute_in_process(
        run_config={"ops": {"compact_tables": {"config": {"skip_recent_days": 0}}}}, instance=dg.DagsterInstance.get()
    )

    assert result.success
    meta = op_output_metadata(result, "compact_tables")
    assert (meta["files_before"].value, meta["files_after"].value, meta["partitions_rewritten"].value) == (12, 1, 1)
    assert meta["tables"].value["music.plays"]["partitions"] == ["played_day=2026-04-20"]
    assert len(list(catalog.load_table("music.plays").scan().plan_files())) == 1
    assert job.tags[MAINTENANCE_TAG] == "compaction"


def _scheduled_at(when: dt.datetime) -> dict[str, str]:
    """The tag a schedule puts on its runs: the ops read the clock from it (tests fix it this way)."""
    return {"dagster/scheduled_execution_time": when.isoformat()}


def test_compaction_job_by_default_leaves_the_current_day_alone(defs: dg.Definitions, catalog: Catalog) -> None:
    _micro_batches(catalog, 6)  # six small files on 2026-04-20
    job = defs.resolve_job_def("compaction_job")

    on_the_day = job.execute_in_process(
        instance=dg.DagsterInstance.get(), tags=_scheduled_at(dt.datetime(2026, 4, 20, 2, tzinfo=dt.UTC))
    )
    next_night = job.execute_in_process(
        instance=dg.DagsterInstance.get(), tags=_scheduled_at(dt.datetime(2026, 4, 21, 2, tzinfo=dt.UTC))
    )

    assert op_output_metadata(on_the_day, "compact_tables")["partitions_rewritten"].value == 0
    assert op_output_metadata(next_night, "compact_tables")["partitions_rewritten"].value == 1


def test_expiry_job_expires_and_orphans_job_removes_orphans(defs: dg.Definitions, catalog: Catalog) -> None:
    table = _micro_batches(catalog, 8)
    stray = table.location().removeprefix("file://") + "/data/left-by-a-crash.parquet"
    Path(stray).write_bytes(b"x" * 1000)

    expired = defs.resolve_job_def("expiry_job").execute_in_process(
        run_config={"ops": {"expire_table_snapshots": {"config": {"retention_days": 0, "retain_last": 2}}}},
        instance=dg.DagsterInstance.get(),
    )
    cleaned = defs.resolve_job_def("orphans_job").execute_in_process(
        run_config={"ops": {"remove_orphans": {"config": NO_ORPHAN_WINDOW}}}, instance=dg.DagsterInstance.get()
    )

    assert expired.success and cleaned.success
    assert len(catalog.load_table("music.plays").snapshots()) == 2
    expiry = op_output_metadata(expired, "expire_table_snapshots")
    assert expiry["snapshots_expired"].value == {"music.plays": 6}
    assert expiry["files_deleted"].value == {"manifest_lists": 6}  # the data and manifests live on
    orphans = op_output_metadata(cleaned, "remove_orphans")
    assert orphans["orphans"].value == {"music.plays": [stray]}
    assert orphans["total_bytes_deleted"].value == 1000
    # ... and each run's log ends with one line saying what it did (what `dagster job execute` prints)
    logs = [e.user_message for e in dg.DagsterInstance.get().all_logs(cleaned.run_id) if e.user_message]
    tables = len(lakehouse_table_names(catalog))
    assert f"orphan removal: deleted 1 files (1,000 B) in {tables} tables; by table: music.plays 1" in logs


def _warehouse_files(root: Path) -> dict[Path, int]:
    return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()}


def _failure_description(result: dg.ExecuteInProcessResult, op: str) -> str:
    """The description of the dg.Failure a step raised, as the UI shows it."""
    [failure] = [e for e in result.events_for_node(op) if e.event_type_value == "STEP_FAILURE"]
    return failure.event_specific_data.user_failure_data.description


def test_orphan_removal_refuses_a_window_under_24_hours_without_the_override(
    defs: dg.Definitions, catalog: Catalog, sonik_home: Path
) -> None:
    # Given a table and a stray file that a 1-hour window would take once it is an hour old
    table = _micro_batches(catalog, 3)
    stray = Path(table.location().removeprefix("file://")) / "data" / "left-by-a-crash.parquet"
    stray.write_bytes(b"x" * 1000)
    before = _warehouse_files(sonik_home / "warehouse")

    # When the job runs with older_than_hours: 1 and no override
    result = defs.resolve_job_def("orphans_job").execute_in_process(
        run_config={"ops": {"remove_orphans": {"config": {"older_than_hours": 1}}}},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )

    # Then the step fails with one line saying why and how to override, and nothing was deleted
    assert not result.success
    message = _failure_description(result, "remove_orphans")
    assert "\n" not in message
    assert "window of 1h is under the 24h minimum" in message and "i_know_no_writer_is_running" in message
    assert _warehouse_files(sonik_home / "warehouse") == before


class PausedCommit:
    """A writer stopped inside its commit: every new file is written, the catalog not yet pointed at them.

    It wraps the writer's own catalog's ``_write_metadata``, the step before the catalog row is swapped,
    so the window a concurrent orphan removal saw in production is held open for as long as needed.
    """

    def __init__(self, settings: Settings, day: dt.date) -> None:
        self.written, self.resume = threading.Event(), threading.Event()
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._write, args=(settings, day))

    def _write(self, settings: Settings, day: dt.date) -> None:
        try:
            catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
            write_metadata = catalog._write_metadata  # PyIceberg 0.12's step before the swap; fails here if renamed

            def write_then_wait(metadata, io, metadata_path) -> None:
                write_metadata(metadata=metadata, io=io, metadata_path=metadata_path)
                self.written.set()
                assert self.resume.wait(120), "the test never resumed the writer"

            catalog._write_metadata = write_then_wait
            table = catalog.load_table("music.plays")
            rows = synthetic_batch(day, 500, batch=9)
            replace_partition(table, played_at_filter(day), stage_files(table, [rows]), {})
        except BaseException as error:  # reported to the test thread
            self.errors.append(error)
        finally:
            self.written.set()

    def __enter__(self) -> "PausedCommit":
        self._thread.start()
        assert self.written.wait(120) and not self.errors, self.errors
        assert self._thread.is_alive(), "the writer committed without pausing: the hook no longer applies"
        return self

    def __exit__(self, *exc) -> None:
        self.resume.set()
        self._thread.join(120)


def test_orphan_removal_never_takes_a_commit_in_flight(
    defs: dg.Definitions, catalog: Catalog, settings: Settings, sonik_home: Path
) -> None:
    # Given a table, a crashed writer's stray file, and a backfill writer paused inside its commit
    table = _micro_batches(catalog, 3)
    stray = Path(table.location().removeprefix("file://")) / "data" / "left-by-a-crash.parquet"
    stray.write_bytes(b"x" * 1000)
    before = set(_warehouse_files(sonik_home / "warehouse"))
    with PausedCommit(settings, DAY - dt.timedelta(days=1)) as writer:
        in_flight = set(_warehouse_files(sonik_home / "warehouse")) - before
        assert {p.name.rsplit(".", 1)[-1] for p in in_flight} == {"json", "avro", "parquet"}

        # When orphan removal runs meanwhile with no window at all (the override set)
        result = defs.resolve_job_def("orphans_job").execute_in_process(
            run_config={"ops": {"remove_orphans": {"config": NO_ORPHAN_WINDOW}}}, instance=dg.DagsterInstance.get()
        )

        # Then it took the stray file and kept all of the writer's
        assert result.success
        orphans = op_output_metadata(result, "remove_orphans")
        assert orphans["orphans"].value == {"music.plays": [str(stray)]}
        assert orphans["kept_in_flight"].value == {"music.plays": sorted(str(p) for p in in_flight)}
        assert all(p.exists() for p in in_flight) and not stray.exists()

    # And once the writer's commit lands, the table and every snapshot read in full
    assert writer.errors == []
    table = catalog.load_table("music.plays")
    assert len(table.snapshots()) == 4
    assert table.scan().count() == 3 * 100 + 500
    for snapshot in table.snapshots():
        rows = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow().num_rows
        assert rows == int(snapshot.summary["total-records"])


def _fingerprint(root: Path) -> dict[str, tuple[int, str]]:
    """Every file under ``root``: its size and a hash of its bytes."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest())
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_maintenance_on_a_copied_lakehouse_leaves_the_original_untouched(
    settings: Settings, catalog: Catalog, sonik_home: Path, tmp_path: Path
) -> None:
    # Given a lakehouse of three days rewritten twice (6 snapshots) and a crashed writer's stray file
    table, _ = ensure_table(catalog, PLAYS)
    for i in range(6):
        day = DAY - dt.timedelta(days=i % 3)
        replace_partition(table, played_at_filter(day), stage_files(table, [synthetic_batch(day, 200, batch=i)]), {})
    table = catalog.load_table("music.plays")
    (Path(table.location().removeprefix("file://")) / "data" / "left-by-a-crash.parquet").write_bytes(b"x" * 1000)
    original = _fingerprint(sonik_home)

    with copied_lakehouse(settings, catalog, tmp_path / "copy") as copy:
        copy_catalog = open_catalog(CATALOG_NAME, copy.catalog_uri, copy.warehouse)
        pointer = copy_catalog.load_table("music.plays").metadata_location
        assert pointer == table.metadata_location  # Iceberg metadata holds absolute paths: the original's
        copied = _fingerprint(copy.home)
        copy_defs = build_definitions(copy)

        # When expiry_job and orphans_job run on the copy
        expiry = copy_defs.resolve_job_def("expiry_job").execute_in_process(
            {"ops": {"expire_table_snapshots": {"config": {"retention_days": 0, "retain_last": 1}}}},
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
        )
        orphans = copy_defs.resolve_job_def("orphans_job").execute_in_process(
            {"ops": {"remove_orphans": {"config": NO_ORPHAN_WINDOW}}},
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
        )

        # Then each refuses in one line naming both locations, and the copy's catalog is unchanged
        refusal = (
            f"music.plays is stored at {table.location()}, outside the configured warehouse {copy.warehouse}: "
            "a copied lakehouse still points at the original's files (Iceberg metadata holds absolute paths); "
            "nothing was deleted"
        )
        assert not expiry.success and _failure_description(expiry, "expire_table_snapshots") == refusal
        assert not orphans.success and _failure_description(orphans, "remove_orphans") == refusal
        assert copy_catalog.load_table("music.plays").metadata_location == pointer
        assert _fingerprint(copy.home) == copied

    # And the original is byte for byte what it was, and every one of its snapshots reads in full
    assert _fingerprint(sonik_home) == original
    table = catalog.load_table("music.plays")
    assert len(table.snapshots()) == 6
    for snapshot in table.snapshots():
        rows = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow().num_rows
        assert rows == int(snapshot.summary["total-records"])


def test_only_maintenance_queues_behind_maintenance_and_rollback_goes_first() -> None:
    """A stuck maintenance run holds the maintenance queue place and pool; rollback needs neither."""
    pools = {job.name: {node.definition.pool for node in job.graph.nodes} for job in MAINTENANCE_JOBS}
    assert pools == {
        "compaction_job": {MAINTENANCE_POOL},
        "manifests_job": {MAINTENANCE_POOL},
        "expiry_job": {MAINTENANCE_POOL},
        "orphans_job": {MAINTENANCE_POOL},
    }
    assert all(MAINTENANCE_TAG in job.tags for job in MAINTENANCE_JOBS)
    assert MAINTENANCE_TAG not in rollback_job.tags
    assert [node.definition.pool for node in rollback_job.graph.nodes] == [None]
    assert int(rollback_job.tags["dagster/priority"]) > 0  # dequeued ahead of backfills when the queue is full


def test_a_run_against_a_catalog_that_is_down_fails_saying_so(tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uri = f"postgresql+psycopg://sonik:hunter2@127.0.0.1:{port}/catalog"
    defs = build_definitions(Settings.from_env({"SONIK_HOME": str(tmp_path), "SONIK_CATALOG_URI": uri}))

    result = defs.resolve_job_def("rollback_job").execute_in_process(
        run_config={"ops": {"rollback_table": {"config": {"table": "music.plays", "to_snapshot_id": 1}}}},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )

    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    error = failure.event_specific_data.error
    shown = error.message + (error.cause.message if error.cause else "")
    assert f"cannot open the Iceberg catalog postgresql+psycopg://sonik:***@127.0.0.1:{port}/catalog" in shown
    assert "hunter2" not in shown
