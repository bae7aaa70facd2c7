"""A damaged table or a locked catalog is one line naming it, and the rest of the lakehouse still answers.

Issue 28's probes 5 and 7: a truncated manifest aborted every `sonik sql` (DuckDB's iceberg extension
terminates the process on it), a table whose location holds a double quote broke every query, a
truncated or missing metadata.json made `sonik tables` a traceback hiding every other table, and a
SQLite catalog locked by another process was a raw SQLAlchemy error in a run.
"""

from __future__ import annotations

import csv
import datetime as dt
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.cli.tables import TABLE_COLUMNS
from sonik_pipeline.definitions import build_definitions
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.landing import landing_events
from sonik_pipeline.lakehouse.sources.landing_writer import write_landing_day
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.catalog import open_catalog
from sonik_pipeline.settings import CATALOG_NAME, Settings
from sonik_pipeline_tests.conftest import run_asset_job, sonik

DAY = dt.date(2026, 4, 20)
BIN = Path(sys.executable).parent
SMALL = pa.schema([pa.field("x", pa.int64())])


def sonik_process(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """`sonik` in its own process: where DuckDB aborting the process cannot take the test run with it."""
    return subprocess.run([str(BIN / "sonik"), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def _csv(text: str) -> list[list[str]]:
    return list(csv.reader(text.splitlines()))


def _local(uri: str) -> Path:
    return Path(urlsplit(uri).path)


def _plays_and_another_table(catalog: Catalog) -> None:
    """music.plays with a day of 50 plays (and its empty quarantine), and a small table of 3 rows beside it."""
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 50), "a")])
    other = catalog.create_table("music.other", schema=SMALL)
    other.append(pa.table({"x": [1, 2, 3]}, schema=SMALL))


