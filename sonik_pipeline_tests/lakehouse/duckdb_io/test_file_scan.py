import datetime as dt
import re

import duckdb
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import ListType, LongType, NestedField

from sonik_pipeline.lakehouse.days import played_at_sql
from sonik_pipeline.lakehouse.duckdb_io import file_scan
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.reads.plays_days import PlaysSnapshot
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch

DAYS = [dt.date(2026, 3, 30) + dt.timedelta(days=i) for i in range(4)]  # two months
EVENTS = 60


@pytest.fixture
def plays(catalog: Catalog):
    for day in DAYS:
        ingest_day(catalog, day, [ArrowRows(synthetic_batch(day, EVENTS), "test")])
    return catalog.load_table("music.plays")


def _day(con: duckdb.DuckDBPyConnection, relation: str, day: dt.date) -> tuple:
    return con.execute(
        f"SELECT count(*), sum(hash(play_id, user_id, track_id, artist, title, played_at, duration_seconds, country, "
        f"device, subscription_tier)) FROM {relation} WHERE {played_at_sql(day)}"
    ).fetchone()


def test_a_days_read_opens_only_its_files_and_equals_iceberg_scan(plays) -> None:
    con = load_iceberg(duckdb.connect())
    src = PlaysSnapshot.current(plays)

    relation = src.days_sql(con, DAYS[1], DAYS[1])

    assert "iceberg_scan" not in relation and relation.count(".parquet'") == 1
    assert "played_day=2026-03-31" in relation
    assert _day(con, relation, DAYS[1]) == _day(con, src.scan_sql(), DAYS[1])
    assert _day(con, relation, DAYS[1])[0] == EVENTS
    plan = con.execute(f"EXPLAIN ANALYZE SELECT count(DISTINCT country) FROM {relation}").fetchall()[0][1]
    assert re.search(r"Total Files Read: 1\b", plan), plan


def test_days_with_no_file_read_as_zero_rows_with_every_column(plays) -> None:
    con = duckdb.connect()
    src = PlaysSnapshot.current(plays)

    relation = src.days_sql(con, dt.date(2026, 5, 1), dt.date(2026, 5, 2))

    described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    assert [name for name, *_ in described] == [f.name for f in plays.schema().fields]
    assert con.execute(f"SELECT count(*) FROM {relation}").fetchone() == (0,)


def test_a_renamed_column_or_a_snapshot_without_its_table_reads_through_iceberg_scan(plays) -> None:
    con = load_iceberg(duckdb.connect())
    with plays.update_schema() as update:
        update.rename_column("device", "device_type")
    src = PlaysSnapshot.current(plays)

    assert src.days_sql(con, DAYS[0], DAYS[0]).startswith("iceberg_scan(")
    unbound = PlaysSnapshot(src.metadata_location, src.snapshot_id)  # as a mart's summary records it
    assert unbound == src and unbound.days_sql(con, DAYS[0], DAYS[0]) == src.scan_sql()
    # iceberg_scan maps the files by field id; pinned to the snapshot, it names columns as that snapshot did
    [(count, devices)] = con.execute(
        f"SELECT count(*), count(device) FROM {src.days_sql(con, DAYS[0], DAYS[0])} WHERE {played_at_sql(DAYS[0])}"
    ).fetchall()
    assert count == devices == EVENTS


def test_the_duckdb_reader_is_used_only_where_names_map_the_files() -> None:
    class _Table:  # just what native_select reads
        def __init__(self, *schemas):
            self.metadata = type("M", (), {"schemas": list(schemas)})()
            self._current = schemas[-1]

        def schema(self):
            return self._current

    plain = Schema(NestedField(1, "a", LongType()))
    renamed = Schema(NestedField(1, "b", LongType()))
    nested = Schema(NestedField(1, "a", ListType(2, LongType())))
    assert file_scan.columns_keep_their_names(_Table(plain)) is True
    assert file_scan.columns_keep_their_names(_Table(plain, renamed)) is False
    assert file_scan.native_select(_Table(nested), None, []) is None
