"""Auditing the past and undoing a bad ingest: `sonik sql --as-of`, `sonik rollback`, and the rollback job."""

import datetime as dt
import io
import json
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import dagster as dg
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.cli import main
from sonik_pipeline.lakehouse.events import ArrowRows
from sonik_pipeline.lakehouse.ingest import ingest_day
from sonik_pipeline.lakehouse.synthetic_source import synthetic_batch

DAY = dt.date(2026, 4, 20)


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, sonik_home: Path, settings) -> None:
    """`sonik` reads the same lakehouse as the test (SQLite or Postgres catalog)."""
    monkeypatch.setenv("SONIK_HOME", str(sonik_home))
    monkeypatch.setenv("SONIK_CATALOG_URI", settings.catalog_uri)


def sonik(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def _json(*args: str) -> list[dict]:
    code, out, err = sonik(*args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def test_sql_as_of_shows_the_rows_before_and_after_a_rerun(catalog: Catalog, cli_env) -> None:
    # Given a day ingested, then re-ingested with different events
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 300, seed=1), "first")])
    time.sleep(0.01)
    between = _now_iso()
    time.sleep(0.01)
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 200, seed=2), "second")], max_shrink_share=1.0)
    query = "SELECT count(*) AS plays, min(play_id) AS first_id FROM music.plays"

    old = _json("sql", query, "--as-of", between)
    new = _json("sql", query)

    assert old[0]["plays"] == 300 and new[0]["plays"] == 200
    assert old[0]["first_id"] == min(synthetic_batch(DAY, 300, seed=1).column("play_id").to_pylist())
    first_snapshot = catalog.load_table("music.plays").snapshots()[0].snapshot_id
    assert _json("sql", query, "--snapshot", str(first_snapshot))[0]["plays"] == 300


def test_snapshots_lists_operations_records_and_the_dagster_run(catalog: Catalog, cli_env) -> None:
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 100), "a")], run_id="run-1")
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 50), "b")], run_id="run-2", max_shrink_share=1.0)

    rows = _json("snapshots", "music.plays")

    assert [(r["operation"], r["records"], r["dagster_run_id"], r["partition"], r["is_current"]) for r in rows] == [
        ("append", 100, "run-1", "2026-04-20", False),
        ("overwrite", 50, "run-2", "2026-04-20", True),
    ]
    code, out, _ = sonik("snapshots", "music.plays")
    assert code == 0 and "snapshot_id" in out.splitlines()[0] and "(2 rows)" in out
    code, out, _ = sonik("tables", "--format", "csv")
    assert out.splitlines()[0] == "table,rows,data_files,snapshots,last_commit"
    assert out.splitlines()[1].startswith("music.plays,50,1,2,")


def test_rollback_restores_the_old_snapshot_and_the_marts_rebuild_from_it(
    catalog: Catalog, cli_env, defs: dg.Definitions
) -> None:
    # Given a good day of plays and marts, then a bad re-ingest
    job = defs.resolve_job_def("daily_job")
    assert job.execute_in_process(partition_key=str(DAY), instance=dg.DagsterInstance.get()).success
    good = catalog.load_table("music.plays").current_snapshot()
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 7, seed=9), "bad upstream")], max_shrink_share=1.0)

    # When plays is rolled back (without confirmation, as a script would)
    code, out, err = sonik("rollback", "music.plays", "--to", str(good.snapshot_id), "--yes")

    # Then the good rows are current again and the marts rebuild from them
    assert code == 0, err
    assert f"-> {good.snapshot_id}" in out
    table = catalog.load_table("music.plays")
    assert table.current_snapshot().snapshot_id == good.snapshot_id
    assert table.scan().count() == int(good.summary["total-records"])
    marts = dg.define_asset_job("marts_again", selection=dg.AssetSelection.groups("marts"))
    rebuilt = (
        dg.Definitions.merge(defs, dg.Definitions(jobs=[marts]))
        .resolve_job_def("marts_again")
        .execute_in_process(partition_key=str(DAY), instance=dg.DagsterInstance.get())
    )
    assert rebuilt.success
    plays_per_day = _json("sql", "SELECT sum(plays)::BIGINT AS n FROM music_marts.daily_device_mix")[0]["n"]
    assert plays_per_day == int(good.summary["total-records"])


def test_rollback_asks_for_confirmation(catalog: Catalog, cli_env, monkeypatch: pytest.MonkeyPatch) -> None:
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 10), "a")])
    first = catalog.load_table("music.plays").current_snapshot().snapshot_id
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 20, seed=3), "b")])
    monkeypatch.setattr("builtins.input", lambda prompt: "n")

    code, _, err = sonik("rollback", "music.plays", "--to", str(first))

    assert (code, err.strip()) == (2, "sonik: error: rollback cancelled")
    assert catalog.load_table("music.plays").current_snapshot().snapshot_id != first


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["snapshots", "music.nope"], "unknown table 'music.nope'"),
        (["rollback", "music.plays", "--to", "123", "--yes"], "unknown snapshot 123 for music.plays"),
        (["rollback", "music.plays", "--as-of", "2001-01-01", "--yes"], "music.plays did not exist yet at 2001-01-01"),
        (["sql", "SELECT 1", "--as-of", "2001-01-01"], "no table existed yet at 2001-01-01"),
        (["sql", "SELECT 1", "--as-of", "last tuesday"], "not a time: 'last tuesday'"),
        (["sql", "SELECT nothing FROM music.plays"], "SQL error: Binder Error"),
        (["sql", "DELETE FROM music.plays"], "sonik sql is read-only"),
        (["sql", "COPY (SELECT 1) TO 'x.csv'"], "sonik sql is read-only"),
        (["sql", "SELECT 1; SELECT 2"], "sonik sql is read-only"),
    ],
)
def test_bad_input_is_one_clear_line(catalog: Catalog, cli_env, args: list[str], message: str) -> None:
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 10), "a")])

    code, out, err = sonik(*args)

    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sonik: error: {message}"), err


def test_rollback_job_records_before_and_after(catalog: Catalog, defs: dg.Definitions) -> None:
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 10), "a")])
    first = catalog.load_table("music.plays").current_snapshot().snapshot_id
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 20, seed=3), "b")])
    second = catalog.load_table("music.plays").current_snapshot().snapshot_id

    result = defs.resolve_job_def("rollback_job").execute_in_process(
        run_config={"ops": {"rollback_table": {"config": {"table": "music.plays", "to_snapshot_id": first}}}},
        instance=dg.DagsterInstance.get(),
    )

    assert result.success
    [output] = [e for e in result.events_for_node("rollback_table") if e.event_type_value == "STEP_OUTPUT"]
    meta = output.event_specific_data.metadata
    assert (meta["snapshot_before"].value, meta["snapshot_after"].value) == (str(second), str(first))
    assert catalog.load_table("music.plays").scan().count() == 10
