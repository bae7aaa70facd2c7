"""`sonik diff` and `sonik history` on a lakehouse changed by Dagster runs: a re-ingest, a late file, a compaction."""

import datetime as dt
import io
import json
from contextlib import redirect_stderr, redirect_stdout

import dagster as dg
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.types import StringType

from sonik_pipeline.cli import main
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch, synthetic_events
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS, run_asset_job, sonik

A, B, C, D = (dt.date(2026, 4, 17) + dt.timedelta(days=i) for i in range(4))
LATE = 30


def _json(*args: str):
    code, out, err = sonik(*args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_diff_and_history_name_the_days_and_the_runs_that_changed_them(
    catalog: Catalog, defs: dg.Definitions, cli_env
) -> None:
    # Given days B..D ingested by one plays_job run, and day A written as six small files
    first = run_asset_job(defs, "plays_job", str(B), str(D))
    assert first.success
    table = catalog.load_table("music.plays")
    for i in range(6):
        table.append(synthetic_batch(A, 100, batch=i).cast(table.schema().as_arrow()))
    before = catalog.load_table("music.plays").current_snapshot().snapshot_id

    # When B is ingested again by a run, C again with a late file, and the compaction job runs
    rerun = run_asset_job(defs, "plays_job", str(B))
    late_file = ArrowRows(synthetic_batch(C, LATE, seed=7), "late.jsonl")
    ingest_day(catalog, C, [*synthetic_events(C, SMALL_DAY_EVENTS), late_file], run_id="late-run")
    compaction = defs.resolve_job_def("compaction_job").execute_in_process(
        run_config={"ops": {"compact_tables": {"config": {"skip_recent_days": 0}}}}, instance=dg.DagsterInstance.get()
    )
    assert rerun.success and compaction.success

    # Then sonik diff reports those three days, and only them, each with its run
    result = _json("diff", "music.plays", "--from", str(before))
    figures = {
        d["day"]: (d["rows_before"], d["rows_after"], d["files_before"], d["files_after"], d["files_added"])
        for d in result["days"]
    }
    assert figures == {
        str(A): (600, 600, 6, 1, 1),  # compaction: files, not rows
        str(B): (SMALL_DAY_EVENTS, SMALL_DAY_EVENTS, 1, 1, 1),
        str(C): (SMALL_DAY_EVENTS, SMALL_DAY_EVENTS + LATE, 1, 1, 1),
    }
    runs = {
        d["day"]: [(c["dagster_run_id"], c["dagster_partition"], c["sonik_operation"]) for c in d["commits"]]
        for d in result["days"]
    }
    assert runs == {
        str(A): [(compaction.run_id, "", "compaction")],
        str(B): [(rerun.run_id, str(B), "")],
        str(C): [("late-run", str(C), "")],
    }
    assert (result["lineage"], result["schema_changes"]) == ("linear", [])
    assert result["to_snapshot"] == catalog.load_table("music.plays").current_snapshot().snapshot_id

    # ...as a table for people and CSV for programs
    code, out, err = sonik("diff", "music.plays", "--from", str(before))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"music.plays: snapshot {before} -> snapshot ")
    assert lines[0].endswith("lineage linear; 3 commits between; 3 days changed")
    [b_line] = [line for line in lines if line.startswith(str(B))]
    assert b_line.split()[1:8] == [str(SMALL_DAY_EVENTS), str(SMALL_DAY_EVENTS), "+0", "1", "1", "1", "1"]
    assert b_line.endswith(f"run {rerun.run_id} (partition {B})")
    assert lines[-1] == "(3 rows)"
    code, out, _ = sonik("diff", "music.plays", "--from", str(before), "--format", "csv")
    assert out.splitlines()[0] == ",".join(
        ["day", "rows_before", "rows_after", "rows_change", "files_before", "files_after", "files_added"]
        + ["files_removed", "runs"]
    )
    assert out.splitlines()[3].startswith(f"{C},{SMALL_DAY_EVENTS},{SMALL_DAY_EVENTS + LATE},+{LATE},")

    # And sonik history lists C's snapshots oldest first, with their runs
    history = _json("history", "music.plays", "--day", str(C))
    assert [(h["dagster_run_id"], h["dagster_partition"], h["rows_after"], h["files_added"]) for h in history] == [
        (first.run_id, f"{B}...{D}", SMALL_DAY_EVENTS, 1),
        ("late-run", str(C), SMALL_DAY_EVENTS + LATE, 1),
    ]
    assert [h["snapshot_id"] for h in _json("history", "music.plays", "--day", str(A))][-1] == (
        catalog.load_table("music.plays").current_snapshot().snapshot_id
    )


def test_diff_between_two_times_and_the_schema_a_new_column_brings(catalog: Catalog, cli_env) -> None:
    ingest_day(catalog, B, [ArrowRows(synthetic_batch(B, 50), "a")], run_id="r1")
    table = catalog.load_table("music.plays")
    first_ms = table.current_snapshot().timestamp_ms
    with table.update_schema() as update:
        update.add_column("mood", StringType())
    ingest_day(catalog, C, [ArrowRows(synthetic_batch(C, 20), "b")], run_id="r2")
    then = dt.datetime.fromtimestamp((first_ms + 1) / 1000, dt.UTC).isoformat()

    result = _json("diff", "music.plays", "--from", then)
    code, out, _ = sonik("diff", "music.plays", "--from", then)

    assert [(d["day"], d["rows_before"], d["rows_after"]) for d in result["days"]] == [(str(C), 0, 20)]
    assert result["schema_changes"] == [{"kind": "added", "field": "mood", "before": "", "after": "string"}]
    assert code == 0 and "schema changes:" in out and "added  mood" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["diff", "music.plays", "--from", "123"], "--from 123: music.plays has no snapshot 123 (expired, or never"),
        (["diff", "music.nope", "--from", "123"], "unknown table 'music.nope'"),
        (["diff", "music.plays", "--from", "yesterday"], "not a time: 'yesterday'"),
        (["diff", "music.plays", "--from", "2001-01-01", "--to", "2000-01-01"], "--to 2000-01-01: music.plays did"),
        (["diff", "music.plays", "--from", "NOW", "--to", "FIRST"], "--from NOW (snapshot"),
        (["history", "music.plays", "--day", "2026-13-01"], "argument --day: not a date (YYYY-MM-DD)"),
    ],
)
def test_bad_input_is_one_clear_line(catalog: Catalog, cli_env, args: list[str], message: str) -> None:
    ingest_day(catalog, B, [ArrowRows(synthetic_batch(B, 10), "a")])
    ingest_day(catalog, B, [ArrowRows(synthetic_batch(B, 10, seed=2), "b")])
    snapshots = sorted(catalog.load_table("music.plays").snapshots(), key=lambda s: s.timestamp_ms)
    args = [{"NOW": str(snapshots[-1].snapshot_id), "FIRST": str(snapshots[0].snapshot_id)}.get(a, a) for a in args]
    message = message.replace("NOW", str(snapshots[-1].snapshot_id))

    code, out, err = sonik(*args) if args[0] != "history" else _argparse_exit(args)

    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sonik: error: {message}"), err


def _argparse_exit(args: list[str]) -> tuple[int, str, str]:
    """argparse rejects a bad argument by exiting, as it does from the console script."""
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exited:
        main(args)
    return exited.value.code, out.getvalue(), err.getvalue()
