"""The UI, end to end: a real `dagster dev` (webserver and daemon), a run launched through GraphQL, a real browser.

One `dagster dev` serves the whole module and one run of `daily_job` is launched once for it (both are
module-scoped fixtures), so each test can run alone, first or last, and the module costs one start-up and
one run. The server gets its own DAGSTER_HOME, SONIK_HOME and process group; teardown stops the group and
fails if any process that saw this DAGSTER_HOME outlived it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.marts.queries import DAILY_MARTS, ROLLING_MARTS
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.lakehouse.tables.definitions import MARTS
from sonik_pipeline.settings import CATALOG_NAME

if TYPE_CHECKING:
    from playwright.sync_api import Page

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"
DAY = "2026-04-20"
NEXT_DAY = "2026-04-21"
EVENTS_PER_DAY = 500
JOB = "daily_job"
MART_NAMES = tuple(mart.name for mart in (*DAILY_MARTS, *ROLLING_MARTS))

STARTUP_TIMEOUT_SECONDS = 120
RUN_TIMEOUT_SECONDS = 240
STOP_GRACE_SECONDS = 20
UI_TIMEOUT_MS = 60_000
RUN_TERMINAL_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
# Tall enough for the whole horizontal graph (plays, then the marts and the rolling views stacked) at full size.
VIEWPORT = {"width": 1440, "height": 2000}
SCREENSHOTS_ENV = "SONIK_UI_SCREENSHOTS"

WORKSPACE = """
query Workspace {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
  }
  repositoriesOrError {
    __typename
    ... on RepositoryConnection { nodes { name location { name } jobs { name } } }
  }
}"""

LAUNCH_RUN = """
mutation LaunchRun($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on Error { message }
    ... on RunConfigValidationInvalid { errors { message } }
  }
}"""

RUN_STATUS = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status tags { key value } } ... on Error { message } }
}"""

RUN_EVENTS = """
query RunEvents($runId: ID!) {
  logsForRun(runId: $runId, limit: 5000) {
    __typename
    ... on EventConnection {
      events { __typename ... on MessageEvent { message stepKey } ... on ErrorEvent { error { message } } }
    }
    ... on Error { message }
  }
}"""

ASSET_GROUPS = "query AssetGroups { assetNodes { groupName } }"

PLAYS_OBSERVATIONS = """
query PlaysObservations {
  assetOrError(assetKey: {path: ["plays"]}) {
    ... on Asset {
      assetObservations(limit: 50) {
        metadataEntries {
          label
          ... on IntMetadataEntry { intValue }
          ... on FloatMetadataEntry { floatValue }
        }
      }
    }
  }
}"""
# Among the health figures observed on each table's asset: the ones the Plots tab must draw.
HEALTH_PLOTS = ("data_files", "small_files", "snapshots", "manifests", "oldest_snapshot_age_hours")


@dataclass(frozen=True)
class DagsterDev:
    """A running `dagster dev` and where it keeps things, so tests and failure messages can look inside."""

    url: str
    sonik_home: Path
    log_path: Path
    job_selector: dict[str, str]

    def log_tail(self, chars: int = 6000) -> str:
        """The end of the server's own stdout/stderr: the first place to look when it or a run misbehaves."""
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass(frozen=True)
class FinishedRun:
    run_id: str
    tags: dict[str, str]


# --- talking to the server -------------------------------------------------------------------------------------


def _graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST one GraphQL request; GraphQL-level errors fail loudly, since they mean a query here is wrong."""
    request = urllib.request.Request(
        f"{url}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        body = json.load(response)
    if body.get("errors"):
        raise AssertionError(f"GraphQL errors: {json.dumps(body['errors'], indent=2)}")
    return body["data"]


def _job_selector(url: str, job_name: str) -> dict[str, str] | None:
    """The selector for ``job_name`` as the server names it, or None while the code location is still loading.

    The names come from the server (repositoriesOrError) rather than being guessed: a Definitions object
    loaded from a module is served as the repository ``__repository__`` of the location named in workspace.yaml.
    A location that failed to load fails the test at once, with the server's error, instead of timing out.
    """
    data = _graphql(url, WORKSPACE)
    for entry in data["workspaceOrError"].get("locationEntries", []):
        error = entry["locationOrLoadError"]
        if error and error["__typename"] == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load: {error['message']}")
    for repo in data["repositoriesOrError"].get("nodes", []):
        if any(job["name"] == job_name for job in repo["jobs"]):
            return {
                "repositoryLocationName": repo["location"]["name"],
                "repositoryName": repo["name"],
                "jobName": job_name,
            }
    return None


def _wait_for_job(url: str, process: subprocess.Popen[bytes], log_path: Path) -> dict[str, str]:
    """Poll until the server answers and has loaded the job: `dagster dev` takes ~15 s to import everything."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"dagster dev exited with {process.returncode}:\n{log_path.read_text(errors='replace')[-6000:]}"
            )
        try:
            selector = _job_selector(url, JOB)
        except (OSError, ValueError) as exc:  # refused, reset or half-started (non-JSON) while it boots
            last_error = repr(exc)
        else:
            if selector is not None:
                return selector
            last_error = f"{JOB} not loaded yet"
        time.sleep(1)
    pytest.fail(
        f"dagster dev did not serve {JOB} within {STARTUP_TIMEOUT_SECONDS}s ({last_error}):\n"
        f"{log_path.read_text(errors='replace')[-6000:]}"
    )


