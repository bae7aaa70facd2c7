"""Auditing the past and undoing a bad ingest: `sonik sql --as-of`, `sonik rollback`, and the rollback job."""

import datetime as dt
import json
import time

import dagster as dg
import duckdb
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.cli.tables import TABLE_COLUMNS
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.reads import timetravel
from sonik_pipeline.lakehouse.reads.timetravel import rollback
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.maintenance.expiry import ExpiryOptions, expire_snapshots
from sonik_pipeline_tests.conftest import sonik

DAY = dt.date(2026, 4, 20)


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
    assert out.splitlines()[0] == ",".join(TABLE_COLUMNS)
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
        (["sql", "SELECT count(*) FROM music.plays", "--as-of", "2001-01-01"], "no table existed yet at 2001-01-01"),
        (["sql", "SELECT 1", "--as-of", "last tuesday"], "not a time: 'last tuesday'"),
        (["sql", "SELECT nothing FROM music.plays"], "SQL error: Binder Error"),
        (
            ["sql", "SELECT count(*) FROM plays"],
            "SQL error: Catalog Error: Table with name plays does not exist!; the lakehouse's table is music.plays "
            "(tables are named with their namespace)",
        ),
        (
            ["sql", "SELECT * FROM music.songs"],
            'SQL error: Catalog Error: Table with name "music.songs" does not exist because schema "music" does not '
            "exist.; the lakehouse's tables are music.plays, music.plays_rejected, music.plays_sources, music_marts.",
        ),
        (
            ["sql", "SELECT count(*) FROM music.play"],
            'SQL error: Catalog Error: Table with name "music.play" does not exist because schema "music" does not '
            "exist.; did you mean music.plays?",
        ),
        (
            ["sql", "SELECT * FROM music.plays JOIN music_marts.daily_top_track USING (track_id)"],
            'SQL error: Catalog Error: Table with name "music_marts.daily_top_track" does not exist because schema '
            '"music_marts" does not exist.; did you mean music_marts.daily_top_tracks or '
            "music_marts.daily_top_artists?",
        ),
        (
            ["sql", "SELECT count(*) FROM music.plays_rejected", "--as-of", "2001-01-01"],
            "no table existed yet at 2001-01-01T00:00:00+00:00: music.plays_rejected has no snapshot yet",
        ),
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


def test_the_reading_line_names_only_the_tables_the_query_reads(catalog: Catalog, cli_env) -> None:
    # Given plays and its quarantine, each with a snapshot
    batch = synthetic_batch(DAY, 100)
    index = batch.schema.get_field_index("country")
    countries = ["usa", *batch.column(index).to_pylist()[1:]]  # one event rejected
    batch = batch.set_column(index, batch.schema.field(index), pa.array(countries, batch.schema.field(index).type))
    ingest_day(catalog, DAY, [ArrowRows(batch, "a")])
    plays, rejected = (
        catalog.load_table(t).current_snapshot().snapshot_id for t in ("music.plays", "music.plays_rejected")
    )
    now = _now_iso()

    # When queries read one table, none, or name a snapshot of a table they do not read
    one = sonik("sql", "WITH p AS (FROM music.plays) SELECT count(*) AS n FROM p WHERE user_id > 0", "--as-of", now)
    nothing = sonik("sql", "SELECT 1 AS one", "--as-of", now)
    elsewhere = sonik("sql", "SELECT count(*) AS n FROM music.plays", "--snapshot", str(rejected))

    # Then each line names what the query reads, and only that
    assert one[0] == 0 and one[2] == f"-- reading music.plays@{plays}\n"
    assert nothing[0] == 0 and nothing[2] == "-- reading no lakehouse table\n"
    assert elsewhere[0] == 0 and elsewhere[2] == (
        f"sonik: warning: snapshot {rejected} is music.plays_rejected's, which the query does not read "
        f"(it reads the tables it names as they are now)\n-- reading music.plays@{plays}\n"
    )


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


def _at(timestamp_ms: int) -> str:
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).isoformat()


def _committed(timestamp_ms: int) -> str:
    """A commit time as sonik prints it (to the millisecond)."""
    return dt.datetime.fromtimestamp(timestamp_ms / 1000, dt.UTC).isoformat(timespec="milliseconds")


