"""The tutorial's schema-evolution step made real: subscription_tier arrives in the middle of a week."""

import datetime as dt

import duckdb
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema

from sonik_pipeline.lakehouse.days import date_filter
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.ingest import run as ingest_module
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts.queries import DAILY_TIER_LISTENING
from sonik_pipeline.lakehouse.marts.run import run_marts
from sonik_pipeline.lakehouse.reads.plays_days import PlaysSnapshot
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_events
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, TableDef

DAYS = [dt.date(2026, 4, 14) + dt.timedelta(days=i) for i in range(7)]
TUTORIAL_PLAYS = TableDef(PLAYS.namespace, PLAYS.name, Schema(*PLAYS.schema.fields[:9]), PLAYS.spec)


def test_a_week_with_the_new_column_in_the_middle_reads_correctly(catalog: Catalog, monkeypatch: pytest.MonkeyPatch):
    # Given three days ingested by the code as it was before subscription_tier (the tutorial's 9 columns)
    with monkeypatch.context() as before:
        before.setattr(ingest_module, "PLAYS", TUTORIAL_PLAYS)
        for day in DAYS[:3]:
            ingest_day(catalog, day, synthetic_events(day, 500))
    table = catalog.load_table("music.plays")
    old_snapshot = table.current_snapshot().snapshot_id
    old_files = {t.file.file_path for t in table.scan().plan_files()}
    assert "subscription_tier" not in {f.name for f in table.schema().fields}

    # When the code with subscription_tier ingests the next four days
    results = [ingest_day(catalog, day, synthetic_events(day, 500)) for day in DAYS[3:]]

    # Then the table gained the column with its doc, as the tutorial's snippet shows, and nothing was rewritten
    table = catalog.load_table("music.plays")
    field = table.schema().find_field("subscription_tier")
    assert (field.field_id, field.required, field.doc) == (10, False, "Free, Premium, or Family")
    assert "subscription_tier" in str(table.schema()) and "Free, Premium, or Family" in str(table.schema())
    assert results[0].schema_changes.added == ("subscription_tier",)
    assert not results[1].schema_changes
    assert old_files <= {t.file.file_path for t in table.scan().plan_files()}

    # PyIceberg: old days read NULL, new days carry tiers; the old snapshot still reads as it was
    rows = table.scan().to_arrow().select(["played_at", "subscription_tier"]).to_pylist()
    by_day: dict[dt.date, set] = {}
    for row in rows:
        by_day.setdefault(row["played_at"].date(), set()).add(row["subscription_tier"])
    assert all(by_day[d] == {None} for d in DAYS[:3])
    assert all(by_day[d] == {"Free", "Premium", "Family"} for d in DAYS[3:])
    old = table.scan(snapshot_id=old_snapshot).to_arrow()
    assert old.num_rows == 1_500 and "subscription_tier" not in old.column_names  # read with its own schema

    # DuckDB reads the same through iceberg_scan, and the tier mart breaks listening down
    con = load_iceberg(duckdb.connect())
    src = PlaysSnapshot.current(table)
    per_day = con.execute(f"""SELECT played_at::DATE, count(*), count(subscription_tier) FROM {src.scan_sql()}
                              GROUP BY 1 ORDER BY 1""").fetchall()
    assert per_day == [(d, 500, 0) for d in DAYS[:3]] + [(d, 500, 500) for d in DAYS[3:]]
    [report] = run_marts(catalog, con, [DAILY_TIER_LISTENING], DAYS)
    tiers = catalog.load_table(DAILY_TIER_LISTENING.table.identifier)
    tiers_old = tiers.scan(row_filter=date_filter("day", DAYS[0])).to_arrow().to_pylist()
    tiers_new = tiers.scan(row_filter=date_filter("day", DAYS[-1])).to_arrow().to_pylist()
    assert report.plays == src
    assert [(r["subscription_tier"], r["plays"]) for r in tiers_old] == [(None, 500)]
    assert {r["subscription_tier"] for r in tiers_new} == {"Free", "Premium", "Family"}
    assert sum(r["plays"] for r in tiers_new) == 500


def test_a_user_keeps_their_tier_across_days(catalog: Catalog) -> None:
    for day in DAYS[:2]:
        ingest_day(catalog, day, synthetic_events(day, 3_000))
    rows = catalog.load_table("music.plays").scan().to_arrow().select(["user_id", "subscription_tier"]).to_pylist()
    tiers: dict[int, set] = {}
    for row in rows:
        tiers.setdefault(row["user_id"], set()).add(row["subscription_tier"])
    assert all(len(t) == 1 for t in tiers.values())