def _launch_partition_run(server: DagsterDev, partition_key: str) -> str:
    """Launch the job for one day exactly as the UI's Materialize button does: a run tagged with its partition."""
    params = {
        "selector": server.job_selector,
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition_key}]},
    }
    result = _graphql(server.url, LAUNCH_RUN, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", f"launchRun answered {json.dumps(result, indent=2)}"
    return result["run"]["runId"]


def _run_status(server: DagsterDev, run_id: str) -> tuple[str, dict[str, str]]:
    run = _graphql(server.url, RUN_STATUS, {"runId": run_id})["runOrError"]
    assert run["__typename"] == "Run", f"runOrError answered {run}"
    return run["status"], {tag["key"]: tag["value"] for tag in run["tags"]}


def _run_events_tail(server: DagsterDev, run_id: str, count: int = 40) -> str:
    """The run's last events with their errors: what the Runs page would show for a failed run."""
    connection = _graphql(server.url, RUN_EVENTS, {"runId": run_id})["logsForRun"]
    lines = []
    for event in connection.get("events", [])[-count:]:
        error = (event.get("error") or {}).get("message", "")
        lines.append(
            f"{event['__typename']} [{event.get('stepKey') or '-'}] {event.get('message', '')} {error}".strip()
        )
    return "\n".join(lines) or json.dumps(connection)


def _wait_for_run(server: DagsterDev, run_id: str) -> FinishedRun:
    """Poll the run (queued, then started by the daemon) until it ends; anything but SUCCESS fails with its events."""
    started = time.monotonic()
    status, tags = _run_status(server, run_id)
    while status not in RUN_TERMINAL_STATUSES and time.monotonic() - started < RUN_TIMEOUT_SECONDS:
        time.sleep(1)
        status, tags = _run_status(server, run_id)
    if status != "SUCCESS":
        pytest.fail(
            f"run {run_id} of {JOB} is {status} after {time.monotonic() - started:.0f}s; its last events:\n"
            f"{_run_events_tail(server, run_id)}\n\ndagster dev log tail:\n{server.log_tail()}"
        )
    return FinishedRun(run_id, tags)


# --- starting and stopping the server ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Only the run under test executes. Runs that the daemon's schedules and sensors request (the marts' automation
# following plays over a window of days, the freshness checks, the 00:30 UTC daily schedule) wait in the queue:
# they would race the run for two CPUs, and a schedule could change what "the latest materialization" is.
# (The UI still lists them, queued, which is what the graph shows on nodes that such a run would touch.)
DAGSTER_YAML = """\
telemetry:
  enabled: false
run_queue:
  tag_concurrency_limits:
    - key: dagster/sensor_name
      limit: 0
    - key: dagster/schedule_name
      limit: 0
"""


def _write_dagster_home(dagster_home: Path) -> None:
    """The instance config above, and the community pop-up already seen (as after clicking Skip): it would
    cover the screenshots."""
    (dagster_home / ".nux").mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)
    (dagster_home / ".nux" / "nux.yaml").write_text("seen: 1\n")


def _server_env(root: Path, dagster_home: Path, sonik_home: Path) -> dict[str, str]:
    """The developer's environment minus SONIK_*/PYICEBERG_* and ~/.pyiceberg.yaml: only this test's lakehouse."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONIK_", "PYICEBERG_"))}
    env.update(
        DAGSTER_HOME=str(dagster_home),
        SONIK_HOME=str(sonik_home),
        SONIK_EVENTS_PER_DAY=str(EVENTS_PER_DAY),
        HOME=str(root / "home"),
    )
    return env


def _default_interrupt_signals() -> None:
    """Runs in the child before exec. A shell that starts pytest in the background leaves SIGINT ignored, and
    `dagster dev` gives SIGTERM whatever SIGINT has, so without this it would ignore our SIGTERM too."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:  # the whole group is gone already
        pass


