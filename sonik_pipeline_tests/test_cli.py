"""The pipeline as a user runs it: the dagster and sonik commands in subprocesses, then the tutorial's readers."""

import atexit
import gc
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sonik_pipeline.cli import COMMAND_GC_THRESHOLD, few_collections
from sonik_pipeline.cli.days import last_complete_days
from sonik_pipeline.cli.sql import _tables_read

BIN = Path(sys.executable).parent


def _run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SONIK_", "PYICEBERG_"))}
    env.update(SONIK_HOME=str(tmp_path / "lakehouse"), HOME=str(tmp_path / "home"), DAGSTER_HOME=str(tmp_path / "dh"))
    (tmp_path / "dh").mkdir()
    return env


def _python(code: str, env: dict[str, str], cwd: Path) -> str:
    return _run([str(BIN / "python"), "-c", textwrap.dedent(code)], env, cwd).stdout


COUNT_AND_SNAPSHOTS = """
    from pyiceberg.catalog.sql import SqlCatalog
    catalog = SqlCatalog("sonik", **{"uri": "sqlite:///lakehouse/catalog.db", "warehouse": "file://./lakehouse/warehouse"})
    table = catalog.load_table("music.plays")
    print(table.scan().to_arrow().num_rows, len(table.snapshots()))
"""


@pytest.mark.slow
def test_materializing_a_day_twice_leaves_one_copy_and_one_more_snapshot(tmp_path: Path, user_env) -> None:
    cmd = [
        str(BIN / "dagster"),
        "asset",
        "materialize",
        "-m",
        "sonik_pipeline.definitions",
        "--select",
        "plays",
        "--partition",
        "2026-04-20",
    ]

    _run(cmd, user_env, tmp_path)
    assert _python(COUNT_AND_SNAPSHOTS, user_env, tmp_path).split() == ["50000", "1"]

    _run(cmd, user_env, tmp_path)
    assert _python(COUNT_AND_SNAPSHOTS, user_env, tmp_path).split() == ["50000", "2"]


@pytest.mark.slow
def test_a_partition_range_writes_each_day_in_its_own_directory(tmp_path: Path, user_env) -> None:
    user_env["SONIK_EVENTS_PER_DAY"] = "1000"

    _run(
        [
            str(BIN / "dagster"),
            "asset",
            "materialize",
            "-m",
            "sonik_pipeline.definitions",
            "--select",
            "plays",
            "--partition-range",
            "2026-04-14...2026-04-20",
            # a commit per day, as the tutorial wrote them (a range is otherwise one commit per 31 days)
            "--config-json",
            '{"ops": {"plays": {"config": {"days_per_commit": 1}}}}',
        ],
        user_env,
        tmp_path,
    )

    data = tmp_path / "lakehouse" / "warehouse" / "music" / "plays" / "data"
    assert sorted(p.name for p in data.iterdir()) == [f"played_day=2026-04-{d}" for d in range(14, 21)]
    assert _python(COUNT_AND_SNAPSHOTS, user_env, tmp_path).split() == ["7000", "7"]

    # The tutorial's read side works unchanged on what the pipeline wrote (DuckDB's extension installed
    # once from the local wheel files, after which the tutorial's own `INSTALL iceberg` needs no network).
    _python(
        "import duckdb; from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg; "
        "load_iceberg(duckdb.connect())",
        user_env,
        tmp_path,
    )
    out = _python(
        """
        import duckdb
        from pyiceberg.catalog.sql import SqlCatalog
        catalog = SqlCatalog("sonik", **{"uri": "sqlite:///lakehouse/catalog.db", "warehouse": "file://./lakehouse/warehouse"})
        table = catalog.load_table("music.plays")
        df = table.scan(selected_fields=["artist"]).to_pandas()
        print(df["artist"].value_counts().head(10).index[0])
        for snapshot in table.snapshots():
            print(snapshot.snapshot_id, snapshot.timestamp_ms, snapshot.summary.get("operation"),
                  snapshot.summary.get("total-records"))
        snapshots = list(table.snapshots())
        print(len(table.scan(snapshot_id=snapshots[1].snapshot_id).to_pandas()))
        con = duckdb.connect()
        con.execute("INSTALL iceberg; LOAD iceberg;")
        metadata_path = table.metadata_location
        print(con.execute(f"SELECT COUNT(*) FROM iceberg_scan('{metadata_path}')").fetchone()[0])
        result = con.execute(f'''
            SELECT artist, COUNT(*) AS plays FROM iceberg_scan('{metadata_path}')
            WHERE played_at > current_timestamp - INTERVAL 3 DAY GROUP BY artist ORDER BY plays DESC LIMIT 10
        ''').fetchdf()
        print(type(result).__name__)
        """,
        user_env,
        tmp_path,
    )
    lines = out.splitlines()
    assert lines[0] == "The Weeknd"
    assert [line.split()[-1] for line in lines[1:8]] == [str(1000 * n) for n in range(1, 8)]  # total-records grows
    assert lines[8:] == ["2000", "7000", "DataFrame"]


