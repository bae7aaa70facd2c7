"""Each table's health, observed on its asset after ingest, marts and maintenance (what the UI plots)."""

import datetime as dt

import dagster as dg
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS
from sonik_pipeline.lakehouse.tables.health import TableHealth
from sonik_pipeline_tests.conftest import op_output_metadata, run_asset_job

DAY = dt.date(2026, 4, 20)
FIGURES = [name for name in TableHealth.__dataclass_fields__ if name != "table"]


def _observed(asset: str) -> list[dict]:
    """The health figures observed on an asset, oldest first."""
    records = dg.DagsterInstance.get().fetch_observations(dg.AssetKey(asset), limit=100, ascending=True).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()} for r in records]


def test_small_files_climb_with_ingest_and_fall_after_compaction_on_the_plays_asset(
    defs: dg.Definitions, catalog: Catalog
) -> None:
    instance = dg.DagsterInstance.get()
    # Given a day ingested through Dagster, then six micro-batches of the day before (another writer)
    assert run_asset_job(defs, "plays_job", str(DAY)).success
    plays = catalog.load_table(PLAYS.identifier)
    for batch in range(6):
        plays.append(synthetic_batch(DAY - dt.timedelta(days=1), 100, batch=batch).cast(plays.schema().as_arrow()))
    # and the next day ingested
    assert run_asset_job(defs, "plays_job", str(DAY + dt.timedelta(days=1))).success

    # When compaction and then expiry (keeping the newest snapshot only) run
    compaction = defs.resolve_job_def("compaction_job").execute_in_process(
        run_config={"ops": {"compact_tables": {"config": {"skip_recent_days": 0}}}}, instance=instance
    )
    expiry = defs.resolve_job_def("expiry_job").execute_in_process(
        run_config={"ops": {"expire_table_snapshots": {"config": {"retention_days": 0, "retain_last": 1}}}},
        instance=instance,
    )

    # Then plays' observations, in order, show the small files climb, fall, and the history shrink
    assert compaction.success and expiry.success
    observed = _observed("plays")
    assert all(set(FIGURES) <= set(o) for o in observed)
    assert [o["small_files"] for o in observed] == [1, 8, 3, 3]
    assert [o["data_files"] for o in observed] == [1, 8, 3, 3]
    assert [o["snapshots"] for o in observed] == [1, 8, 9, 1]
    assert observed[-1]["data_bytes"] == sum(
        catalog.load_table(PLAYS.identifier).inspect.files()["file_size_in_bytes"].to_pylist()
    )
    # and each maintenance step's metadata holds every table's figures, those without an asset included
    health = op_output_metadata(expiry, "expire_table_snapshots")["health"].value
    assert health["music.plays"] == observed[-1]
    assert health["music.plays_rejected"]["data_files"] == 0  # no asset of its own: here only (and in sonik tables)


def test_every_mart_built_is_observed_on_its_asset(defs: dg.Definitions, catalog: Catalog) -> None:
    result = run_asset_job(defs, "daily_job", str(DAY))

    assert result.success
    [observation] = _observed("daily_top_tracks")
    table = catalog.load_table("music_marts.daily_top_tracks")
    assert observation["data_files"] == len(table.inspect.files()) == 1
    assert observation["snapshots"] == len(table.snapshots())
    assert _observed("daily_user_stats") and _observed("trending_tracks")