def _stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM lets `dagster dev` shut its webserver, daemon and code servers down; SIGKILL takes what is left
    (run workers, step processes, compute-log tails all live in the same group, started with a new session)."""
    _signal_group(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()


def _processes_seeing(dagster_home: Path) -> list[int]:
    """Live processes started with this DAGSTER_HOME: after the group is gone, any of them escaped it."""
    marker = f"DAGSTER_HOME={dagster_home}".encode()
    pids = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = (entry / "environ").read_bytes()  # empty for zombies, which are harmless
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids


def _assert_no_orphans(dagster_home: Path) -> None:
    """Give dying processes a moment, then kill and report any survivor: a test must not leave servers behind."""
    deadline = time.monotonic() + 5
    while (survivors := _processes_seeing(dagster_home)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in survivors:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not survivors, f"processes outlived the dagster dev process group: {survivors}"


# --- fixtures ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """`dagster dev` from the repository root (workspace.yaml), as `make dev` starts it, on a free loopback port."""
    root = tmp_path_factory.mktemp("dagster_ui")
    dagster_home, sonik_home, log_path = root / "dagster_home", root / "lakehouse", root / "dagster_dev.log"
    _write_dagster_home(dagster_home)
    (root / "home").mkdir()
    url = f"http://127.0.0.1:{_free_port()}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-h", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
            cwd=REPO_ROOT,
            env=_server_env(root, dagster_home, sonik_home),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_default_interrupt_signals,  # two sigaction calls between fork and exec, nothing more
        )
    try:
        selector = _wait_for_job(url, process, log_path)
        yield DagsterDev(url, sonik_home, log_path, selector)
    finally:
        _stop_process_group(process)
        _assert_no_orphans(dagster_home)


@pytest.fixture(scope="module")
def daily_run(dagster_dev: DagsterDev) -> FinishedRun:
    """One run of daily_job for DAY, shared by the module's tests whichever of them asks first."""
    return _wait_for_run(dagster_dev, _launch_partition_run(dagster_dev, DAY))


@pytest.fixture(scope="module")
def screenshot_export_dir() -> Path | None:
    """Where to copy screenshots besides tmp_path. Read here, at module scope, because the suite's autouse fixture
    removes every SONIK_* variable from the environment for the duration of each test."""
    value = os.environ.get(SCREENSHOTS_ENV)
    return Path(value) if value else None


def _open_lakehouse(sonik_home: Path) -> Catalog:
    return open_catalog(CATALOG_NAME, f"sqlite:///{sonik_home}/catalog.db", (sonik_home / "warehouse").as_uri())


def _snapshots_of(table: Table, run_id: str) -> list[str]:
    """The partitions of the table's snapshots committed by this run (their summaries carry run id and day)."""
    return [
        s.summary.get("dagster.partition", "") for s in table.snapshots() if s.summary.get("dagster.run-id") == run_id
    ]


def _plays_snapshot_id(sonik_home: Path, run_id: str) -> str:
    """The snapshot the run committed to music.plays: the value the asset page must show as snapshot_id."""
    plays = _open_lakehouse(sonik_home).load_table("music.plays")
    (snapshot,) = [s for s in plays.snapshots() if s.summary.get("dagster.run-id") == run_id]
    return str(snapshot.snapshot_id)


# --- tests -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_daily_job_run_launched_through_graphql_fills_plays_and_every_mart(
    dagster_dev: DagsterDev, daily_run: FinishedRun
) -> None:
    assert dagster_dev.job_selector == {
        "repositoryLocationName": "sonik_pipeline",
        "repositoryName": "__repository__",
        "jobName": JOB,
    }
    assert daily_run.tags["dagster/partition"] == DAY
    catalog = _open_lakehouse(dagster_dev.sonik_home)

    plays = catalog.load_table("music.plays")
    played_days = Counter(ts.date().isoformat() for ts in plays.scan().to_arrow()["played_at"].to_pylist())
    assert played_days[DAY] == EVENTS_PER_DAY, dict(played_days)
    assert _snapshots_of(plays, daily_run.run_id) == [DAY]

    assert sorted(name for _, name in catalog.list_tables(MARTS)) == sorted(MART_NAMES)
    for name in MART_NAMES:
        mart = catalog.load_table(f"{MARTS}.{name}")
        mart_days = Counter(day.isoformat() for day in mart.scan().to_arrow()["day"].to_pylist())
        assert mart_days[DAY] > 0, f"{MARTS}.{name} has no rows for {DAY}: {dict(mart_days)}"
        assert DAY in _snapshots_of(mart, daily_run.run_id), f"run {daily_run.run_id} did not commit {name} {DAY}"


def _screenshot(page: Page, path: Path, export_dir: Path | None) -> Path:
    """A full-page PNG in the test's tmp_path, copied to the export folder (CI artifacts) when one is set."""
    page.screenshot(path=str(path), full_page=True)
    if export_dir is not None:
        export_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, export_dir / path.name)
    return path


