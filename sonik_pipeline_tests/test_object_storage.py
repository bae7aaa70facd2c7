"""The warehouse on S3: ingest, marts through DuckDB's httpfs, compaction, expiry and orphans, end to end.

An S3-compatible server (moto's server mode) is started on loopback for the module; the pipeline is
pointed at it only by the settings docs/production.md lists: ``SONIK_WAREHOUSE`` and
PyIceberg's ``PYICEBERG_CATALOG__SONIK__S3__*`` variables.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from pyarrow import fs as pafs
from pyiceberg.expressions import In

from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.duckdb_io.extensions import lakehouse_connection
from sonik_pipeline.lakehouse.ingest.rejects import replay_file_name
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.landing import landing_events
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import catalog_properties, open_catalog
from sonik_pipeline.maintenance.files import referenced_files
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS, op_output_metadata, private_postgres_database
from sonik_pipeline_tests.engines.spark_available import SPARK_TESTS

BUCKET = "sonik-lake"
KEY_ID, SECRET = "sonik-test-key", "sonik-test-secret"
DAYS = ["2026-04-19", "2026-04-20"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server on a free loopback port, for this module's tests."""
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start; see {log.name}") from None
                time.sleep(0.2)
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def bucket(s3_endpoint: str) -> pafs.S3FileSystem:
    """The bucket (each test writes under its own prefix), and a filesystem to look into it as any S3 client."""
    s3 = pafs.S3FileSystem(
        endpoint_override=s3_endpoint,
        scheme="http",
        access_key=KEY_ID,
        secret_key=SECRET,
        region="us-east-1",
        allow_bucket_creation=True,
    )
    s3.create_dir(BUCKET)
    return s3


@pytest.fixture
def production_catalog_uri(sonik_home: Path) -> Iterator[str]:
    """The production pairing, a PostgreSQL catalog; SQLite where no server is configured, so S3 is still tested."""
    server = os.environ.get("SONIK_TEST_POSTGRES_URL")
    if not server:
        yield f"sqlite:///{sonik_home / 'catalog.db'}"
        return
    with private_postgres_database(server) as url:
        yield url


@pytest.fixture
def s3_settings(
    sonik_home: Path, production_catalog_uri: str, s3_endpoint: str, bucket, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Exactly the production settings of docs/production.md: the catalog URI, the S3 warehouse and landing zone, and
    PyIceberg's s3.* keys."""
    prefix = f"s3://{BUCKET}/{sonik_home.parent.name}"
    for name, value in {
        "SONIK_WAREHOUSE": f"{prefix}/warehouse",
        "SONIK_SOURCE": "landing",
        "SONIK_LANDING_DIR": f"{prefix}/landing",
        "PYICEBERG_CATALOG__SONIK__S3__ENDPOINT": s3_endpoint,
        "PYICEBERG_CATALOG__SONIK__S3__ACCESS_KEY_ID": KEY_ID,
        "PYICEBERG_CATALOG__SONIK__S3__SECRET_ACCESS_KEY": SECRET,
        "PYICEBERG_CATALOG__SONIK__S3__REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return Settings.from_env(
        {
            **os.environ,
            "SONIK_HOME": str(sonik_home),
            "SONIK_CATALOG_URI": production_catalog_uri,
            "SONIK_EVENTS_PER_DAY": str(SMALL_DAY_EVENTS),
        }
    )


def _stored(s3: pafs.S3FileSystem, location: str) -> dict[str, int]:
    root = location.removeprefix("s3://")
    infos = s3.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path: i.size for i in infos if i.type == pafs.FileType.File}


