"""Quality measurements of days of plays, by the rules ingest validates with; the totals marts are reconciled
with; the newest day a table holds, from its metadata."""

import datetime as dt

import duckdb
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.table import Table
from pyiceberg.types import DateType

from sonik_pipeline.lakehouse.days import as_day, played_at_filter
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest.rules import CHECKED_RULES, DURATION_IN_RANGE, UNIQUE_PLAY_ID
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.ingest.validation import DayValidator
from sonik_pipeline.lakehouse.reads.plays_days import PlaysSnapshot
from sonik_pipeline.lakehouse.reads.quality import PlaysDayQuality, newest_day, plays_quality, plays_totals_by_day
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SCHEMA
from sonik_pipeline.lakehouse.tables.writes import replace_partition, stage_files
from sonik_pipeline.maintenance.manifests import rewrite_manifests
from sonik_pipeline_tests.conftest import record_manifest_reads

DAY = dt.date(2026, 4, 20)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = load_iceberg(duckdb.connect())
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def test_an_ingested_day_is_clean(catalog: Catalog, con) -> None:
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 1_500), "test")])
    plays = catalog.load_table("music.plays")

    quality = plays_quality(con, plays, PlaysSnapshot.current(plays), DAY, DAY)[DAY]

    assert (quality.rows, quality.duplicate_play_ids, quality.null_required) == (1_500, 0, 0)
    assert (quality.rows_outside_day, quality.durations_out_of_range) == (0, 0)


def _written_behind_the_pipelines_back(
    catalog: Catalog, events: int, durations: dict[int, int], repeated: slice
) -> tuple[Table, pa.Table]:
    """The day, ingested, then replaced as another writer could: ``events`` plays with some ``durations`` set
    (row -> seconds) and the ``repeated`` rows written twice, in one file. The table and the rows written."""
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 10), "test")])
    plays = catalog.load_table("music.plays")
    rows = synthetic_batch(DAY, events).cast(plays.schema().as_arrow())
    seconds = pa.array([durations.get(i, d) for i, d in enumerate(rows["duration_seconds"].to_pylist())], pa.int32())
    rows = rows.set_column(
        rows.schema.get_field_index("duration_seconds"), rows.schema.field("duration_seconds"), seconds
    )
    rows = pa.concat_tables([rows, rows[repeated]])
    replace_partition(plays, played_at_filter(DAY), stage_files(plays, [rows]), {})  # one file: its bounds are read
    plays.refresh()
    return plays, rows


def test_a_day_written_behind_the_pipelines_back_shows_each_fault(catalog: Catalog, con) -> None:
    # Given a day with 2 duplicated play_ids and 3 durations out of range
    plays, _ = _written_behind_the_pipelines_back(catalog, 100, {0: 90_000, 1: 90_000, 2: 90_000}, slice(10, 12))

    quality = plays_quality(con, plays, PlaysSnapshot.current(plays), DAY, DAY)[DAY]

    assert (quality.rows, quality.duplicate_play_ids, quality.durations_out_of_range) == (102, 2, 3)
    assert quality.rows_outside_day == 0