def _between(earlier_ms: int, later_ms: int) -> str:
    return _at((earlier_ms + later_ms) // 2)


def _count(*args: str) -> tuple[int, int | None, str]:
    code, out, err = sonik("sql", "SELECT count(*) AS n FROM music.plays", *args, "--format", "json")
    return code, json.loads(out)[0]["n"] if code == 0 else None, err


def _the_issues_history(catalog: Catalog) -> dict:
    """The issue's case: 180,000 rows (S), re-ingested as 200,000 (N), rolled back to S, re-ingested (C).

    Expiry keeps the newest two of the lineage, C and S, so N goes with its snapshot-log entry: the
    log then says S was current from its commit to C, and PyIceberg reads S for a time N was current.
    """
    for rows, seed in ((180_000, 1), (200_000, 2)):
        ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, rows, seed=seed), f"seed {seed}")])
        time.sleep(0.02)
    table = catalog.load_table("music.plays")
    s, n = sorted(table.snapshots(), key=lambda x: x.timestamp_ms)
    rollback(table, s)
    time.sleep(0.02)
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 190_000, seed=3), "seed 3")])
    time.sleep(0.02)
    table = catalog.load_table("music.plays")
    (_, t_s), (_, t_n), (_, t_rollback), (c, t_c) = [(e.snapshot_id, e.timestamp_ms) for e in table.history()]
    return {"table": table, "S": s, "N": n, "C": c, "t_s": t_s, "t_n": t_n, "t_rollback": t_rollback, "t_c": t_c}