def test_sonik_landing_writes_files_the_landing_source_reads(tmp_path: Path, user_env) -> None:
    out = _run(
        [
            str(BIN / "sonik"),
            "landing",
            "--start",
            "2026-04-19",
            "--end",
            "2026-04-20",
            "--events",
            "300",
            "--files",
            "3",
        ],
        user_env,
        tmp_path,
    ).stdout

    assert "2026-04-20: 300 events in 3 jsonl files" in out
    files = sorted((tmp_path / "lakehouse" / "landing" / "plays" / "2026-04-20").iterdir())
    assert [f.name for f in files] == ["part-000.jsonl", "part-001.jsonl", "part-002.jsonl"]
    assert sum(len(f.read_text().splitlines()) for f in files) == 300


def test_sonik_errors_are_one_line(tmp_path: Path, user_env) -> None:
    result = subprocess.run(
        [str(BIN / "sonik"), "landing", "--start", "2026-04-20", "--end", "2026-04-19"],
        env=user_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )

    assert result.returncode == 2
    assert result.stderr.strip() == "sonik: error: --end 2026-04-19 is before --start 2026-04-20"


@pytest.mark.parametrize(
    ("sql", "reads"),
    [
        ("SELECT 1", set()),
        (
            "SELECT * FROM music.plays JOIN Music_Marts.Daily_Top_Tracks USING (track_id)",  # binding would fail
            {("music", "plays"), ("music_marts", "daily_top_tracks")},
        ),
        ('SELECT * FROM music."say ""hi""" WHERE x IN (SELECT x FROM plays)', {("music", 'say "hi"'), ("", "plays")}),
        ("WITH recent AS (FROM music.plays) SELECT count(*) FROM recent", {("music", "plays"), ("", "recent")}),
        ("DESCRIBE music.plays", {("music", "plays")}),
        ("SHOW ALL TABLES", None),  # the catalog itself: every view
        ("SELECT * FROM information_schema.tables", None),
        ("SELECT * FROM duckdb_views()", None),
        ("SELECT * FROM query_table('music.plays')", None),
        ("SELEC 1", set()),  # no view: DuckDB's syntax error is the answer
        (  # a PIVOT statement does not serialize: every word may name a table, never a catalog query
            "SELECT * FROM (PIVOT music.plays ON device USING count(*))",
            {("", w) for w in ("select", "from", "pivot", "music", "plays", "on", "device", "using", "count")},
        ),
        ("SELECT * FROM (PIVOT (SHOW TABLES) ON name USING count(*))", None),
    ],
)
def test_sonik_sql_makes_views_of_the_tables_a_query_names(sql: str, reads: set | None) -> None:
    assert _tables_read(sql) == reads


HEAVY = ("dagster", "duckdb", "pandas", "pyarrow", "pyiceberg", "sqlalchemy")


def test_sonik_help_imports_none_of_the_heavy_libraries(user_env: dict[str, str], tmp_path: Path) -> None:
    # Given `sonik --help` and every command's help printed (benchmarks/cli.py times it)
    imported = _python(
        f"""
        import contextlib, io, sys
        from sonik_pipeline.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            for command in ([], ["days"], ["tables"], ["sql"], ["rejects"], ["diff"], ["export"], ["user"]):
                with contextlib.suppress(SystemExit):
                    main([*command, "--help"])
        print(sorted({{name.split(".")[0] for name in sys.modules}} & set({HEAVY!r})))
        """,
        user_env,
        tmp_path,
    )

    # Then none of PyIceberg, DuckDB, PyArrow, SQLAlchemy, pandas or Dagster was imported
    assert imported.strip() == "[]"


