"""Training sets without the CLI: exported at a snapshot, kept by their tag through ingests, compaction and
expiry, made again byte for byte, and let go."""

import datetime as dt
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.days import played_at_filter
from sonik_pipeline.lakehouse.exports.training_sets import (
    DATA_FOLDER,
    MANIFEST,
    ExportError,
    WriterOptions,
    export_dataset,
    list_exports,
    reexport,
    release_export,
)
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts.queries import USER_TRACK_INTERACTIONS
from sonik_pipeline.lakehouse.marts.run import run_marts
from sonik_pipeline.lakehouse.reads import timetravel
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.maintenance.compaction import CompactionOptions, compact_table
from sonik_pipeline.maintenance.expiry import ExpiryOptions, expire_snapshots
from sonik_pipeline.maintenance.files import referenced_files

DAYS = [dt.date(2026, 4, 18), dt.date(2026, 4, 19)]
LATER = dt.date(2026, 4, 20)
BATCHES, ROWS = 6, 300  # each exported day as 6 small files: compaction rewrites them
SMALL_FILES = WriterOptions(rows_per_file=1_000)  # 3,600 rows: four files, the last one short
NOW = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)  # the export's recorded creation time


def _micro_batches(catalog: Catalog) -> int:
    """Two days of plays as small appends; the snapshot an export then reads."""
    table, _ = ensure_table(catalog, PLAYS)
    for day in DAYS:
        for batch in range(BATCHES):
            table.append(synthetic_batch(day, ROWS, batch=batch).cast(table.schema().as_arrow()))
    return table.current_snapshot().snapshot_id


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _expire_everything_untagged(catalog: Catalog):
    """Expiry by a fixed clock a day past the newest commit, keeping only the current snapshot (and tagged ones)."""
    table = catalog.load_table(PLAYS.identifier)
    newest = max(s.timestamp_ms for s in table.snapshots())
    now = dt.datetime.fromtimestamp(newest / 1000, dt.UTC) + dt.timedelta(days=1)
    return expire_snapshots(table, ExpiryOptions(retention=dt.timedelta(0), retain_last=1, now=now))


def test_a_training_set_survives_ingests_compaction_and_expiry_and_is_made_again_byte_for_byte(
    catalog: Catalog, tmp_path: Path
) -> None:
    # Given two days of plays exported at the current snapshot
    exported_at = _micro_batches(catalog)
    manifest = export_dataset(
        catalog, "music.plays", DAYS[0], DAYS[-1], str(tmp_path / "first"), name="recs", writer=SMALL_FILES, now=NOW
    )
    first = _folder_bytes(tmp_path / "first")

    # When a later day is ingested, an exported day is ingested again, the table is compacted and expired
    ingest_day(catalog, LATER, [ArrowRows(synthetic_batch(LATER, 500), "later")])
    ingest_day(catalog, DAYS[0], [ArrowRows(synthetic_batch(DAYS[0], 2_000, seed=9), "again")])
    compaction = compact_table(catalog.load_table(PLAYS.identifier), CompactionOptions(min_input_files=2))
    expiry = _expire_everything_untagged(catalog)

    # Then the tag kept the exported snapshot (and its files) while every other old one expired...
    assert compaction.files_before > compaction.files_after
    table = catalog.load_table(PLAYS.identifier)
    assert exported_at not in expiry.snapshots_expired and len(expiry.snapshots_expired) >= 3
    assert {s.snapshot_id for s in table.snapshots()} == {exported_at, table.current_snapshot().snapshot_id}
    assert table.metadata.refs["export-recs"].snapshot_id == exported_at
    current_first_day = table.scan(row_filter=played_at_filter(DAYS[0])).count()
    assert current_first_day == 2_000  # the table moved on

    # ...and the manifest makes the same dataset again, byte for byte, manifest included
    again = reexport(catalog, str(tmp_path / "first" / MANIFEST), str(tmp_path / "again"))
    assert _folder_bytes(tmp_path / "again") == first
    assert again.tag_held and again.manifest == manifest

    # The dataset is the snapshot's rows of those days in (played_at, play_id) order, in files of 1,000 rows
    written = pq.read_table(tmp_path / "first" / DATA_FOLDER)
    at_snapshot = table.scan(row_filter=played_at_filter(DAYS[0], DAYS[-1]), snapshot_id=exported_at).to_arrow()
    assert written.num_rows == manifest.rows == len(DAYS) * BATCHES * ROWS
    in_order = at_snapshot.sort_by([("played_at", "ascending"), ("play_id", "ascending")])
    assert written.to_pylist() == in_order.to_pylist()
    assert [f.rows for f in manifest.files] == [1_000, 1_000, 1_000, 600]
    recorded = json.loads((tmp_path / "first" / MANIFEST).read_text())
    assert recorded["snapshot_id"] == exported_at and recorded["table"] == "music.plays"
    assert (
        recorded["filter"]
        == "played_at >= TIMESTAMP '2026-04-18 00:00:00' AND played_at < TIMESTAMP '2026-04-20 00:00:00'"
    )
    assert recorded["order_by"][:2] == ["played_at", "play_id"]
    assert [c["name"] for c in recorded["columns"]][:3] == ["play_id", "user_id", "track_id"]
    assert recorded["created_at"] == "2026-05-01T00:00:00+00:00" and recorded["pipeline_version"]
    for listed in recorded["files"]:
        assert pq.ParquetFile(tmp_path / "first" / listed["name"]).metadata.num_rows == listed["rows"]


