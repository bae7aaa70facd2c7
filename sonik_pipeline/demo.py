"""``make demo``: a week of the lakehouse's life in a few minutes, told with the project's own commands.

The app uploads JSON Lines files to the landing zone (``SONIK_SOURCE=landing``), a first batch of days
is backfilled in one run, then the last days are ingested one run each, as the daily schedule would,
one of them with a file of bad events. An offline upload arrives for a day already ingested and that
day is ingested again (what ``landing_sensor`` would start). ``compaction_job`` then merges the small
files those runs left, and ``expiry_job`` expires the oldest snapshots while keeping the newest five,
so time travel still reaches back before the late upload. Every step is a real ``dagster`` command
on ``DAGSTER_HOME``, so the runs show in the UI. The story ends with commands to try, using its real
days, times and snapshot ids; they are kept in ``SONIK_HOME/demo.json`` (and ``make demo`` on a
lakehouse that has them prints them again rather than telling the story twice).

    python -m sonik_pipeline.demo [--days 7] [--events 20000]   # the story, then the commands to try
    python -m sonik_pipeline.demo env                           # SONIK_START_DATE/SONIK_SOURCE for dagster dev
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

DEFAULT_DAYS = 7
DEFAULT_EVENTS = 20_000
DAILY_RUNS = 4  # the last days, one run each
LATE_EVENTS = 150
RETAIN_LAST = 5  # expiry keeps this many newest snapshots of each table
STORY_FILE = "demo.json"
# The command-line runs print Dagster's advice to use its newer `dg` commands; the demo shows these
# on purpose (they are the ones docs/operating.md teaches), so that notice alone is left out.
QUIET_DAGSTER_CLI = ",".join(
    f"ignore:Function `{name}` is superseded" for name in ("asset_materialize_command", "job_execute_command")
)
# The run logs at INFO: what each step did (days written, rejects, late files, files merged, snapshots expired).
RUN_LOG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


class DemoError(Exception):
    """Why the demo cannot run here, as one line."""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _iso(when: dt.datetime) -> str:
    """A time as ``sonik sql --as-of`` takes it: UTC, without an offset."""
    return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def story_path(home: Path) -> Path:
    return home / STORY_FILE


def demo_days(days: int, last_day: dt.date) -> list[dt.date]:
    if days < DAILY_RUNS + 1:
        raise DemoError(f"--days must be at least {DAILY_RUNS + 1}: a first batch, then {DAILY_RUNS} daily runs")
    return [last_day - dt.timedelta(days=days - 1 - i) for i in range(days)]


class Demo:
    """The story's steps, each a real command with the demo's environment, and what they left."""

    def __init__(self, home: Path, days: list[dt.date], events: int, bin_dir: Path, out=sys.stdout) -> None:
        self.home = home
        self.days = days
        self.events = events
        self.bin = bin_dir
        self.out = out
        self.env = {
            **os.environ,
            "SONIK_HOME": str(home),
            "SONIK_SOURCE": "landing",
            "SONIK_START_DATE": str(days[0]),
            "PYTHONWARNINGS": ",".join(filter(None, [os.environ.get("PYTHONWARNINGS"), QUIET_DAGSTER_CLI])),
        }

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def settings(self):
        from sonik_pipeline.settings import Settings

        return Settings.from_env(self.env)

    def catalog(self):
        from sonik_pipeline.lakehouse.tables.catalog import open_catalog
        from sonik_pipeline.settings import CATALOG_NAME

        settings = self.settings()
        return open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)

    def plays_snapshot(self) -> int:
        return self.catalog().load_table("music.plays").current_snapshot().snapshot_id

    def dagster(self, *args: str, config: Mapping | None = None) -> None:
        """A ``dagster`` command on the code location, its run's log at INFO; shown with its op config, if any."""
        shown = ["dagster", *args] + (["--config-json", json.dumps(config)] if config else [])
        self.say("$ " + shlex.join(shown))
        with tempfile.TemporaryDirectory(prefix="sonik-demo-") as folder:
            run_config = Path(folder) / "run_config.yaml"  # JSON is YAML: `dagster job execute` takes files only
            run_config.write_text(json.dumps({**RUN_LOG, **(config or {})}))
            argv = [str(self.bin / "dagster"), *args, "-m", "sonik_pipeline.definitions", "-c", str(run_config)]
            done = subprocess.run(argv, env=self.env, stdout=self.out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise DemoError(f"`dagster {' '.join(args)}` failed (exit {done.returncode}); its log is above")

    def land(self, day: dt.date, files: int = 4) -> None:
        from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
        from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch

        settings = self.settings()
        write_landing_day(settings.landing_dir, day, synthetic_batch(day, self.events), files=files)

    def land_file(self, day: dt.date, name: str, lines: Sequence[str]) -> None:
        """One more file in a day's folder, whole or not at all, as the quarantine's replay writes one."""
        from sonik_pipeline.lakehouse.sources.landing import LandingZone
        from sonik_pipeline.lakehouse.sources.landing_writer import atomic_landing_file

        zone = LandingZone.at(self.settings().landing_dir)
        with atomic_landing_file(zone, day, name) as out:
            out.write("".join(line + "\n" for line in lines).encode())

    def materialize(self, first: dt.date, last: dt.date | None = None) -> None:
        where = ["--partition-range", f"{first}...{last}"] if last else ["--partition", str(first)]
        self.dagster("asset", "materialize", "--select", "plays*", *where)

    def tell(self) -> dict:
        days, first_batch, daily = self.days, self.days[:-DAILY_RUNS], self.days[-DAILY_RUNS:]
        bad_day, late_day = daily[0], daily[1]
        started = time.monotonic()

        self.say(f"\n== 1. The app uploads {first_batch[0]}...{first_batch[-1]}; one backfill run ingests them")
        for day in first_batch:
            self.land(day)
        self.materialize(first_batch[0], first_batch[-1])
        snapshots = {"backfill": self.plays_snapshot()}

        self.say(f"\n== 2. Then a run a day, as the daily schedule would; {bad_day} also holds bad events")
        for day in daily:
            self.land(day)
            if day == bad_day:
                self.land_file(day, "from-an-old-app.jsonl", bad_events(day, self.events))
            self.materialize(day)
            snapshots[str(day)] = self.plays_snapshot()
        before_late = _now()
        time.sleep(1.5)  # --as-of takes whole seconds: the late upload's commit is after this one

        self.say(f"\n== 3. An offline upload arrives for {late_day}, ingested already; the day is ingested again")
        self.land_file(late_day, "offline-upload.jsonl", late_events(late_day, LATE_EVENTS))
        self.materialize(late_day)
        snapshots["late"] = self.plays_snapshot()

        self.say("\n== 4. The nightly maintenance: compaction merges the small files, expiry the oldest snapshots")
        self.dagster("job", "execute", "-j", "compaction_job")
        expiry = {"retention_days": 0, "retain_last": RETAIN_LAST}
        self.dagster(
            "job", "execute", "-j", "expiry_job", config={"ops": {"expire_table_snapshots": {"config": expiry}}}
        )

        story = {
            "made": _iso(_now()),
            "seconds": round(time.monotonic() - started),
            "start_date": str(days[0]),
            "days": [str(days[0]), str(days[-1])],
            "bad_day": str(bad_day),
            "late_day": str(late_day),
            "before_late": _iso(before_late),
            "before_late_snapshot": str(snapshots[str(daily[-1])]),
            "snapshots": {k: str(v) for k, v in snapshots.items()},
        }
        story["commands"] = next_commands(story)
        story_path(self.home).write_text(json.dumps(story, indent=2) + "\n")
        return story


def bad_events(day: dt.date, events: int) -> list[str]:
    """A few events as a buggy client sends them, each broken another way, and one good one sent twice."""
    from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch

    good = _json_events(synthetic_batch(day, 4, seed=7))
    resent = _json_events(synthetic_batch(day, events).slice(0, 1))[0]  # part-000's first event again
    missing, early, too_long = good[0], good[1], good[2]
    del missing["track_id"]
    early["played_at"] = f"{day - dt.timedelta(days=1)}T23:59:30.000000Z"  # the clock of a phone abroad
    too_long["duration_seconds"] = -40
    lines = [json.dumps(e) for e in (missing, early, too_long, good[3], resent)]
    lines.insert(3, json.dumps(good[3])[:57])  # an upload cut short
    return lines


def late_events(day: dt.date, n: int) -> list[str]:
    from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch

    return [json.dumps(e) for e in _json_events(synthetic_batch(day, n, seed=1))]


def _json_events(table) -> list[dict]:
    rows = table.to_pylist()
    for row in rows:
        row["played_at"] = row["played_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return rows


def next_commands(story: Mapping) -> list[tuple[str, str]]:
    """(what it shows, the command) for the summary; each runs as shown from the project folder (a shell
    reads the SQL in double quotes as written: it holds no ``$``, backquote or backslash)."""
    day = dt.date.fromisoformat(story["late_day"])
    count = (
        "SELECT count(*) AS plays FROM music.plays "
        f"WHERE played_at >= TIMESTAMP '{day}' AND played_at < TIMESTAMP '{day + dt.timedelta(days=1)}'"
    )
    before_late = story["before_late_snapshot"]
    return [
        ("every table: rows, files, snapshots", "sonik tables"),
        ("each commit of music.plays, with its run", "sonik snapshots music.plays"),
        ("the quarantine: events by reason", "sonik rejects"),
        (
            f"where replay would send {story['bad_day']}'s misfiled event",
            f"sonik rejects replay --day {story['bad_day']} --dry-run",
        ),
        (f"{day} before the late upload", f'sonik sql --as-of {story["before_late"]} "{count}"'),
        (f"{day} now, with it", f'sonik sql "{count}"'),
        ("what the late upload changed", f"sonik diff music.plays --from {before_late}"),
        (f"every commit that changed {day}", f"sonik history music.plays --day {day}"),
        (
            "the week's top artists, from a mart",
            'sonik sql "SELECT artist, sum(plays) AS plays FROM music_marts.daily_top_artists '
            'GROUP BY 1 ORDER BY 2 DESC LIMIT 5"',
        ),
    ]


def summary(story: Mapping, home: Path, cwd: Path) -> str:
    days = "...".join(story["days"])
    lines = [
        "",
        f"The demo lakehouse in {home}: {days} from landing files, in {len(story['snapshots'])} ingest runs,",
        f"with bad events quarantined on {story['bad_day']}, a late upload to {story['late_day']} ingested again,",
        "the small files compacted and the oldest snapshots expired. Try, from the project folder:",
        "",
    ]
    if home.resolve() != (cwd / "lakehouse").resolve():
        lines.append(f"export SONIK_HOME={shlex.quote(str(home))}")
    for what, command in story["commands"]:
        lines.append(f"# {what}")
        lines.append(f".venv/bin/{command}")
    lines.append("")
    lines.append(
        "The UI (make dev) shows the runs, plays' late_files and rejected_by_reason, "
        "and expiry_job's snapshots_expired."
    )
    return "\n".join(lines)


def dagster_dev_env(home: Path, environ: Mapping[str, str]) -> list[str]:
    """NAME=VALUE for ``dagster dev`` on a demo lakehouse (none elsewhere): its days and its source, where unset."""
    try:
        story = json.loads(story_path(home).read_text())
    except (OSError, ValueError):
        return []
    wanted = {"SONIK_START_DATE": story["start_date"], "SONIK_SOURCE": "landing"}
    return [f"{name}={value}" for name, value in wanted.items() if not environ.get(name)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sonik_pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=("story", "env"), default="story")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS, help=f"days of plays (default {DEFAULT_DAYS})")
    parser.add_argument("--events", type=int, default=DEFAULT_EVENTS, help="events per day (default 20,000)")
    parser.add_argument("--last-day", type=dt.date.fromisoformat, help="the newest day (default: yesterday, UTC)")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("SONIK_HOME") or "lakehouse").resolve()
    if args.what == "env":
        print(" ".join(dagster_dev_env(home, os.environ)))
        return 0
    try:
        if story_path(home).exists():
            story = json.loads(story_path(home).read_text())
            print(f"{home} already holds the demo, made {story['made']} UTC (remove it to make it again).")
        else:
            last_day = args.last_day or _now().date() - dt.timedelta(days=1)
            demo = Demo(home, demo_days(args.days, last_day), args.events, Path(sys.executable).parent)
            if _has_plays(demo):
                raise DemoError(f"{home} already holds music.plays: the demo needs a lakehouse of its own")
            story = demo.tell()
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    print(summary(story, home, Path.cwd()))
    return 0


def _has_plays(demo: Demo) -> bool:
    if not (demo.home / "catalog.db").exists() and demo.settings().catalog_uri.startswith("sqlite"):
        return False
    return demo.catalog().table_exists("music.plays")


if __name__ == "__main__":
    sys.exit(main())
