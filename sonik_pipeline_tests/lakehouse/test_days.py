"""The one vocabulary for a day: keys and ranges as text, the rows of days as a filter and as SQL, the epoch."""

import datetime as dt

import duckdb
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.expressions.visitors import expression_evaluator
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.typedef import Record
from pyiceberg.types import DateType, NestedField, TimestampType

from sonik_pipeline.lakehouse.days import (
    as_day,
    date_filter,
    date_sql,
    epoch_day,
    epoch_millis,
    format_days,
    parse_day,
    parse_days,
    played_at_filter,
    played_at_sql,
)
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, ensure_table
from sonik_pipeline.lakehouse.tables.writes import replace_partition, stage_files
from sonik_pipeline.partitions import day_of

D18, D19, D20 = dt.date(2026, 4, 18), dt.date(2026, 4, 19), dt.date(2026, 4, 20)
MART_DAYS = Schema(NestedField(1, "day", DateType(), required=True))


def test_a_day_and_a_range_read_back_as_they_were_written() -> None:
    assert format_days(D20) == format_days(D20, D20) == "2026-04-20"
    assert format_days(D18, D20) == "2026-04-18...2026-04-20"
    assert parse_days("2026-04-18...2026-04-20") == (D18, D20)
    assert parse_days("2026-04-20") == (D20, D20)
    assert parse_day("2026-04-20") == day_of("2026-04-20") == D20  # Dagster's partition keys read the same way
    with pytest.raises(ValueError):
        parse_days("2026-04-18..2026-04-20")


def test_the_epoch_is_icebergs() -> None:
    assert epoch_day(D20) == DayTransform().transform(TimestampType())(1_776_643_200_000_000) == 20_563
    assert as_day(epoch_day(D20)) == as_day(D20) == D20
    assert epoch_millis(dt.datetime(2026, 4, 20, 12, 0, 0, 123_000, tzinfo=dt.UTC)) == 1_776_686_400_123


def test_the_filter_and_the_sql_of_days_hold_the_same_rows_to_the_microsecond(catalog: Catalog) -> None:
    # Given plays at the very edges of the 19th and 20th
    edges = [
        dt.datetime(2026, 4, 18, 23, 59, 59, 999_999),
        dt.datetime(2026, 4, 19),
        dt.datetime(2026, 4, 20, 23, 59, 59, 999_999),
        dt.datetime(2026, 4, 21),
    ]
    rows = synthetic_batch(D19, len(edges)).cast(PLAYS.schema.as_arrow())
    rows = rows.set_column(rows.schema.get_field_index("played_at"), "played_at", pa.array(edges, pa.timestamp("us")))
    table, _ = ensure_table(catalog, PLAYS)
    replace_partition(table, played_at_filter(D18, dt.date(2026, 4, 21)), stage_files(table, [rows]), {})

    # When the 19th..20th are read through PyIceberg and through DuckDB
    read = table.refresh().scan(row_filter=played_at_filter(D19, D20)).to_arrow()
    con = duckdb.connect()
    con.register("plays", rows)
    in_sql = con.execute(f"SELECT played_at FROM plays WHERE {played_at_sql(D19, D20)} ORDER BY 1").fetchall()

    # Then both hold exactly the two plays inside those days
    assert sorted(read.column("played_at").to_pylist()) == [t for (t,) in in_sql] == edges[1:3]


def test_a_date_columns_days_as_a_filter_and_as_sql() -> None:
    days = [D18, D19, D20, dt.date(2026, 4, 21)]
    in_filter = expression_evaluator(MART_DAYS, date_filter("day", D19, D20), case_sensitive=True)
    con = duckdb.connect()
    con.register("marts", pa.table({"day": pa.array(days, pa.date32())}))

    assert [day for day in days if in_filter(Record(epoch_day(day)))] == [D19, D20]
    assert con.execute(f"SELECT day FROM marts WHERE {date_sql('day', D19, D20)} ORDER BY 1").fetchall() == [
        (D19,),
        (D20,),
    ]
    assert con.execute(f"SELECT day FROM marts WHERE {date_sql('day', D18)}").fetchall() == [(D18,)]