def test_sonik_tables_imports_neither_duckdb_nor_requests(user_env: dict[str, str], tmp_path: Path) -> None:
    # Given `sonik tables` (benchmarks/cli.py times it), which reads metadata with PyIceberg only
    imported = _python(
        """
        import contextlib, io, sys
        from sonik_pipeline.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["tables"]) == 0
        print(sorted({name.split(".")[0] for name in sys.modules} & {"duckdb", "requests"}))
        """,
        user_env,
        tmp_path,
    )

    # Then it imported neither DuckDB nor requests (a REST catalog's client)
    assert imported.strip() == "[]"


def test_a_command_collects_garbage_rarely_and_leaves_the_process_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given this process's garbage collection thresholds, and its exit handlers recorded
    before, at_exit = gc.get_threshold(), []
    monkeypatch.setattr(atexit, "register", at_exit.append)
    monkeypatch.setattr(atexit, "unregister", lambda f: at_exit.remove(f) if f in at_exit else None)

    # When two commands run in it
    for _ in range(2):
        with few_collections():
            assert gc.get_threshold() == COMMAND_GC_THRESHOLD

    # Then its thresholds are back, and one handler skips the last collection at exit, however many commands ran
    assert gc.get_threshold() == before
    assert at_exit == [gc.freeze]


def test_last_complete_days_end_yesterday() -> None:
    import datetime as dt

    assert last_complete_days(7, dt.date(2026, 4, 21)) == (dt.date(2026, 4, 14), dt.date(2026, 4, 20))


MART_TABLES = [
    "daily_top_tracks", "daily_top_artists", "daily_country_listening", "daily_tier_listening", "daily_device_mix",
    "daily_user_stats", "top_artists_7d", "trending_tracks",
]  # fmt: skip

TOTALS = """
    import json, duckdb
    from sonik_pipeline.lakehouse.tables.catalog import open_catalog
    from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
    catalog = open_catalog("sonik", "sqlite:///lakehouse/catalog.db", "file://./lakehouse/warehouse")
    con = load_iceberg(duckdb.connect())
    def query(sql, table):
        scan = f"iceberg_scan('{catalog.load_table(table).metadata_location}')"
        return list(con.execute(sql.format(scan)).fetchone())
    PLAYS = "SELECT count(DISTINCT played_at::DATE), count(*), sum(duration_seconds) FROM {}"
    out = {"plays": query(PLAYS, "music.plays")}
    for mart in MARTS:
        out[mart] = query("SELECT count(DISTINCT day) FROM {}", "music_marts." + mart)
    for mart in RECONCILED:
        out[mart + " totals"] = query("SELECT sum(plays), sum(seconds_played) FROM {}", "music_marts." + mart)
    print(json.dumps(out))
"""
RECONCILED = ["daily_country_listening", "daily_tier_listening", "daily_device_mix", "daily_user_stats"]


@pytest.mark.slow
def test_a_30_day_backfill_of_plays_and_marts_from_the_cli_is_complete_and_repeatable(tmp_path: Path, user_env) -> None:
    user_env["SONIK_EVENTS_PER_DAY"] = "300"
    cmd = [str(BIN / "dagster"), "asset", "materialize", "-m", "sonik_pipeline.definitions", "--select", "plays*",
           "--partition-range", "2026-03-22...2026-04-20"]  # fmt: skip
    totals = textwrap.dedent(TOTALS).replace("MARTS", repr(MART_TABLES)).replace("RECONCILED", repr(RECONCILED))

    _run(cmd, user_env, tmp_path)
    first = json.loads(_python(totals, user_env, tmp_path))
    _run(cmd, user_env, tmp_path)
    second = json.loads(_python(totals, user_env, tmp_path))

    days, plays, seconds = first["plays"]
    assert (days, plays) == (30, 9000)
    assert all(first[mart] == [30] for mart in MART_TABLES)  # one partition per day in every mart
    assert all(first[f"{mart} totals"] == [plays, seconds] for mart in RECONCILED)  # reconcile exactly
    assert second == first  # run twice: the same totals