def test_releasing_the_tag_lets_expiry_reclaim_the_snapshot_and_its_files(catalog: Catalog, tmp_path: Path) -> None:
    # Given an export whose snapshot's files were all compacted away in the current table
    exported_at = _micro_batches(catalog)
    export_dataset(catalog, "plays", DAYS[0], DAYS[-1], str(tmp_path / "set"), name="recs")
    compact_table(catalog.load_table(PLAYS.identifier), CompactionOptions(min_input_files=2))
    _expire_everything_untagged(catalog)
    table = catalog.load_table(PLAYS.identifier)
    only_exported = set(referenced_files(table)) - {
        t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()
    }
    small_files = [Path(p) for p in only_exported if p.endswith(".parquet")]
    assert len(small_files) == len(DAYS) * BATCHES and all(p.exists() for p in small_files)
    assert [(r.name, r.table, r.snapshot_id) for r in list_exports(catalog)] == [("recs", "music.plays", exported_at)]

    # When the export is released and expiry runs again
    released = release_export(catalog, "recs")
    expiry = _expire_everything_untagged(catalog)

    # Then the snapshot is expired, the files only it reached are deleted, and it cannot be made again
    assert released.snapshot_id == exported_at
    assert list_exports(catalog) == []
    assert exported_at in expiry.snapshots_expired
    table = catalog.load_table(PLAYS.identifier)
    assert table.snapshot_by_id(exported_at) is None and "export-recs" not in table.metadata.refs
    assert "sonik.export.recs" not in table.properties
    assert not any(p.exists() for p in small_files)
    with pytest.raises(ExportError, match=f"snapshot {exported_at} of recs is no longer in the table"):
        reexport(catalog, str(tmp_path / "set"), str(tmp_path / "again"))
    assert not (tmp_path / "again").exists() or not any((tmp_path / "again").iterdir())


def test_a_mart_exports_its_chosen_columns_at_an_older_snapshot(catalog: Catalog, tmp_path: Path) -> None:
    # Given user_track_interactions built twice (the second build over more plays)
    for i, day in enumerate(DAYS):
        ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 800, seed=i), "a")])
    with duckdb.connect() as con:
        list(run_marts(catalog, con, [USER_TRACK_INTERACTIONS], DAYS))
        mart = catalog.load_table(USER_TRACK_INTERACTIONS.table.identifier)
        older = mart.current_snapshot().snapshot_id
        ingest_day(catalog, DAYS[-1], [ArrowRows(synthetic_batch(DAYS[-1], 900, seed=5), "b")])
        list(run_marts(catalog, con, [USER_TRACK_INTERACTIONS], DAYS))

    # When three of its columns are exported for one day at the older snapshot
    manifest = export_dataset(
        catalog,
        "user_track_interactions",
        DAYS[-1],
        DAYS[-1],
        str(tmp_path / "interactions"),
        columns=["track_id", "user_id", "skips"],
        snapshot_id=older,
    )

    # Then the files hold those columns, in the table's order, sorted by (day, user_id, track_id), at that snapshot
    written = pq.read_table(tmp_path / "interactions" / DATA_FOLDER)
    mart = catalog.load_table(USER_TRACK_INTERACTIONS.table.identifier)
    expected = (
        mart.scan(snapshot_id=older, row_filter=f"day = '{DAYS[-1]}'")
        .to_arrow()
        .sort_by([("user_id", "ascending"), ("track_id", "ascending")])
        .select(["user_id", "track_id", "skips"])
    )
    assert written.column_names == ["user_id", "track_id", "skips"]
    assert written.schema.field("user_id").type == pa.int64() and not written.schema.field("user_id").nullable
    assert written.to_pylist() == expected.to_pylist() and manifest.rows == expected.num_rows > 0
    assert manifest.table == "music_marts.user_track_interactions" and manifest.snapshot_id == older
    assert manifest.order_by == ("day", "user_id", "track_id", "skips")
    assert [(c.name, c.type, c.required) for c in manifest.columns] == [
        ("user_id", "long", True),
        ("track_id", "long", True),
        ("skips", "long", True),
    ]
    assert manifest.filter == "day BETWEEN DATE '2026-04-19' AND DATE '2026-04-19'"


