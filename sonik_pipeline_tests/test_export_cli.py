"""`sonik export` as a data scientist runs it: export, list, make again from the manifest, release; one-line errors."""

import datetime as dt
import json
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts.queries import USER_TRACK_INTERACTIONS
from sonik_pipeline.lakehouse.marts.run import run_marts
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.maintenance.expiry import ExpiryOptions, expire_snapshots
from sonik_pipeline_tests.conftest import sonik

DAYS = [dt.date(2026, 4, 19), dt.date(2026, 4, 20)]
ONE_DAY = ["--start", "2026-04-19", "--end", "2026-04-19"]
NO_ROWS = "music.plays has no rows in 2026-03-01...2026-03-02 at snapshot"


@pytest.fixture
def lakehouse(catalog: Catalog) -> Catalog:
    """Two days of plays and user_track_interactions over them."""
    for seed, day in enumerate(DAYS):
        ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 400, seed=seed), "test")])
    with duckdb.connect() as con:
        list(run_marts(catalog, con, [USER_TRACK_INTERACTIONS], DAYS))
    return catalog


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_list_make_again_and_release(lakehouse: Catalog, cli_env, tmp_path: Path) -> None:
    interactions = USER_TRACK_INTERACTIONS.table.identifier
    snapshot = lakehouse.load_table(interactions).current_snapshot().snapshot_id

    # Export a mart's columns for both days
    code, out, err = sonik(
        "export", interactions, "--start", "2026-04-19", "--end", "2026-04-20", "--out", str(tmp_path / "set"),
        "--columns", "user_id,track_id,plays,skips", "--name", "recs-april",
    )  # fmt: skip
    assert code == 0, err
    rows = pq.read_table(tmp_path / "set" / "data")
    assert rows.column_names == ["user_id", "track_id", "plays", "skips"]
    assert f"exported recs-april: {rows.num_rows:,} rows of {interactions}" in out
    assert f"at snapshot {snapshot}" in out and "tag export-recs-april keeps that snapshot from expiry" in out
    manifest = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert manifest["rows"] == rows.num_rows and manifest["snapshot_id"] == snapshot

    # It is listed
    code, out, err = sonik("export", "--list", "--format", "json")
    assert code == 0, err
    [listed] = json.loads(out)
    assert (listed["name"], listed["table"], listed["snapshot_id"]) == ("recs-april", interactions, snapshot)
    assert listed["days"] == "2026-04-19...2026-04-20" and listed["created_at"]

    # The mart is rebuilt (a new snapshot) and made again from the manifest: the same bytes, verified
    with duckdb.connect() as con:
        list(run_marts(lakehouse, con, [USER_TRACK_INTERACTIONS], DAYS))
    code, out, err = sonik(
        "export", "--from-manifest", str(tmp_path / "set" / "manifest.json"), "--out", str(tmp_path / "again")
    )
    assert code == 0, err
    assert "every sha256 equal to the manifest's (1 file); its tag still keeps the snapshot" in out
    assert _files(tmp_path / "again") == _files(tmp_path / "set")

    # Released: no longer listed, and expiry then reclaims the snapshot; making it again is one line
    code, out, err = sonik("export", "--release", "recs-april")
    assert code == 0, err
    assert f"released recs-april: tag export-recs-april dropped; snapshot {snapshot}" in out
    assert sonik("export", "--list", "--format", "json")[1].strip() == "[]"
    table = lakehouse.load_table(interactions)
    newest = max(s.timestamp_ms for s in table.snapshots())
    now = dt.datetime.fromtimestamp(newest / 1000, dt.UTC) + dt.timedelta(days=1)
    assert snapshot in expire_snapshots(table, ExpiryOptions(dt.timedelta(0), 1, now=now)).snapshots_expired
    code, out, err = sonik("export", "--from-manifest", str(tmp_path / "set"), "--out", str(tmp_path / "third"))
    assert code == 2
    assert err == (
        f"sonik: error: {interactions}: snapshot {snapshot} of recs-april is no longer in the table (its tag is gone, "
        "and expiry reclaimed it): the dataset cannot be made again\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["music.songs", "--start", "2026-04-19", "--end", "2026-04-19"], "unknown table 'music.songs' (exportable: "),
        (["plays", "--start", "2026-04-20", "--end", "2026-04-19"], "the first day 2026-04-20 is after the last day"),
        (["plays", "--start", "2026-03-01", "--end", "2026-03-02"], NO_ROWS),
        (["plays", *ONE_DAY, "--columns", "user_id,,x"], "--columns 'user_id,,x'"),
        (["plays", *ONE_DAY, "--columns", "mood"], "music.plays has no column 'mood'"),
        (["plays", *ONE_DAY, "--snapshot", "42"], "unknown snapshot 42 for music.plays"),
        (["plays", *ONE_DAY, "--as-of", "yesterday"], "not a time: 'yesterday'"),
        (["plays", "--start", "2026-04-19"], "export needs --end, --out"),
        (["--list", "plays"], "--list takes no TABLE"),
        (["--release", "nope"], "no export named 'nope' holds a snapshot (exports: none)"),
        (["--from-manifest", "nowhere/manifest.json"], "--from-manifest needs --out DIR"),
        (["--from-manifest", "nowhere/manifest.json", "--out", "x"], "no manifest at "),
        (["--from-manifest", "m.json", "--out", "x", "--start", "2026-04-19"], "--from-manifest takes no --start"),
    ],
)  # fmt: skip
def test_bad_input_is_one_clear_line(
    lakehouse: Catalog, cli_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    full = ["export", *args, *(["--out", str(tmp_path / "out")] if "--end" in args else [])]
    tags_before = {t: dict(lakehouse.load_table(t).metadata.refs) for t in ("music.plays",)}

    code, out, err = sonik(*full)

    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"sonik: error: {message}"), err
    assert not (tmp_path / "out").exists()
    assert {t: dict(lakehouse.load_table(t).metadata.refs) for t in tags_before} == tags_before