def _fails(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)


EVENTS_ABC = "SONIK_EVENTS_PER_DAY='abc': expected a positive whole number of events per day, e.g. 50000"


def test_a_bad_setting_stops_dagster_asset_materialize_with_one_line(tmp_path: Path, user_env) -> None:
    user_env["SONIK_EVENTS_PER_DAY"] = "abc"

    result = _fails(
        [str(BIN / "dagster"), "asset", "materialize", "-m", "sonik_pipeline.definitions", "--select", "plays",
         "--partition", "2026-04-20"], user_env, tmp_path,
    )  # fmt: skip

    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.splitlines()[-1] == f"Error: {EVENTS_ABC}"
    assert not (tmp_path / "lakehouse").exists()  # nothing ran


def test_dagster_definitions_validate_shows_every_bad_setting_first(tmp_path: Path, user_env) -> None:
    user_env.update(SONIK_EVENTS_PER_DAY="abc", SONIK_CATALOG_URI="garbage://x")

    result = _fails(
        [str(BIN / "dagster"), "definitions", "validate", "-m", "sonik_pipeline.definitions"], user_env, tmp_path
    )

    output = result.stdout + result.stderr
    assert result.returncode == 1
    report = output.split("Validation failed for code location sonik_pipeline.definitions:\n\n", 1)[1]
    assert report.splitlines()[:2] == [
        "sonik_pipeline.definitions.InvalidSettings: SONIK_CATALOG_URI='garbage://x': expected an Iceberg catalog "
        "URI: sqlite:///path/to/catalog.db, postgresql+psycopg://user:password@host:5432/database or "
        "https://host/path (REST)",
        EVENTS_ABC,
    ]
    assert "invalid literal" not in output and "The above exception" not in output and "During handling" not in output


def test_sonik_checks_the_settings_before_any_command_in_one_line(tmp_path: Path, user_env) -> None:
    user_env["SONIK_EVENTS_PER_DAY"] = "abc"

    result = _fails([str(BIN / "sonik"), "tables"], user_env, tmp_path)

    assert (result.returncode, result.stderr) == (2, f"sonik: error: {EVENTS_ABC}\n")