def _lineage_url(server: DagsterDev) -> str:
    """The global asset lineage with every group expanded: with several groups the UI shows them collapsed,
    hiding asset names. ``expanded`` is the UI's own URL state; its ids are ``global@global:<group>``."""
    groups = sorted({node["groupName"] for node in _graphql(server.url, ASSET_GROUPS)["assetNodes"]})
    return f"{server.url}/asset-groups?expanded=" + ",".join(f"global@global:{group}" for group in groups)


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Debian chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
)
def test_the_ui_draws_the_asset_graph_and_shows_the_latest_plays_metadata(
    dagster_dev: DagsterDev, daily_run: FinishedRun, tmp_path: Path, screenshot_export_dir: Path | None
) -> None:
    # Imported here so that the GraphQL test above never needs the browser stack.
    from playwright.sync_api import sync_playwright

    snapshot_id = _plays_snapshot_id(dagster_dev.sonik_home, daily_run.run_id)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(UI_TIMEOUT_MS)

            page.goto(_lineage_url(dagster_dev))
            for name in ("plays", *MART_NAMES):
                page.get_by_text(name, exact=True).first.wait_for()
            # The nodes' live data arrives after the names: wait for a "Latest event ... ago" and the partition counts.
            page.get_by_text(re.compile(r" ago$")).first.wait_for()
            page.get_by_text(re.compile(r"^\d+% filled$")).first.wait_for()
            graph = _screenshot(page, tmp_path / "asset_graph.png", screenshot_export_dir)

            page.goto(f"{dagster_dev.url}/assets/plays")
            page.get_by_text("Latest materialization", exact=True).first.wait_for()
            page.get_by_text(DAY, exact=True).first.wait_for()  # the partition the latest materialization is for
            for key in ("rows_written", "snapshot_id", "table_rows", "preview"):
                page.get_by_text(key, exact=True).first.wait_for()
            # The value shown is the snapshot the run committed to music.plays, read back from Iceberg.
            page.get_by_text(snapshot_id, exact=True).first.wait_for()
            asset_page = _screenshot(page, tmp_path / "plays_asset.png", screenshot_export_dir)
        finally:
            browser.close()

    for shot in (graph, asset_page):
        assert shot.stat().st_size > 10_000, f"{shot} looks blank"


@pytest.fixture(scope="module")
def maintained(dagster_dev: DagsterDev, daily_run: FinishedRun) -> FinishedRun:
    """After the daily run: the next day ingested, then a compaction run, each launched as the UI launches them."""
    _wait_for_run(dagster_dev, _launch_partition_run(dagster_dev, NEXT_DAY))
    selector = _job_selector(dagster_dev.url, "compaction_job")
    assert selector is not None
    params = {"selector": selector, "runConfigData": {"ops": {"compact_tables": {"config": {"skip_recent_days": 0}}}}}
    result = _graphql(dagster_dev.url, LAUNCH_RUN, {"params": params})["launchRun"]
    assert result["__typename"] == "LaunchRunSuccess", f"launchRun answered {json.dumps(result, indent=2)}"
    return _wait_for_run(dagster_dev, result["run"]["runId"])


@pytest.mark.slow
@pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Debian chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)"
)
def test_the_plays_asset_page_plots_the_tables_health_over_its_runs(
    dagster_dev: DagsterDev, maintained: FinishedRun, tmp_path: Path, screenshot_export_dir: Path | None
) -> None:
    from playwright.sync_api import sync_playwright

    # The figures as Dagster recorded them: one observation per run that touched music.plays
    observed = _graphql(dagster_dev.url, PLAYS_OBSERVATIONS)["assetOrError"]["assetObservations"]
    figures = [{e["label"]: e.get("intValue", e.get("floatValue")) for e in o["metadataEntries"]} for o in observed]
    assert [f["data_files"] for f in reversed(figures)] == [1, 2, 2]  # two days ingested, then a compaction
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1400})
            page.set_default_timeout(UI_TIMEOUT_MS)
            # The asset's metadata as plots over events (a partitioned asset shows partitions first): what an
            # operator opens to watch the table's health
            page.goto(f"{dagster_dev.url}/assets/plays")
            try:
                page.get_by_role("button", name="Plots").first.click()
                page.get_by_role("button", name="Events").first.click()
                for key in HEALTH_PLOTS:
                    page.get_by_text(key, exact=True).first.wait_for()
                # each plot is a chart drawn on its canvas: the figures are plotted, not listed in the metadata table
                page.locator("canvas").first.wait_for()
                assert page.locator("canvas").count() >= len(HEALTH_PLOTS)
            except Exception:
                _screenshot(page, tmp_path / "plays_health_plots_failed.png", screenshot_export_dir)
                raise
            plots = _screenshot(page, tmp_path / "plays_health_plots.png", screenshot_export_dir)
        finally:
            browser.close()
    assert plots.stat().st_size > 10_000, f"{plots} looks blank"