def _truncate(path: Path, keep: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_manifest_is_named_and_queries_of_the_other_tables_still_answer(
    catalog: Catalog, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Given plays' manifest cut short (a full disk, an interrupted copy), and a sound table beside it
    _plays_and_another_table(catalog)
    plays = catalog.load_table("music.plays")
    [manifest] = plays.current_snapshot().manifests(plays.io)
    _truncate(_local(manifest.manifest_path))

    # When queries that do not read plays run, and one that does
    one = sonik_process(cli_env, tmp_path, "sql", "SELECT 1 AS one", "--format", "csv")
    other = sonik_process(cli_env, tmp_path, "sql", "SELECT sum(x) AS total FROM music.other", "--format", "csv")
    now = dt.datetime.now(dt.UTC).isoformat()
    past = sonik_process(cli_env, tmp_path, "sql", "SELECT count(*) AS n FROM music.other", "--as-of", now)
    broken = sonik_process(cli_env, tmp_path, "sql", "SELECT count(*) FROM music.plays")

    # Then the others answer (DuckDB never opens plays' manifests), and plays is one line naming its manifest
    assert (one.returncode, _csv(one.stdout), one.stderr) == (0, [["one"], ["1"]], "")
    assert (other.returncode, _csv(other.stdout), other.stderr) == (0, [["total"], ["6"]], "")
    assert past.returncode == 0, past.stderr
    assert past.stdout.splitlines()[2] == "3"
    assert broken.returncode == 2, broken.stderr
    [line] = broken.stderr.splitlines()
    assert line == (
        f"sonik: error: music.plays: its manifest {manifest.manifest_path} is 100 bytes, but the manifest list "
        f"says {manifest.manifest_length:,}: it is truncated or damaged, and DuckDB's iceberg reader would abort "
        "on it; restore it from a backup, or roll the table back to a snapshot that does not use it"
    )


def test_a_missing_manifest_is_named_too(catalog: Catalog, cli_env: dict[str, str], tmp_path: Path) -> None:
    _plays_and_another_table(catalog)
    plays = catalog.load_table("music.plays")
    [manifest] = plays.current_snapshot().manifests(plays.io)
    _local(manifest.manifest_path).unlink()

    broken = sonik_process(cli_env, tmp_path, "sql", "SELECT count(*) FROM music.plays")
    other = sonik_process(cli_env, tmp_path, "sql", "SELECT count(*) AS n FROM music.other", "--format", "csv")

    assert broken.returncode == 2, broken.stderr
    [line] = broken.stderr.splitlines()
    assert line.startswith(f"sonik: error: music.plays: its manifest {manifest.manifest_path} is missing"), line
    assert (other.returncode, _csv(other.stdout)) == (0, [["n"], ["3"]])


def test_a_truncated_quarantine_manifest_is_named_by_sonik_rejects(
    catalog: Catalog, settings: Settings, cli_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a day with one line that is not JSON, quarantined, and the quarantine's manifest cut short
    landing = Path(settings.landing_dir)
    write_landing_day(landing, DAY, synthetic_batch(DAY, 20), files=1)
    (landing / "plays" / str(DAY) / "bad.jsonl").write_text("not json\n")
    ingest_day(catalog, DAY, landing_events(landing, DAY), progress=lambda _: None)
    quarantine = catalog.load_table("music.plays_rejected")
    [manifest] = quarantine.current_snapshot().manifests(quarantine.io)
    _truncate(_local(manifest.manifest_path))

    # When the quarantine is listed, all of it (DuckDB reads it) and one day's (PyIceberg plans it)
    every = sonik_process(cli_env, tmp_path, "rejects")
    one_day = sonik_process(cli_env, tmp_path, "rejects", "--day", str(DAY))

    # Then each is one line naming the table and its manifest
    for result in (every, one_day):
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f"sonik: error: music.plays_rejected: its manifest {manifest.manifest_path} is 100 ")


def test_tables_whose_names_hold_quotes_are_read_or_named_without_a_traceback(catalog: Catalog, cli_env) -> None:
    # Given plays, and tables with quotes in their names, so in their locations: DuckDB's iceberg_scan tries
    # its argument as a table name first, and an unpaired double quote is a parser error there
    _plays_and_another_table(catalog)
    for name, x in (("music.it's", 1), ('music.say "hi"', 2), ('music.12" vinyl', 3)):
        catalog.create_table(name, schema=SMALL).append(pa.table({"x": [x]}, schema=SMALL))

    # When queries read plays, each odd table, and the catalog itself (which sees every table)
    plays = sonik("sql", "SELECT count(*) AS n FROM music.plays", "--format", "csv")
    single = sonik("sql", """SELECT x FROM music."it's" """, "--format", "csv")
    double = sonik("sql", 'SELECT x FROM music."say ""hi"""', "--format", "csv")
    unpaired = sonik("sql", 'SELECT x FROM music."12"" vinyl"')
    listing = "SELECT table_name FROM information_schema.tables WHERE table_schema = 'music' ORDER BY 1"
    every = sonik("sql", listing, "--format", "csv")

    # Then only the table DuckDB's iceberg_scan cannot open is refused, in one line naming it
    assert (plays[0], _csv(plays[1]), plays[2]) == (0, [["n"], ["50"]], "")
    assert (single[0], _csv(single[1]), single[2]) == (0, [["x"], ["1"]], "")
    assert (double[0], _csv(double[1]), double[2]) == (0, [["x"], ["2"]], "")
    assert unpaired[0] == 2
    [line] = unpaired[2].splitlines()
    assert line.startswith('sonik: error: music.12" vinyl: DuckDB\'s iceberg_scan cannot read a table whose metadata '
                           'path holds an unpaired double quote ("): file://'), line  # fmt: skip
    assert every[0] == 0, every[2]
    names = [row[0] for row in _csv(every[1])[1:]]
    assert names == ["it's", "other", "plays", "plays_rejected", "plays_sources", 'say "hi"']
    assert every[2] == f"sonik: warning: {line.removeprefix('sonik: error: ')}\n"


def test_sonik_tables_lists_every_table_and_names_each_broken_one_in_a_line(catalog: Catalog, cli_env) -> None:
    # Given plays whose current metadata.json is truncated, and another table whose current metadata.json is gone
    _plays_and_another_table(catalog)
    _truncate(_local(catalog.load_table("music.plays").metadata_location), keep=200)
    gone = catalog.load_table("music.other").metadata_location
    _local(gone).unlink()

    # When the tables are listed
    code, out, err = sonik("tables", "--format", "csv")

    # Then every table is listed, the broken ones with empty figures, each named on stderr in one line; exit 1
    assert code == 1
    header, other, plays, rejected = _csv(out)
    assert header == list(TABLE_COLUMNS)
    assert other == ["music.other", *[""] * (len(TABLE_COLUMNS) - 1)]
    assert plays == ["music.plays", *[""] * (len(TABLE_COLUMNS) - 1)]
    rejected = dict(zip(header, rejected, strict=True))
    assert [rejected[c] for c in ("table", "rows", "data_files", "snapshots", "last_commit")] == [
        "music.plays_rejected",
        "0",
        "0",
        "0",
        "",
    ]
    assert int(rejected["metadata_json_bytes"]) > 0
    other_line, plays_line = err.splitlines()
    assert other_line == (
        f"sonik: error: music.other: its current metadata file is missing ({_local(gone)}); restore it from a backup"
    )
    assert plays_line.startswith(
        "sonik: error: music.plays: its current metadata file is truncated or damaged (Invalid JSON: EOF while "
    ), plays_line
    assert plays_line.endswith(" at line 1 column 200); restore it from a backup"), plays_line
    # And every other command says the same in one line, while the sound tables still answer
    assert sonik("snapshots", "music.plays") == (2, "", plays_line + "\n")
    assert sonik("sql", "SELECT count(*) FROM music.other") == (2, "", other_line + "\n")
    code, out, err = sonik("sql", "SELECT count(*) AS n FROM music.plays_rejected", "--format", "csv")
    assert (code, _csv(out), err) == (0, [["n"], ["0"]], "")


@contextmanager
def locked_by_another_process(database: Path) -> Iterator[None]:
    """Another process holding SQLite's exclusive lock on the catalog file, as a long write does."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"con = sqlite3.connect({str(database)!r}, isolation_level=None)\n"
            "con.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        yield
    finally:
        holder.communicate("", timeout=30)


def _locked_message(database: Path, seconds: int) -> str:
    return (
        f"the SQLite catalog {database} stayed locked by another process for {seconds} s (its busy timeout): "
        f"a long write holds it; re-run when that has finished (`lsof {database}` lists the processes using it)"
    )


@pytest.fixture
def one_second_lock_wait(tmp_path: Path) -> Settings:
    """The embedded SQLite catalog, waiting 1 s (rather than 60) for a lock."""
    home = tmp_path / "locked"
    uri = f"sqlite:///{home / 'catalog.db'}?timeout=1"
    return Settings.from_env({"SONIK_HOME": str(home), "SONIK_CATALOG_URI": uri, "SONIK_EVENTS_PER_DAY": "200"})


def test_a_run_that_meets_a_locked_catalog_fails_in_one_line_with_the_wait(one_second_lock_wait: Settings) -> None:
    # Given a lakehouse with a day of plays, whose catalog another process then holds locked
    settings = one_second_lock_wait
    defs = build_definitions(settings)
    assert run_asset_job(defs, "plays_job", str(DAY)).success
    database = settings.home / "catalog.db"

    # When the day is re-run
    with locked_by_another_process(database):
        started = time.monotonic()
        result = run_asset_job(defs, "plays_job", str(DAY))
        waited = time.monotonic() - started

    # Then the run fails, its error one line saying the catalog stayed locked and for how long
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.cause.message.strip()  # the step's own error, under Dagster's
    assert message.endswith(_locked_message(database, 1)), message
    assert "\n" not in message and "sqlalchemy" not in message.lower()
    assert waited >= 1
    # And once the lock is gone the day runs again
    assert run_asset_job(defs, "plays_job", str(DAY)).success


def test_sonik_on_a_locked_catalog_is_one_line_with_the_wait(
    one_second_lock_wait: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = one_second_lock_wait
    catalog = open_catalog(CATALOG_NAME, settings.catalog_uri, settings.warehouse)
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 20), "a")])
    monkeypatch.setenv("SONIK_HOME", str(settings.home))
    monkeypatch.setenv("SONIK_CATALOG_URI", settings.catalog_uri)

    with locked_by_another_process(settings.home / "catalog.db"):
        code, out, err = sonik("tables")

    assert (code, out) == (2, "")
    assert err == f"sonik: error: {_locked_message(settings.home / 'catalog.db', 1)}\n"