def _sonik(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    """The `sonik` CLI in a fresh process, configured only by the environment."""
    env = {**os.environ, "SONIK_HOME": str(settings.home), "SONIK_CATALOG_URI": settings.catalog_uri}
    sonik = str(Path(sys.executable).parent / "sonik")
    result = subprocess.run([sonik, *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def test_the_whole_pipeline_runs_on_an_s3_warehouse(s3_settings: Settings, bucket: pafs.S3FileSystem) -> None:
    defs = build_definitions(s3_settings)
    instance = dg.DagsterInstance.get()

    # The app drops the days' events into the landing bucket (JSONL parts), as in production.
    _sonik(s3_settings, "landing", "--start", DAYS[0], "--end", DAYS[-1], "--events", str(SMALL_DAY_EVENTS))
    landed = _stored(bucket, s3_settings.landing_dir)
    assert sorted(k.rsplit("/", 2)[-2] for k in landed) == sorted(DAYS * 4)

    # Write and aggregate: plays for two days, every mart from it, every check, in one range run.
    daily = defs.resolve_job_def("daily_job").execute_in_process(
        tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]},
        instance=instance,
    )
    assert daily.success
    [source] = {m.metadata["source"].value for m in daily.asset_materializations_for_node("plays")}
    assert source == f"landing zone {s3_settings.landing_dir}"
    checks = [e.event_specific_data for e in daily.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert checks and all(c.passed for c in checks), [c.check_name for c in checks if not c.passed]
    assert any(c.check_name == "reconciles_with_plays" for c in checks)  # DuckDB read both tables from S3

    catalog = open_catalog(CATALOG_NAME, s3_settings.catalog_uri, s3_settings.warehouse)
    plays = catalog.load_table("music.plays")
    assert plays.location() == f"{s3_settings.warehouse}/music/plays"
    stored = _stored(bucket, plays.location())
    assert any(key.endswith(".parquet") for key in stored)
    assert not any(s3_settings.home.rglob("*.parquet")), "nothing of the warehouse may land on local disk"

    con = lakehouse_connection(
        duckdb.connect(), catalog_properties(CATALOG_NAME, s3_settings.catalog_uri, s3_settings.warehouse)
    )
    per_day = con.execute(
        f"SELECT played_at::DATE::VARCHAR, count(*) FROM iceberg_scan('{plays.metadata_location}') "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert per_day == [(d, SMALL_DAY_EVENTS) for d in DAYS]
    top = catalog.load_table("music_marts.daily_top_artists")
    mart_plays = con.execute(
        f"SELECT day::VARCHAR, sum(plays) FROM iceberg_scan('{top.metadata_location}') GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert [d for d, _ in mart_plays] == DAYS and all(0 < n <= SMALL_DAY_EVENTS for _, n in mart_plays)

    # Maintenance: late micro-batches make small files; compaction rewrites them in one commit.
    for i in range(6):
        batch = synthetic_batch(dt.date.fromisoformat(DAYS[-1]), 50, batch=100 + i, seed=7)
        plays.append(batch.cast(plays.schema().as_arrow()))
    rows_before = plays.scan().count()
    compaction = defs.resolve_job_def("compaction_job").execute_in_process(
        run_config={"ops": {"compact_tables": {"config": {"skip_recent_days": 0}}}}, instance=instance
    )
    assert compaction.success
    compacted = op_output_metadata(compaction, "compact_tables")
    assert compacted["files_before"].value > compacted["files_after"].value
    plays = catalog.load_table("music.plays")
    assert plays.scan().count() == rows_before

    # Manifests rewritten, then expiry and orphans: what only old snapshots reached, and a crashed writer's
    # file, leave the bucket.
    stray = f"{plays.location().removeprefix('s3://')}/data/left-by-a-crash.parquet"
    with bucket.open_output_stream(stray) as out:
        out.write(b"x" * 1_000)
    before = _stored(bucket, plays.location())
    manifests = defs.resolve_job_def("manifests_job").execute_in_process(instance=instance)
    assert manifests.success
    rewritten = op_output_metadata(manifests, "rewrite_table_manifests")["tables"].value["music.plays"]
    assert rewritten["manifests_before"] > rewritten["manifests_after"] == 1
    assert rewritten["manifests_kept"] == 0 and rewritten["data_files_in_rewritten_manifests"] >= 1
    assert catalog.load_table("music.plays").scan().count() == rows_before
    expiry = defs.resolve_job_def("expiry_job").execute_in_process(
        run_config={"ops": {"expire_table_snapshots": {"config": {"retention_days": 0, "retain_last": 1}}}},
        instance=instance,
    )
    assert expiry.success
    orphans = defs.resolve_job_def("orphans_job").execute_in_process(
        run_config={
            "ops": {"remove_orphans": {"config": {"older_than_hours": 0, "i_know_no_writer_is_running": True}}}
        },
        instance=instance,
    )
    assert orphans.success
    plays = catalog.load_table("music.plays")
    after = _stored(bucket, plays.location())
    assert len(plays.snapshots()) == 1 and plays.scan().count() == rows_before
    assert stray not in after and stray in before
    assert sum(after.values()) < sum(before.values())
    data_after = {k for k in after if "/data/" in k}
    assert data_after == {k for k, kind in referenced_files(plays).items() if kind == "data_files"}
    assert op_output_metadata(expiry, "expire_table_snapshots")["total_bytes_deleted"].value > 0

    # Any engine, any process: the CLI, configured only by the environment, reads what is on S3 now.
    cli = _sonik(s3_settings, "sql", "SELECT count(*) AS n FROM music.plays", "--format", "csv")
    assert cli.stdout.splitlines() == ["n", str(rows_before)]


def test_the_landing_sensor_sees_a_late_file_in_an_s3_landing_zone(
    s3_settings: Settings, bucket: pafs.S3FileSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sonik_pipeline import landing_sensor
    from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day

    monkeypatch.setattr(landing_sensor, "now", lambda: dt.datetime(2026, 4, 21, 12, tzinfo=dt.UTC))
    defs = build_definitions(s3_settings)
    day = dt.date.fromisoformat(DAYS[-1])
    properties = catalog_properties(CATALOG_NAME, s3_settings.catalog_uri, s3_settings.warehouse)
    write_landing_day(s3_settings.landing_dir, day, synthetic_batch(day, 60), files=2, properties=properties)

    def tick(cursor: str | None = None):
        with dg.build_sensor_context(
            cursor=cursor, instance=dg.DagsterInstance.get(), resources=defs.resources
        ) as context:
            result = defs.resolve_sensor_def("landing_sensor")(context)
        ranges = [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"])
                  for r in result.run_requests]  # fmt: skip
        return ranges, result.cursor

    assert tick()[0] == [(DAYS[-1], DAYS[-1])]  # never ingested
    run = defs.resolve_job_def("plays_job").execute_in_process(
        partition_key=DAYS[-1], instance=dg.DagsterInstance.get()
    )
    assert run.success
    assert tick()[0] == []  # what the ingest read is what the bucket holds

    # A phone's late upload lands in the day's prefix (an in-progress .tmp beside it is ignored).
    late = synthetic_batch(day, 9, seed=11)
    staged = write_landing_day(f"{s3_settings.landing_dir}/late", day, late, files=1, properties=properties)
    source = staged[0].removeprefix("s3://")
    bucket.move(source, f"{s3_settings.landing_dir.removeprefix('s3://')}/plays/{day}/late-upload.jsonl")
    with bucket.open_output_stream(f"{s3_settings.landing_dir.removeprefix('s3://')}/plays/{day}/next.jsonl.tmp") as f:
        f.write(b"{")
    ranges, cursor = tick()
    assert ranges == [(DAYS[-1], DAYS[-1])]
    assert tick(cursor)[0] == []  # requested already: the next tick waits for its run

    run = defs.resolve_job_def("plays_job").execute_in_process(
        partition_key=DAYS[-1], instance=dg.DagsterInstance.get()
    )
    assert run.success
    catalog = open_catalog(CATALOG_NAME, s3_settings.catalog_uri, s3_settings.warehouse)
    assert catalog.load_table("music.plays").scan().count() == 69
    [metadata] = [m.metadata for m in run.asset_materializations_for_node("plays") if m.partition]
    assert (metadata["late_files"].value, metadata["late_events"].value) == (1, 9)
    assert tick(cursor)[0] == []


def test_quarantine_replays_into_an_s3_landing_zone_once(s3_settings: Settings, bucket: pafs.S3FileSystem) -> None:
    # Given a landing day in the bucket holding an upload of another day's plays, ingested
    properties = catalog_properties(CATALOG_NAME, s3_settings.catalog_uri, s3_settings.warehouse)
    catalog = open_catalog(CATALOG_NAME, s3_settings.catalog_uri, s3_settings.warehouse)
    day, late_day = dt.date(2026, 4, 20), dt.date(2026, 4, 18)
    write_landing_day(s3_settings.landing_dir, day, synthetic_batch(day, 100), files=1, properties=properties)
    event = {"user_id": 1, "track_id": 2, "artist": "A", "title": "T"}
    late = [json.dumps({**event, "play_id": f"late-{i}", "played_at": f"2026-04-18T10:00:0{i}Z"}) for i in range(3)]
    root = s3_settings.landing_dir.removeprefix("s3://")
    with bucket.open_output_stream(f"{root}/plays/{day}/upload.jsonl") as out:
        out.write(("\n".join(late) + "\n").encode())
    ingest_day(catalog, day, landing_events(s3_settings.landing_dir, day, properties), progress=lambda _: None)

    for _ in range(2):  # replaying and ingesting twice doubles nothing
        # When its quarantine is replayed and the day the plays belong to is ingested
        _sonik(s3_settings, "rejects", "replay", "--day", str(day))
        events = landing_events(s3_settings.landing_dir, late_day, properties)
        ingest_day(catalog, late_day, events, progress=lambda _: None)

        # Then the bucket holds one whole replay file in that day's folder, and each play is in plays once
        stored = _stored(bucket, f"{s3_settings.landing_dir}/plays/{late_day}")
        assert [k.rsplit("/", 1)[-1] for k in stored] == [replay_file_name(day, "played_at outside 2026-04-20 (UTC)")]
        ids = catalog.load_table("music.plays").scan(row_filter=In("play_id", {"late-0", "late-1", "late-2"}))
        assert sorted(ids.to_arrow().column("play_id").to_pylist()) == ["late-0", "late-1", "late-2"]


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=SPARK_TESTS)])
def test_an_s3_landing_zone_is_ingested_on_each_engine(
    s3_settings: Settings, bucket: pafs.S3FileSystem, engine: str, tmp_path: Path
) -> None:
    # Given the app's files for a day in an S3 landing zone, one of them a late upload of bad and repeated events,
    # and a warehouse on local disk (the Spark engine writes S3 warehouses only with Iceberg's AWS bundle)
    day = dt.date.fromisoformat(DAYS[0])
    properties = catalog_properties(CATALOG_NAME, s3_settings.catalog_uri, s3_settings.warehouse)
    events = synthetic_batch(day, 900)
    write_landing_day(s3_settings.landing_dir, day, events.slice(0, 800), files=3, properties=properties)
    root = s3_settings.landing_dir.removeprefix("s3://")
    with bucket.open_output_stream(f"{root}/plays/{day}/upload-late.jsonl") as late:
        repeated = events.slice(0, 5).to_pylist()
        late.write(b"{not json\n" + "\n".join(json.dumps(e, default=str) for e in repeated).encode() + b"\n")
    local_warehouse = (tmp_path / "warehouse").as_uri()
    settings = dataclasses.replace(s3_settings, warehouse=local_warehouse, engine=engine, spark_master="local[2]")

    # When the day is ingested by the engine
    result = (
        build_definitions(settings)
        .resolve_job_def("plays_job")
        .execute_in_process(
            tags={"dagster/asset_partition_range_start": str(day), "dagster/asset_partition_range_end": str(day)},
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
        )
    )

    # Then the day holds the 800 events once, the bad line and the five repeats are quarantined with the file and
    # line, and the four files read (as the listing named them, on S3) are recorded
    assert result.success
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    plays = catalog.load_table("music.plays").scan().to_arrow()
    assert plays.num_rows == 800 and len(set(plays["play_id"].to_pylist())) == 800
    rejects = catalog.load_table("music.plays_rejected").scan().to_arrow().to_pylist()
    late_file = f"s3://{root}/plays/{day}/upload-late.jsonl"
    assert sorted((r["source_file"], r["source_line"], r["reason"].split(":")[0]) for r in rejects) == [
        (late_file, 1, "malformed JSON"),
        *[(late_file, line, "duplicate play_id") for line in range(2, 7)],
    ]
    recorded = catalog.load_table("music.plays_sources").scan().to_arrow()
    assert sorted(recorded["source_file"].to_pylist())[-1] == late_file and recorded.num_rows == 4
    assert sum(recorded["events"].to_pylist()) == 806
