"""``make demo``'s story (``python -m sonik_pipeline.demo``, without ``dagster dev``), the commands it prints, and
the commands of the README and of docs/ run on its lakehouse (a docs block that cannot run there says why)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from sonik_pipeline.demo import DemoError, dagster_dev_env, demo_days, summary
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings

BIN = Path(sys.executable).parent
# The days docs/ uses in its examples (2026-04-19...2026-04-23: 04-20 holds the bad events, 04-21 the late
# upload), within one year so that the marts' year partitions hold every day of the story.
LAST_DAY = dt.date(2026, 4, 23)


def test_demo_days_are_a_first_batch_then_daily_runs() -> None:
    assert demo_days(5, LAST_DAY) == [dt.date(2026, 4, d) for d in range(19, 24)]
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
    assert story["start_date"] == "2026-04-19"
    assert (story["bad_day"], story["late_day"]) == ("2026-04-20", "2026-04-21")  # as docs/ tells it
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

    # And so does every block of docs/ not marked as not run, in page order, as a reader runs it from the
    # project folder: the lakehouse at ./lakehouse (SONIK_HOME unset), no SONIK_SOURCE, synthetic days of
    # the demo's size, the pages' example times, snapshot ids and user made the demo's
    (project / "lakehouse").symlink_to(home)
    (tmp_path / "tmp").mkdir()
    docs_env = {k: v for k, v in env.items() if k != "SONIK_HOME"}
    docs_env.update(SONIK_EVENTS_PER_DAY="2000", TMPDIR=str(tmp_path / "tmp"))
    user = most_active_user(catalog)
    for block in [b for b in docs_blocks() if b.language in RUN and not b.not_run]:
        code = with_demo_values(block.code, story, user)
        shell, script = ("bash", f"set -euo pipefail\n{code}") if block.language == "bash" else (sys.executable, code)
        ran = subprocess.run([shell, "-c", script], env=docs_env, cwd=project, capture_output=True, text=True)
        assert ran.returncode == 0, (block.where, code, ran.stdout[-2000:], ran.stderr[-2000:])
        assert "(0 rows)" not in ran.stdout, (block.where, code, ran.stdout[-2000:])  # an example shows something


README = Path(__file__).resolve().parents[1] / "README.md"
DOCS = README.parent / "docs"
# A docs block this test cannot run says why just before it, in a comment the rendered page does not show.
NOT_RUN = re.compile(r"<!-- not run by test_demo: (?P<reason>\S.*?) -->")
RUN = ("bash", "python")  # bash with `set -euo pipefail`; python with the venv's interpreter
NO_COMMANDS = ("text",)  # listings and output


@dataclass(frozen=True)
class DocBlock:
    where: str  # page:line
    language: str
    code: str
    not_run: str  # why not, "" for a block the demo test runs


def readme_command_blocks() -> list[str]:
    """The README's bash blocks that run `sonik` (the set-up block's `make` commands are what CI runs)."""
    text = README.read_text()
    blocks = [b.split("\n", 1)[1] for b in text.split("```")[1::2] if b.startswith("bash\n")]
    return [b for b in blocks if ".venv/bin/sonik" in b and "make " not in b]


def docs_blocks() -> list[DocBlock]:
    """Every fenced block of docs/*.md, pages in name order, also those indented in a list."""
    blocks = []
    for page in sorted(DOCS.glob("*.md")):
        lines = page.read_text().splitlines()
        start = 0
        while start < len(lines):
            fence = re.fullmatch(r"(\s*)```(\S*)\s*", lines[start])
            if not fence:
                start += 1
                continue
            indent, language = fence.groups()
            end = next(i for i in range(start + 1, len(lines)) if lines[i].strip() == "```")
            code = "\n".join(line.removeprefix(indent) for line in lines[start + 1 : end])
            before = next((line.strip() for line in reversed(lines[:start]) if line.strip()), "")
            marker = NOT_RUN.fullmatch(before)
            blocks.append(DocBlock(f"{page.name}:{start + 1}", language, code, marker["reason"] if marker else ""))
            start = end + 1
    return blocks


def with_demo_values(code: str, story: dict, user_id: int) -> str:
    """A docs block with the demo's values for what its days do not fix: every time (the demo commits at the
    wall clock) the moment before the late upload, the two SNAPSHOT_IDs the snapshots before and after it,
    user 4242 the most active user. The days need nothing: the demo's are the pages' (LAST_DAY)."""
    code = re.sub(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\b", story["before_late"], code)
    snapshots = iter([story["before_late_snapshot"], story["snapshots"]["late"]])
    code = re.sub(r"\bSNAPSHOT_ID\b", lambda _: next(snapshots), code)
    return code.replace("sonik user 4242 ", f"sonik user {user_id} ")


def most_active_user(catalog) -> int:
    plays = catalog.load_table("music.plays").scan(selected_fields=("user_id",)).to_arrow()
    counts = plays.group_by("user_id").aggregate([("user_id", "count")]).sort_by([("user_id_count", "descending")])
    return counts.column("user_id")[0].as_py()


def test_every_docs_block_is_run_by_the_demo_test_or_says_why_not() -> None:
    blocks = docs_blocks()
    # Then each block is run (bash, python), holds no command (text), or says why it is not run
    unknown = [f"{b.where}: ```{b.language}" for b in blocks if b.language not in (*RUN, *NO_COMMANDS)]
    assert not unknown, f"neither run nor marked `<!-- not run by test_demo: why -->`: {unknown}"
    assert not [b.where for b in blocks if b.not_run and b.language in NO_COMMANDS]
    # and every marker is one just before a block, with its reason
    lines = [line.strip() for page in DOCS.glob("*.md") for line in page.read_text().splitlines()]
    markers = sum(1 for line in lines if line.startswith("<!-- not run by test_demo"))
    assert markers == sum(1 for b in blocks if b.not_run), "a not-run marker not just before a block, or with no reason"
    # and the pages' own commands are among those run
    run = {b.where.split(":")[0] for b in blocks if b.language in RUN and not b.not_run}
    assert {"operating.md", "late-data.md", "maintenance.md", "pipeline.md"} <= run, run


def test_docs_examples_take_the_demo_values() -> None:
    story = {"before_late": "2030-01-02T03:04:05", "before_late_snapshot": "11", "snapshots": {"late": "22"}}
    code = [
        "sonik diff t --from SNAPSHOT_ID --to SNAPSHOT_ID",
        "sonik sql --as-of 2026-04-20T12:00:00 q",
        "sonik user 4242 --year 2026",
    ]
    assert with_demo_values("\n".join(code), story, 7).splitlines() == [
        "sonik diff t --from 11 --to 22",
        "sonik sql --as-of 2030-01-02T03:04:05 q",
        "sonik user 7 --year 2026",
    ]


def test_the_readme_has_its_tour_and_its_four_uses_to_run() -> None:
    blocks = readme_command_blocks()
    assert len(blocks) == 2
    assert "sonik export" in blocks[1] and "sonik user" in blocks[1] and "sonik diff" in blocks[1]


def _uri_and_warehouse(home: Path) -> tuple[str, str]:
    settings = Settings.from_env({"SONIK_HOME": str(home)})
    return settings.catalog_uri, settings.warehouse