class _RecordingConnection:
    """A DuckDB connection that keeps the SQL of every query it runs."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self.queries: list[str] = []

    def execute(self, sql: str, *args):
        self.queries.append(sql)
        return self._con.execute(sql, *args)

    def __getattr__(self, name: str):
        return getattr(self._con, name)


def _counts_required_fields_by_rows(queries: list[str]) -> bool:
    return any('"user_id" IS NULL' in q for q in queries)


def test_required_fields_are_settled_from_the_files_null_counts(catalog: Catalog, con) -> None:
    # Given a day ingested as usual: each data file records 0 nulls for every required field
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 300), "test")])
    plays = catalog.load_table("music.plays")
    recording = _RecordingConnection(con)

    quality = plays_quality(recording, plays, PlaysSnapshot.current(plays), DAY, DAY)[DAY]

    # Then the count is 0 and no query counted the rows for it
    assert (quality.rows, quality.null_required) == (300, 0)
    assert not _counts_required_fields_by_rows(recording.queries)


def test_a_day_whose_files_lack_null_counts_is_counted_row_by_row(catalog: Catalog, con) -> None:
    # Given a day written while user_id kept no column statistics (another writer's setting), after one with them
    before = DAY - dt.timedelta(days=1)
    ingest_day(catalog, before, [ArrowRows(synthetic_batch(before, 50), "test")])
    plays = catalog.load_table("music.plays")
    with plays.transaction() as tx:
        tx.set_properties({"write.metadata.metrics.column.user_id": "none"})
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 200), "test")])
    plays = catalog.load_table("music.plays")
    day_file = next(t.file for t in plays.scan(row_filter=played_at_filter(DAY)).plan_files())
    assert plays.schema().find_field("user_id").field_id not in day_file.null_value_counts
    recording = _RecordingConnection(con)

    # When both days are measured in one chunk, and the day before alone
    quality = plays_quality(recording, plays, PlaysSnapshot.current(plays), before, DAY)
    counted_with_the_day = _counts_required_fields_by_rows(recording.queries)
    recording.queries.clear()
    plays_quality(recording, plays, PlaysSnapshot.current(plays), before - dt.timedelta(days=1), before)

    # Then the rows were counted for the rule with that day only (a day without files needs no count),
    # and each day has its rows and no breach
    assert counted_with_the_day
    assert not _counts_required_fields_by_rows(recording.queries)
    assert [(q.rows, q.null_required, q.duplicate_play_ids) for q in quality.values()] == [(50, 0, 0), (200, 0, 0)]


def test_plays_totals_count_unknown_durations_as_zero(catalog: Catalog, con) -> None:
    rows = synthetic_batch(DAY, 40)
    known = sum(rows["duration_seconds"].to_pylist()[:30])
    durations = pa.array(rows["duration_seconds"].to_pylist()[:30] + [None] * 10, pa.int32())
    rows = rows.set_column(rows.schema.get_field_index("duration_seconds"), "duration_seconds", durations)
    ingest_day(catalog, DAY, [ArrowRows(rows, "test")])
    plays = catalog.load_table("music.plays")

    totals = plays_totals_by_day(con, PlaysSnapshot.current(plays), DAY, DAY)

    assert [(day, t.plays, t.seconds_played) for day, t in totals.items()] == [(DAY, 40, known)]


def test_each_checked_rule_has_its_count_of_a_days_quality() -> None:
    assert {rule.figure for rule in CHECKED_RULES} == set(PlaysDayQuality.__dataclass_fields__) - {"day", "rows"}


def test_quality_counts_the_rows_ingest_rejects_for_the_same_rules(catalog: Catalog, con) -> None:
    # Given a day written behind the pipeline's back: 4 durations out of range either way and 3 repeated play_ids
    durations = {0: 86_401, 1: 90_000, 2: -1, 3: -3_600}
    plays, rows = _written_behind_the_pipelines_back(catalog, 200, durations, slice(50, 53))

    # When the day's quality is measured, and the same rows are validated as ingest would
    quality = plays_quality(con, plays, PlaysSnapshot.current(plays), DAY, DAY)[DAY]
    validator = DayValidator(PLAYS_SCHEMA, DAY)
    validator.classify(ArrowRows(rows, "behind-the-back"))

    # Then both count the same rows for each rule
    rejected = validator.totals.rejected_by_reason
    assert (quality.durations_out_of_range, rejected[DURATION_IN_RANGE.reason]) == (4, 4)
    assert (quality.duplicate_play_ids, rejected[UNIQUE_PLAY_ID.reason]) == (3, 3)
    assert sum(rejected.values()) == 7


DAYS = [DAY - dt.timedelta(days=2), DAY - dt.timedelta(days=1), DAY]


def _newest_by_scan(table) -> dt.date | None:
    """What the checks read before: the whole played_at column."""
    values = table.scan(selected_fields=("played_at",)).to_arrow().column("played_at").to_pylist()
    return max(values).date() if values else None


def _manifest_list_newest_day(table) -> dt.date:
    """The newest day the current manifest list's partition summaries allow (deleted files included)."""
    manifests = table.current_snapshot().manifests(table.io)
    return max(as_day(from_bytes(DateType(), m.partitions[0].upper_bound)) for m in manifests)


def test_the_newest_day_is_read_from_one_manifest_and_is_the_newest_played_at(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given three days ingested one after another: a manifest each
    for day in DAYS:
        ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 30), "test")])
    plays = catalog.load_table("music.plays")
    assert len(plays.current_snapshot().manifests(plays.io)) == 3

    # When the newest day is read from the metadata
    reads = record_manifest_reads(monkeypatch)
    newest = newest_day(plays)
    reads = list(reads)  # what newest_day opened, not the scan below

    # Then it is the day a scan of played_at finds, and only the newest day's manifest was opened
    assert newest == _newest_by_scan(plays) == DAY
    assert len(reads) == 1


@pytest.mark.parametrize("clustered", [False, True], ids=["a-manifest-a-day", "one-manifest"])
def test_the_newest_day_after_an_overwrite_removed_it_is_the_day_before(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, clustered: bool
) -> None:
    # Given three days (in a manifest each, or all in one), the newest of which an overwrite then removed
    for day in DAYS:
        ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, 30), "test")])
    if clustered:
        rewrite_manifests(catalog.load_table("music.plays"))
    plays = catalog.load_table("music.plays")
    assert len(plays.current_snapshot().manifests(plays.io)) == (1 if clustered else 3)
    plays.delete(played_at_filter(DAY))
    plays = catalog.load_table("music.plays")
    assert _manifest_list_newest_day(plays) == DAY  # the manifest list still bounds the deleted day's file

    # When the newest day is read from the metadata
    reads = record_manifest_reads(monkeypatch)
    newest = newest_day(plays)
    reads = list(reads)  # what newest_day opened, not the scan below

    # Then it is the day before, as a scan finds; a manifest holding only deletions is not even opened
    assert newest == _newest_by_scan(plays) == DAYS[1]
    assert len(reads) == 1


def test_a_table_without_data_has_no_newest_day(catalog: Catalog) -> None:
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 30), "test")])
    plays = catalog.load_table("music.plays")
    plays.delete(played_at_filter(DAY))

    assert newest_day(catalog.load_table("music.plays")) is None
    assert _newest_by_scan(catalog.load_table("music.plays")) is None