def _closed_port() -> int:
    """A loopback port nothing listens on: a connection to it is refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CATALOG_CASES = ["postgres down", "rest down", "home inside a file", "catalog is a folder", "read-only"]


@pytest.mark.parametrize("case", CATALOG_CASES)
def test_a_catalog_sonik_cannot_open_is_one_line_saying_what_to_do(tmp_path: Path, user_env, case: str) -> None:
    home = tmp_path / "lakehouse"
    port = _closed_port()
    uri, expected = {
        "postgres down": (
            f"postgresql+psycopg://postgres:hunter2@127.0.0.1:{port}/test",
            f"postgresql+psycopg://postgres:***@127.0.0.1:{port}/test: connection failed: connection to server at "
            f'"127.0.0.1", port {port} failed: Connection refused; check SONIK_CATALOG_URI and that the PostgreSQL '
            "server is running and accepts connections",
        ),
        "rest down": (f"http://127.0.0.1:{port}/catalog", "that the REST catalog is running"),
        "home inside a file": (None, "SONIK_HOME (or the SONIK_CATALOG_URI path) is a writable folder"),
        "catalog is a folder": (None, "catalog.db: unable to open database file; check that SONIK_HOME"),
        "read-only": (None, "catalog.db: unable to open database file; check that SONIK_HOME"),
    }[case]
    if uri:
        user_env["SONIK_CATALOG_URI"] = uri
    if case == "home inside a file":
        (tmp_path / "file").write_text("not a folder")
        user_env["SONIK_HOME"] = str(tmp_path / "file" / "lakehouse")
    if case == "catalog is a folder":
        (home / "catalog.db").mkdir(parents=True)
    command = [str(BIN / "sonik"), "tables"]
    if case == "read-only":
        home.mkdir()
        home.chmod(0o555)
        if os.geteuid() == 0:  # root ignores folder permissions, unless it gives up the capabilities to
            if not shutil.which("setpriv"):
                pytest.skip("running as root without setpriv: a read-only folder cannot stop root")
            command = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *command]

    result = _fails(command, user_env, tmp_path)

    assert result.returncode == 2, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("sonik: error: cannot open the Iceberg catalog "), line
    assert expected in line
    assert "hunter2" not in line


@pytest.mark.parametrize("flag", ["--files", "--events"])
def test_sonik_landing_wants_a_positive_count(tmp_path: Path, user_env, flag: str) -> None:
    result = _fails(
        [str(BIN / "sonik"), "landing", "--start", "2026-04-20", "--end", "2026-04-20", flag, "0"], user_env, tmp_path
    )

    assert (result.returncode, result.stderr) == (
        2,
        f"sonik: error: argument {flag}: expected a positive whole number, got '0' (see sonik landing --help)\n",
    )
    assert not (tmp_path / "lakehouse").exists()


def test_an_unexpected_error_keeps_its_traceback_and_asks_for_a_report(tmp_path: Path, user_env) -> None:
    # Given a table property our own code wrote, garbled by hand: nothing a user can be told how to fix
    _python(
        """
        import datetime as dt
        from sonik_pipeline.lakehouse.tables.catalog import open_catalog
        from sonik_pipeline.lakehouse.sources.events import ArrowRows
        from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
        from sonik_pipeline.lakehouse.ingest.run import ingest_day
        catalog = open_catalog("sonik", "sqlite:///lakehouse/catalog.db", "file://lakehouse/warehouse")
        ingest_day(catalog, dt.date(2026, 4, 20), [ArrowRows(synthetic_batch(dt.date(2026, 4, 20), 10), "a")])
        with catalog.load_table("music.plays").transaction() as txn:
            txn.set_properties({"sonik.expired-history": "{not json"})
        """,
        user_env,
        tmp_path,
    )
    (tmp_path / "home").mkdir()  # where DuckDB installs its extensions

    result = _fails(
        [str(BIN / "sonik"), "sql", "SELECT 1 FROM music.plays", "--as-of", "2030-01-01"], user_env, tmp_path
    )

    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "JSONDecodeError" in result.stderr
    assert result.stderr.splitlines()[-1] == (
        "sonik: unexpected JSONDecodeError (traceback above): unless your setup explains it, "
        "please report it as a bug with the traceback"
    )


def test_a_table_whose_metadata_files_are_gone_is_one_line_naming_it(tmp_path: Path, user_env) -> None:
    # Given a table whose metadata files are gone: a damaged lakehouse, named rather than a traceback
    _python(
        """
        import datetime as dt
        from sonik_pipeline.lakehouse.tables.catalog import open_catalog
        from sonik_pipeline.lakehouse.sources.events import ArrowRows
        from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
        from sonik_pipeline.lakehouse.ingest.run import ingest_day
        catalog = open_catalog("sonik", "sqlite:///lakehouse/catalog.db", "file://lakehouse/warehouse")
        ingest_day(catalog, dt.date(2026, 4, 20), [ArrowRows(synthetic_batch(dt.date(2026, 4, 20), 10), "a")])
        """,
        user_env,
        tmp_path,
    )
    for metadata in (tmp_path / "lakehouse" / "warehouse" / "music" / "plays" / "metadata").glob("*.metadata.json"):
        metadata.unlink()

    result = _fails([str(BIN / "sonik"), "snapshots", "music.plays"], user_env, tmp_path)

    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("sonik: error: music.plays: its current metadata file is missing ("), line
    assert line.endswith(".metadata.json); restore it from a backup"), line


def test_a_reader_that_stops_early_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # `sonik ... | head -1`: the pipe is closed while sonik still prints
    class ClosedPipe:
        def __init__(self, file) -> None:
            self.file = file

        def write(self, text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self) -> None:
            pass

        def fileno(self) -> int:
            return self.file.fileno()

    from sonik_pipeline.cli import main

    with (tmp_path / "stdout").open("w") as file:
        monkeypatch.setattr(sys, "stdout", ClosedPipe(file))
        code = main(["days", "--last", "3"])

    assert code == 0
    assert "Traceback" not in capsys.readouterr().err
