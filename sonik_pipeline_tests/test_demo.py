"""``make demo``'s story (``python -m sonik_pipeline.demo``, without ``dagster dev``) and the commands it prints."""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from sonik_pipeline.demo import DemoError, dagster_dev_env, demo_days, summary
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings

BIN = Path(sys.executable).parent
# Mid-year, so that the marts' year partitions hold every day of the story.
LAST_DAY = dt.date(2025, 6, 10)


def test_demo_days_are_a_first_batch_then_daily_runs() -> None:
    assert demo_days(5, LAST_DAY) == [dt.date(2025, 6, d) for d in range(6, 11)]
    with pytest.raises(DemoError, match="at least 5"):
        demo_days(4, LAST_DAY)


def test_dagster_dev_env_only_on_a_demo_lakehouse_and_never_over_a_set_value(tmp_path: Path) -> None:
    # Given no demo, then a demo lakehouse
    assert dagster_dev_env(tmp_path, {}) == []
    (tmp_path / "demo.json").write_text(json.dumps({"start_date": "2025-06-06"}))
    # Then its days and source, unless the user set them
    assert dagster_dev_env(tmp_path, {}) == ["SONIK_START_DATE=2025-06-06", "SONIK_SOURCE=landing"]
    assert dagster_dev_env(tmp_path, {"SONIK_START_DATE": "2025-01-01"}) == ["SONIK_SOURCE=landing"]


def test_summary_names_a_lakehouse_other_than_the_default(tmp_path: Path) -> None:
    story = {
        "days": ["a", "b"],
        "snapshots": {},
        "bad_day": "x",
        "late_day": "y",
        "commands": [("all", "sonik tables")],
    }
    assert "export SONIK_HOME" not in summary(story, tmp_path / "lakehouse", tmp_path)
    assert f"export SONIK_HOME={tmp_path / 'other'}" in summary(story, tmp_path / "other", tmp_path)
    assert ".venv/bin/sonik tables" in summary(story, tmp_path / "lakehouse", tmp_path)


@pytest.mark.slow
def test_the_demo_tells_its_story_and_its_commands_work(tmp_path: Path) -> None:
    # Given an empty folder
    home = tmp_path / "lakehouse"
    env = {**os.environ, "SONIK_HOME": str(home)}
    argv = [sys.executable, "-m", "sonik_pipeline.demo", "--days", "5", "--events", "2000", "--last-day", str(LAST_DAY)]

    # When the demo runs
    done = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)

    # Then it succeeds, without Dagster's notices about the features the project chose
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "Warning" not in output
    story = json.loads((home / "demo.json").read_text())
    assert story["start_date"] == "2025-06-06"
    assert "$ dagster job execute -j expiry_job" in output and ".venv/bin/sonik rejects" in output

    catalog = open_catalog(CATALOG_NAME, *_uri_and_warehouse(home))
    plays = catalog.load_table("music.plays")
    # several snapshots of music.plays, the oldest expired (6 ingest runs, 5 kept)
    assert len(plays.snapshots()) == 5
    assert "sonik.expired-history" in plays.properties
    # quarantined events, for several reasons
    rejected = catalog.load_table("music.plays_rejected").scan().to_arrow()
    reasons = {reason.split(" (")[0] for reason in rejected.column("reason").to_pylist()}
    assert len(reasons) >= 4, reasons
    # a late file recorded on the late day's ingest
    instance = dg.DagsterInstance.get()
    latest = instance.get_latest_materialization_event(dg.AssetKey("plays")).asset_materialization
    assert latest.partition == story["late_day"]
    assert latest.metadata["late_files"].value == 1
    # a compaction that merged files
    compactions = [
        s.summary
        for name in catalog.list_tables("music_marts")
        for s in catalog.load_table(name).snapshots()
        if s.summary.get("sonik.operation") == "compaction"
    ]
    assert any(int(s["deleted-data-files"]) > int(s["added-data-files"]) for s in compactions), compactions
    # every mart non-empty
    for name in catalog.list_tables("music_marts"):
        assert catalog.load_table(name).scan().to_arrow().num_rows > 0, name

    # And every command the summary prints works, and the late upload shows through time travel
    answers = {}
    for what, command in story["commands"]:
        words = shlex.split(command)
        ran = subprocess.run([str(BIN / words[0]), *words[1:]], env=env, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0 and ran.stdout.strip(), (command, ran.stdout, ran.stderr)
        answers[what] = ran.stdout
    late_day = story["late_day"]
    assert answers[f"{late_day} before the late upload"] != answers[f"{late_day} now, with it"]

    # And the README's own commands (its tour and its four uses) run on the demo's lakehouse as written,
    # from a folder laid out like the project's, the clock fixed at the day after the demo's last
    project = tmp_path / "project"
    project.mkdir()
    (project / ".venv").symlink_to(BIN.parent)
    for block in readme_command_blocks():
        script = block.replace("$(date -u -d yesterday +%F)", str(LAST_DAY))
        ran = subprocess.run(
            ["bash", "-c", f"set -euo pipefail\n{script}"], env=env, cwd=project, capture_output=True, text=True
        )
        assert ran.returncode == 0 and ran.stdout.strip(), (script, ran.stdout[-2000:], ran.stderr[-2000:])


README = Path(__file__).resolve().parents[1] / "README.md"


def readme_command_blocks() -> list[str]:
    """The README's bash blocks that run `sonik` (the set-up block's `make` commands are what CI runs)."""
    text = README.read_text()
    blocks = [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith("bash\n")]
    return [b for b in blocks if ".venv/bin/sonik" in b and "make " not in b]


def test_the_readme_has_its_tour_and_its_four_uses_to_run() -> None:
    blocks = readme_command_blocks()
    assert len(blocks) == 2
    assert "sonik export" in blocks[1] and "sonik user" in blocks[1] and "sonik diff" in blocks[1]


def _uri_and_warehouse(home: Path) -> tuple[str, str]:
    settings = Settings.from_env({"SONIK_HOME": str(home)})
    return settings.catalog_uri, settings.warehouse
