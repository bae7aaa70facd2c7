"""Quality measurements of a day of plays, and the totals marts are reconciled with."""

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest.run import day_filter, ingest_day
from sonik_pipeline.lakehouse.marts.queries import PlaysSnapshot
from sonik_pipeline.lakehouse.reads.quality import plays_day_quality, plays_totals
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.writes import replace_partition, stage_files

DAY = dt.date(2026, 4, 20)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = load_iceberg(duckdb.connect())
    connection.execute("SET TimeZone = 'UTC'")
    return connection


def test_an_ingested_day_is_clean(catalog: Catalog, con) -> None:
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 1_500), "test")])
    plays = catalog.load_table("music.plays")

    quality = plays_day_quality(con, plays, PlaysSnapshot.current(plays), DAY)

    assert (quality.rows, quality.duplicate_play_ids, quality.null_required) == (1_500, 0, 0)
    assert (quality.rows_outside_day, quality.durations_out_of_range) == (0, 0)


def test_a_day_written_behind_the_pipelines_back_shows_each_fault(catalog: Catalog, con) -> None:
    # Given a day with 2 duplicated play_ids, 3 durations out of range and 1 play of the next day in its files
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 10), "test")])
    plays = catalog.load_table("music.plays")
    rows = synthetic_batch(DAY, 100).cast(plays.schema().as_arrow())
    durations = pc.if_else(
        pa.array([i < 3 for i in range(100)]), pa.scalar(90_000, pa.int32()), rows["duration_seconds"]
    )
    rows = rows.set_column(
        rows.schema.get_field_index("duration_seconds"), rows.schema.field("duration_seconds"), durations
    )
    rows = pa.concat_tables([rows, rows.slice(10, 2)])
    replace_partition(plays, day_filter(DAY), stage_files(plays, [rows]), {})  # one file: the check reads its bounds
    plays.refresh()

    quality = plays_day_quality(con, plays, PlaysSnapshot.current(plays), DAY)

    assert (quality.rows, quality.duplicate_play_ids, quality.durations_out_of_range) == (102, 2, 3)
    assert quality.rows_outside_day == 0


def test_plays_totals_count_unknown_durations_as_zero(catalog: Catalog, con) -> None:
    rows = synthetic_batch(DAY, 40)
    known = sum(rows["duration_seconds"].to_pylist()[:30])
    durations = pa.array(rows["duration_seconds"].to_pylist()[:30] + [None] * 10, pa.int32())
    rows = rows.set_column(rows.schema.get_field_index("duration_seconds"), "duration_seconds", durations)
    ingest_day(catalog, DAY, [ArrowRows(rows, "test")])
    plays = catalog.load_table("music.plays")

    totals = plays_totals(con, PlaysSnapshot.current(plays), DAY)

    assert (totals.plays, totals.seconds_played) == (40, known)
