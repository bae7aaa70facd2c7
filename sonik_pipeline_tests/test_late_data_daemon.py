"""Late plays through the daemon, as in production: a late upload reaches plays and every mart over its day.

The daemon runs on the shipped instance with SONIK_SOURCE=landing: the landing sensor ingests the landing
days, the marts follow by their automation conditions, and a file dropped later into an old day's folder
is ingested again, refreshing that day's marts and the rolling views whose window holds it. No click.
"""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

DAYS = [dt.date(2026, 4, 18), dt.date(2026, 4, 19), dt.date(2026, 4, 20)]
LATE_DAY = DAYS[1]
EVENTS, LATE_EVENTS = 120, 30


def _latest(instance: dg.DagsterInstance, asset: str, partition: dt.date, after: float | None) -> float | None:
    """When ``asset``'s ``partition`` was last materialized after ``after`` (epoch seconds), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[str(partition)], after_timestamp=after),
        limit=1,
    ).records
    return records[0].timestamp if records else None


def _wait(what: str, predicate, timeout: float, log: Path, instance: dg.DagsterInstance):
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            runs = [(r.job_name, r.status.value, r.tags.get("dagster/partition")) for r in instance.get_runs(limit=20)]
            pytest.fail(f"no {what} within {timeout:.0f} s; runs: {runs}\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return value


def _country_plays(settings: Settings, day: dt.date) -> tuple[int, int]:
    """(rows of plays on ``day``, plays on ``day`` by the daily_country_listening mart)."""
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    plays = catalog.load_table("music.plays").scan(selected_fields=("played_at",)).to_arrow().column("played_at")
    on_day = sum(1 for t in plays.to_pylist() if t.date() == day)
    mart = catalog.load_table("music_marts.daily_country_listening").scan().to_arrow().to_pylist()
    return on_day, sum(r["plays"] for r in mart if r["day"] == day)


def test_a_late_file_refreshes_plays_and_the_marts_through_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "shipped_dagster_home"
    home.mkdir()
    config = yaml.safe_load((REPO / "dagster_home" / "dagster.yaml").read_text())
    # Only the landing sensor's and the automation's runs: no schedule (02:00 maintenance) nor freshness run.
    config["concurrency"]["runs"]["tag_concurrency_limits"] += [
        {"key": "dagster/schedule_name", "limit": 0},
        {"key": "dagster/sensor_name", "value": "plays_freshness_sensor", "limit": 0},
    ]
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    landing = tmp_path / "landing"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SONIK_", "PYICEBERG_"))},
        "SONIK_HOME": str(tmp_path / "lakehouse"),
        "SONIK_SOURCE": "landing",
        "SONIK_LANDING_DIR": str(landing),
        "SONIK_START_DATE": str(DAYS[0]),
        "SONIK_LANDING_SETTLE_SECONDS": "0",
        "SONIK_LANDING_SWEEP_HOURS": "0.001",  # every tick lists every day (the days are not recent here)
    }
    settings = Settings.from_env(env)
    for day in DAYS:
        write_landing_day(landing, day, synthetic_batch(day, EVENTS), files=2)
    # The days were ingested and their marts built before (in process: quicker than through the daemon).
    from sonik_pipeline.definitions import build_definitions

    with dg.DagsterInstance.get() as instance:
        daily = (
            build_definitions(settings)
            .resolve_job_def("daily_job")
            .execute_in_process(
                tags={
                    "dagster/asset_partition_range_start": str(DAYS[0]),
                    "dagster/asset_partition_range_end": str(DAYS[-1]),
                },
                instance=instance,
            )
        )
        assert daily.success
    log = tmp_path / "daemon.log"
    with log.open("w") as out:
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        with dg.DagsterInstance.get() as instance:
            assert _country_plays(settings, LATE_DAY) == (EVENTS, EVENTS)

            # A phone that played offline uploads its plays of the 19th later.
            dropped = time.time()
            staging = tmp_path / "phone"
            [upload] = write_landing_day(staging, LATE_DAY, synthetic_batch(LATE_DAY, LATE_EVENTS, seed=5), files=1)
            Path(upload).rename(landing / "plays" / str(LATE_DAY) / "offline-upload.jsonl")

            late_ingest = _wait(
                "late ingest", lambda: _latest(instance, "plays", LATE_DAY, dropped), 240, log, instance
            )
            refreshed = _wait(
                "refreshed marts",
                lambda: (
                    _latest(instance, "daily_country_listening", LATE_DAY, late_ingest)
                    and _latest(instance, "top_artists_7d", DAYS[2], late_ingest)
                ),  # a 7-day window holding the 19th
                240,
                log,
                instance,
            )
            assert refreshed
            assert _country_plays(settings, LATE_DAY) == (EVENTS + LATE_EVENTS, EVENTS + LATE_EVENTS)
            [plays] = instance.fetch_materializations(
                dg.AssetRecordsFilter(dg.AssetKey("plays"), asset_partitions=[str(LATE_DAY)], after_timestamp=dropped),
                limit=1,
            ).records
            metadata = plays.asset_materialization.metadata
            assert metadata["late_data"].value == f"late files: 1, {LATE_EVENTS} events"
            # The other days were not ingested again.
            assert not any(_latest(instance, "plays", d, dropped) for d in (DAYS[0], DAYS[2]))
    finally:
        with suppress(ProcessLookupError):
            os.killpg(daemon.pid, signal.SIGKILL)
        daemon.wait(30)
