"""Every operation the assets and ops perform goes through the engine resource: the seam a second engine plugs into."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from pyiceberg.catalog import Catalog

from sonik_pipeline.engines.base import Engine
from sonik_pipeline.engines.local import LocalEngine
from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.tables.definitions import lakehouse_table_names
from sonik_pipeline.resources import LakehouseEngine
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS, run_asset_job

CALLS: list[tuple[str, str]] = []


class RecordingEngine(LocalEngine):
    """The local engine, noting each operation asked of it (and of which table)."""

    name = "recording"

    def __getattribute__(self, attribute: str):
        value = super().__getattribute__(attribute)
        if attribute in (
            "ingest_days",
            "build_marts",
            "compact",
            "rewrite_manifests",
            "expire_snapshots",
            "remove_orphan_files",
        ):

            def noted(first, *args, **kwargs):
                CALLS.append((attribute, ".".join(first.name()) if hasattr(first, "metadata") else "catalog"))
                return value(first, *args, **kwargs)

            return noted
        return value


class RecordingEngineResource(LakehouseEngine):
    def engine(self) -> Engine:
        return RecordingEngine()


def _with_recording_engine(defs: dg.Definitions) -> dg.Definitions:
    return dg.Definitions(
        assets=defs.assets,
        asset_checks=defs.asset_checks,
        jobs=defs.jobs,
        schedules=defs.schedules,
        sensors=defs.sensors,
        executor=defs.executor,
        resources={**defs.resources, "engine": RecordingEngineResource(lakehouse=defs.resources["lakehouse"])},
    )


def test_ingest_marts_and_every_maintenance_job_ask_the_engine(defs: dg.Definitions, catalog: Catalog) -> None:
    # Given the pipeline with an engine that notes what it is asked
    CALLS.clear()
    defs = _with_recording_engine(defs)

    # When a day is ingested, its marts built, and each maintenance job runs
    assert run_asset_job(defs, "plays_job", "2026-04-20").success
    assert run_asset_job(defs, "marts", "2026-04-20", selection=dg.AssetSelection.groups("marts", "rolling")).success
    for job in ("compaction_job", "manifests_job", "expiry_job", "orphans_job"):
        assert defs.resolve_job_def(job).execute_in_process(instance=dg.DagsterInstance.get()).success, job

    # Then the engine did the work: the day through its ingest, every table through each maintenance operation
    assert CALLS[0] == ("ingest_days", "catalog")
    assert CALLS[1:5] == [("build_marts", "catalog")] * 4  # daily_marts, then each rolling view's own step
    tables = set(lakehouse_table_names(catalog))
    assert {"music.plays", "music.plays_rejected"} <= tables
    for operation in ("compact", "rewrite_manifests", "expire_snapshots", "remove_orphan_files"):
        assert {t for op, t in CALLS if op == operation} == tables, operation
    plays = catalog.load_table("music.plays")
    assert plays.scan(row_filter=played_at_filter(dt.date(2026, 4, 20))).count() == SMALL_DAY_EVENTS


def test_the_default_engine_is_the_local_one(defs: dg.Definitions) -> None:
    engine = defs.resources["engine"]
    assert isinstance(engine, LakehouseEngine)
    assert isinstance(engine.engine(), LocalEngine)