def test_sql_as_of_a_time_whose_snapshot_was_expired_says_so_or_refuses(catalog: Catalog, cli_env) -> None:
    # Given the issue's history, and N expired by our expiry
    h = _the_issues_history(catalog)
    report = expire_snapshots(h["table"], ExpiryOptions(retention=dt.timedelta(0), retain_last=2))
    assert report.snapshots_expired == [h["N"].snapshot_id]
    table = catalog.load_table("music.plays")
    n_was_current = _between(h["t_n"], h["t_rollback"])
    # PyIceberg alone answers from S for that time, without a word: what this fix is about
    assert table.snapshot_as_of_timestamp((h["t_n"] + h["t_rollback"]) // 2).snapshot_id == h["S"].snapshot_id

    # When it is read at a time S was current, at the time N was, and at that time with --strict
    retained = _count("--as-of", _between(h["t_s"], h["t_n"]))
    expired = _count("--as-of", n_was_current)
    strict = _count("--as-of", n_was_current, "--strict")

    # Then the retained time reads S exactly, the expired one reads S and says so, and --strict refuses
    assert retained == (0, 180_000, f"-- reading music.plays@{h['S'].snapshot_id}\n")
    older = (
        f"the newest retained snapshot before {n_was_current}, {h['S'].snapshot_id}, "
        f"committed at {_committed(h['S'].timestamp_ms)}"
    )
    warning = f"sonik: warning: music.plays: the snapshot current at {n_was_current} was expired; reading {older}"
    assert expired == (0, 180_000, f"{warning}\n-- reading music.plays@{h['S'].snapshot_id}\n")
    assert strict == (
        2,
        None,
        f"sonik: error: music.plays: the snapshot current at {n_was_current} was expired "
        f"(--strict: not reading {older} instead)\n",
    )
    assert _count("--as-of", _at(h["t_c"] + 10))[1] == 190_000  # after the rollback and C: exact again


def test_rollback_as_of_an_expired_time_refuses_and_points_to_the_snapshot_id(
    catalog: Catalog, cli_env, defs: dg.Definitions
) -> None:
    h = _the_issues_history(catalog)
    expire_snapshots(h["table"], ExpiryOptions(retention=dt.timedelta(0), retain_last=2))
    n_was_current = _between(h["t_n"], h["t_rollback"])

    code, _, err = sonik("rollback", "music.plays", "--as-of", n_was_current, "--yes")
    job = defs.resolve_job_def("rollback_job").execute_in_process(
        run_config={"ops": {"rollback_table": {"config": {"table": "music.plays", "as_of": n_was_current}}}},
        instance=dg.DagsterInstance.get(),
        raise_on_error=False,
    )

    assert code == 2
    assert err == (
        f"sonik: error: music.plays: the snapshot current at {n_was_current} was expired; not rolling back to a "
        f"guess (the newest retained snapshot before {n_was_current}, {h['S'].snapshot_id}, committed at "
        f"{_committed(h['S'].timestamp_ms)}): list the snapshots with "
        "`sonik snapshots music.plays` and give one with --to ID\n"
    )
    assert not job.success
    [failure] = [e for e in job.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "was expired; not rolling back to a guess" in failure.event_specific_data.error.message
    assert "set to_snapshot_id" in failure.event_specific_data.error.message
    assert catalog.load_table("music.plays").current_snapshot().snapshot_id == h["C"]  # nothing rolled back


def test_a_time_before_the_oldest_retained_snapshot_says_its_history_was_expired(catalog: Catalog, cli_env) -> None:
    # Given the issue's history expired twice: N first, then everything but C
    h = _the_issues_history(catalog)
    commits = len(h["table"].metadata.metadata_log)
    expire_snapshots(h["table"], ExpiryOptions(retention=dt.timedelta(0), retain_last=2))
    assert len(catalog.load_table("music.plays").metadata.metadata_log) == commits + 1  # expiry and record: one commit
    recorded = json.loads(catalog.load_table("music.plays").properties["sonik.expired-history"])
    assert recorded == {"first-commit-ms": h["t_s"], "gaps": [[h["t_n"], h["t_rollback"]]]}
    expire_snapshots(catalog.load_table("music.plays"), ExpiryOptions(retention=dt.timedelta(0), retain_last=1))
    recorded = json.loads(catalog.load_table("music.plays").properties["sonik.expired-history"])
    assert recorded == {"first-commit-ms": h["t_s"], "gaps": []}  # all before C now: "history expired"

    # When it is read at a time S was current, and before the table's first commit
    s_was_current = _between(h["t_s"], h["t_n"])
    before_it_all = _at(h["t_s"] - 1_000)
    history_gone = (
        f"music.plays: the history before its oldest retained snapshot {h['C']} (current from "
        f"{_committed(h['t_c'])}) was expired, so its state at {s_was_current} is not known"
    )

    # Then the first says the history was expired, the second that the table did not exist yet
    assert _count("--as-of", s_was_current) == (2, None, f"sonik: error: {history_gone}\n")
    assert sonik("rollback", "music.plays", "--as-of", s_was_current, "--yes")[::2] == (
        2,
        f"sonik: error: {history_gone}\n",
    )
    code, _, err = sonik("rollback", "music.plays", "--as-of", before_it_all, "--yes")
    assert (code, err) == (
        2,
        f"sonik: error: music.plays did not exist yet at {before_it_all}; its first snapshot is from "
        f"{_committed(h['t_s'])}\n",
    )


def test_a_snapshot_expired_by_another_engine_gives_a_may_differ_warning(catalog: Catalog, cli_env) -> None:
    # Given N expired by PyIceberg's own builder, which leaves no record of when N was current
    h = _the_issues_history(catalog)
    h["table"].maintenance.expire_snapshots().by_id(h["N"].snapshot_id).commit()
    n_was_current = _between(h["t_n"], h["t_rollback"])

    code, rows, err = _count("--as-of", n_was_current)

    assert (code, rows) == (0, 180_000)
    assert err.splitlines()[0] == (
        f"sonik: warning: music.plays: a snapshot committed between {h['S'].snapshot_id} (current from "
        f"{_committed(h['t_s'])}) and {h['S'].snapshot_id} (current from "
        f"{_committed(h['t_rollback'])}) was expired; the answer may differ; "
        f"reading {h['S'].snapshot_id}"
    )
    assert _count("--as-of", n_was_current, "--strict")[0] == 2


def test_an_empty_or_not_yet_created_table_reads_as_zero_rows_with_its_columns(catalog: Catalog) -> None:
    # Given plays ingested without a single reject: the quarantine exists but holds no snapshot, no mart exists
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 20), "clean")])
    assert catalog.load_table("music.plays_rejected").current_snapshot() is None
    con = load_iceberg(duckdb.connect())

    timetravel.create_views(con, catalog)

    assert con.execute("SELECT count(*) FROM music.plays_rejected").fetchone() == (0,)
    assert con.execute("SELECT count(*) FROM music_marts.daily_top_tracks").fetchone() == (0,)
    columns = [c[0] for c in con.execute("DESCRIBE music.plays_rejected").fetchall()]
    assert columns[:3] == ["ingest_day", "play_id", "reason"]
    assert con.execute("SELECT count(*) FROM music.plays").fetchone() == (20,)