def test_an_export_at_a_time_reads_the_snapshot_current_then(catalog: Catalog, tmp_path: Path) -> None:
    ingest_day(catalog, DAYS[0], [ArrowRows(synthetic_batch(DAYS[0], 100), "a")])
    then = catalog.load_table(PLAYS.identifier).current_snapshot()
    ingest_day(catalog, DAYS[0], [ArrowRows(synthetic_batch(DAYS[0], 200, seed=1), "b")])

    when = dt.datetime.fromtimestamp(then.timestamp_ms / 1000, dt.UTC)
    manifest = export_dataset(catalog, "music.plays", DAYS[0], DAYS[0], str(tmp_path / "x"), as_of=when)

    assert (manifest.snapshot_id, manifest.rows) == (then.snapshot_id, 100)
    assert manifest.name == f"plays-2026-04-18-2026-04-18-{then.snapshot_id}"


@pytest.mark.parametrize(
    ("table", "first", "last", "options", "message"),
    [
        ("music.songs", DAYS[0], DAYS[0], {}, "unknown table 'music.songs'"),
        ("music.plays_rejected", DAYS[0], DAYS[0], {}, "only music.plays and the marts"),
        ("music.plays", DAYS[1], DAYS[0], {}, "the first day 2026-04-19 is after the last day 2026-04-18"),
        ("music.plays", LATER, LATER, {}, "music.plays has no rows in 2026-04-20 at snapshot"),
        ("music.plays", DAYS[0], DAYS[0], {"columns": ["user_id", "mood"]}, "music.plays has no column 'mood'"),
        ("music.plays", DAYS[0], DAYS[0], {"snapshot_id": 42}, "unknown snapshot 42 for music.plays"),
        ("music.plays", DAYS[0], DAYS[0], {"name": "no spaces"}, "'no spaces' is not a dataset name"),
    ],
)
def test_a_refused_export_commits_no_tag_and_writes_nothing(
    catalog: Catalog, tmp_path: Path, table, first, last, options, message
) -> None:
    ingest_day(catalog, DAYS[0], [ArrowRows(synthetic_batch(DAYS[0], 50), "a")])
    before = catalog.load_table(PLAYS.identifier).metadata_location

    with pytest.raises((ExportError, timetravel.TimeTravelError), match=message):
        export_dataset(catalog, table, first, last, str(tmp_path / "out"), **options)

    assert catalog.load_table(PLAYS.identifier).metadata_location == before
    assert not (tmp_path / "out").exists()


def test_an_export_refuses_a_used_folder_and_a_taken_name(catalog: Catalog, tmp_path: Path) -> None:
    ingest_day(catalog, DAYS[0], [ArrowRows(synthetic_batch(DAYS[0], 50), "a")])
    export_dataset(catalog, "music.plays", DAYS[0], DAYS[0], str(tmp_path / "one"), name="recs")
    ingest_day(catalog, DAYS[0], [ArrowRows(synthetic_batch(DAYS[0], 60, seed=2), "b")])

    with pytest.raises(ExportError, match="is not empty: give a new or empty folder"):
        export_dataset(catalog, "music.plays", DAYS[0], DAYS[0], str(tmp_path / "one"), name="other")
    with pytest.raises(ExportError, match="an export named 'recs' already keeps snapshot"):
        export_dataset(catalog, "music.plays", DAYS[0], DAYS[0], str(tmp_path / "two"), name="recs")
    assert not (tmp_path / "two").exists()
    assert [r.name for r in list_exports(catalog)] == ["recs"]
    with pytest.raises(ExportError, match="no export named 'other' holds a snapshot"):
        release_export(catalog, "other")


def test_a_reexport_that_comes_out_different_says_which_file_and_leaves_nothing(
    catalog: Catalog, tmp_path: Path
) -> None:
    ingest_day(catalog, DAYS[0], [ArrowRows(synthetic_batch(DAYS[0], 50), "a")])
    export_dataset(catalog, "music.plays", DAYS[0], DAYS[0], str(tmp_path / "set"), name="recs")
    manifest_path = tmp_path / "set" / MANIFEST
    recorded = json.loads(manifest_path.read_text())
    recorded["files"][0]["sha256"] = "0" * 64  # as if the data had changed under the same snapshot id
    manifest_path.write_text(json.dumps(recorded))

    with pytest.raises(ExportError, match=r"data/part-00000.parquet differs from the manifest: 50 rows, sha256 "):
        reexport(catalog, str(manifest_path), str(tmp_path / "again"))

    assert not any((tmp_path / "again").rglob("*"))
