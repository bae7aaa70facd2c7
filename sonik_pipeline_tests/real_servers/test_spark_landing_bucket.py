"""SONIK_ENGINE=spark reads a landing zone in object storage (SeaweedFS's S3) as the local engine reads it.

The landing zone of ``engines/test_spark_ingest.py`` (every fault the quarantine names, duplicates across
files and formats, a long line, an unreadable file, then a late file) is uploaded to a bucket; each engine
ingests it into a fresh lakehouse on the embedded catalog, set only by the environment docs/production.md
gives (``SONIK_LANDING_DIR=s3://...`` and the ``s3.*`` settings). Spark's Python workers open each file
with the settings its split carries, so plays, the quarantine and the record of files read are the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pyarrow import fs as pafs

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.settings import Settings
from sonik_pipeline_tests.conftest import run_asset_job
from sonik_pipeline_tests.engines.spark_available import SPARK_TESTS
from sonik_pipeline_tests.engines.test_spark_ingest import (
    DAY_1,
    DAY_2,
    LENIENT,
    _catalog,
    _landing_zone,
    _late_file,
    _plays,
    _rejects,
    _sources,
)
from sonik_pipeline_tests.real_servers.conftest import FILES_BUCKET, SeaweedFS, set_environment

pytestmark = SPARK_TESTS


def _upload(server: SeaweedFS, folder: Path, prefix: str) -> None:
    pafs.copy_files(str(folder), prefix, destination_filesystem=server.filesystem())


def test_spark_ingests_a_landing_bucket_row_for_row_as_the_local_engine(
    seaweedfs: SeaweedFS, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the landing zone in a bucket, and two fresh lakehouses reading it: the local engine and Spark
    folder = tmp_path / "landing"
    _landing_zone(folder)
    prefix = f"{FILES_BUCKET}/{tmp_path.name}/landing"
    _upload(seaweedfs, folder, prefix)
    common = {"SONIK_SOURCE": "landing", "SONIK_LANDING_DIR": f"s3://{prefix}", **seaweedfs.s3_environment()}
    set_environment(monkeypatch, common)
    local = Settings.from_env({**common, "SONIK_HOME": str(tmp_path / "local")})
    spark = Settings.from_env(
        {**common, "SONIK_HOME": str(tmp_path / "spark"), "SONIK_ENGINE": "spark", "SONIK_SPARK_MASTER": "local[2]"}
    )

    # When both engines ingest the two days, then the second again after a late file is uploaded
    runs = [run_asset_job(build_definitions(s), "plays_job", DAY_1, DAY_2, run_config=LENIENT) for s in (local, spark)]
    late = tmp_path / "late"
    (late / "plays" / DAY_2).mkdir(parents=True)
    _late_file(late)
    _upload(seaweedfs, late, prefix)
    runs += [run_asset_job(build_definitions(s), "plays_job", DAY_2, run_config=LENIENT) for s in (local, spark)]

    # Then every run succeeded, and both lakehouses hold the same plays, rejects and record of files read
    assert all(run.success for run in runs)
    local_catalog, spark_catalog = _catalog(local), _catalog(spark)
    local_plays = _plays(local_catalog)
    assert local_plays.num_rows > 5000
    assert _plays(spark_catalog).sort_by("play_id").equals(local_plays.sort_by("play_id"))
    assert _rejects(spark_catalog) == _rejects(local_catalog)
    sources = _sources(spark_catalog)
    assert sources == _sources(local_catalog)
    assert [events for day, name, _, events in sources if (day, name) == (DAY_2, "late.jsonl")] == [200]
    recorded = spark_catalog.load_table("music.plays_sources").scan().to_arrow().column("source_file").to_pylist()
    assert all(path.startswith(f"s3://{prefix}/plays/") for path in recorded)
