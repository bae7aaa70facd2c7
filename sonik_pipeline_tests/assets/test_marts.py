import dagster as dg
import duckdb
from pyiceberg.catalog import Catalog

from sonik_pipeline.assets.checks import PLAYS_CHECKS, RECONCILED_MARTS
from sonik_pipeline.lakehouse.duckdb_io.extensions import load_iceberg
from sonik_pipeline.lakehouse.marts.queries import DAILY_MARTS, ROLLING_MARTS
from sonik_pipeline_tests.conftest import SMALL_DAY_EVENTS, check_results, run_asset_job

DAYS = [f"2026-04-{d}" for d in range(14, 21)]
MART_TABLES = [f"music_marts.{m.name}" for m in (*DAILY_MARTS, *ROLLING_MARTS)]


def _sql(catalog: Catalog, query: str, **tables: str) -> list[tuple]:
    con = load_iceberg(duckdb.connect())
    scans = {k: f"iceberg_scan('{catalog.load_table(v).metadata_location}')" for k, v in tables.items()}
    return con.execute(query.format(**scans)).fetchall()


def test_a_range_of_plays_and_marts_runs_in_order_and_reconciles(defs, catalog: Catalog) -> None:
    result = run_asset_job(defs, "daily_job", DAYS[0], DAYS[-1])

    assert result.success
    materialized = {
        (m.asset_key.to_user_string(), m.partition)
        for m in result.get_asset_materialization_events()
        and [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    }
    assert materialized == {(a, d) for a in ["plays", *(t.split(".")[1] for t in MART_TABLES)] for d in DAYS}
    for table in MART_TABLES:
        days = _sql(catalog, "SELECT DISTINCT day::VARCHAR FROM {t} ORDER BY 1", t=table)
        assert [d for (d,) in days] == DAYS, table
    plays = _sql(
        catalog,
        "SELECT played_at::DATE::VARCHAR, count(*), sum(duration_seconds) FROM {p} GROUP BY 1 ORDER BY 1",
        p="music.plays",
    )
    assert [p[1] for p in plays] == [SMALL_DAY_EVENTS] * len(DAYS)
    for mart in (m.name for m in RECONCILED_MARTS):
        totals = _sql(
            catalog,
            "SELECT day::VARCHAR, sum(plays), sum(seconds_played) FROM {m} GROUP BY 1 ORDER BY 1",
            m=f"music_marts.{mart}",
        )
        assert totals == plays, mart
    checks = check_results(result)
    assert all(checks.values()) and len(checks) == len(PLAYS_CHECKS) + len(RECONCILED_MARTS)


def test_mart_metadata_reports_rows_input_snapshot_and_top_rows(defs, catalog: Catalog) -> None:
    result = run_asset_job(defs, "daily_job", DAYS[-1])

    plays_snapshot = str(catalog.load_table("music.plays").current_snapshot().snapshot_id)
    meta = {
        e.event_specific_data.materialization.asset_key.to_user_string(): e.event_specific_data.materialization.metadata
        for e in result.get_asset_materialization_events()
    }
    top = meta["daily_top_tracks"]
    assert top["rows"].value == 100
    assert top["plays_snapshot_id"].value == plays_snapshot
    assert top["query_seconds"].value > 0
    assert len(top["top_rows"].value.records) == 10
    assert top["top_rows"].value.records[0].data["rank"] == 1
    assert (
        meta["daily_user_stats"]["rows"].value
        == _sql(catalog, "SELECT count(DISTINCT user_id) FROM {p}", p="music.plays")[0][0]
    )


def test_rerunning_a_day_changes_nothing_but_snapshot_history(defs, catalog: Catalog) -> None:
    run_asset_job(defs, "daily_job", DAYS[-1])
    before = {t: sorted(catalog.load_table(t).scan().to_arrow().to_pylist(), key=str) for t in MART_TABLES}
    snapshots = {t: len(catalog.load_table(t).snapshots()) for t in MART_TABLES}

    assert run_asset_job(defs, "daily_job", DAYS[-1]).success

    for table in MART_TABLES:
        assert sorted(catalog.load_table(table).scan().to_arrow().to_pylist(), key=str) == before[table], table
        assert len(catalog.load_table(table).snapshots()) == snapshots[table] + 1


def test_marts_follow_any_day_of_plays_without_a_click(defs) -> None:
    instance = dg.DagsterInstance.get()
    assets = dg.AssetSelection.all()
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=assets)
    assert first.total_requested == 0  # nothing to follow yet

    assert run_asset_job(defs, "plays_job", "2026-04-10").success  # an old day, by hand
    tick = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=assets, cursor=first.cursor)

    for mart in DAILY_MARTS:
        assert tick.get_requested_partitions(dg.AssetKey(mart.name)) == {"2026-04-10"}, mart.name
    top7 = tick.get_requested_partitions(dg.AssetKey("top_artists_7d"))
    assert top7 == {f"2026-04-{d}" for d in range(10, 17)}  # every 7-day window the day falls in
    assert tick.get_requested_partitions(dg.AssetKey("trending_tracks")) == {f"2026-04-{d}" for d in range(10, 24)}
    assert tick.get_requested_partitions(dg.AssetKey("plays")) == set()


def _table_rows(catalog: Catalog, tables: list[str]) -> dict[str, list]:
    return {t: sorted(catalog.load_table(t).scan().to_arrow().to_pylist(), key=str) for t in tables}


def test_a_mart_materialized_alone_equals_it_materialized_with_all_the_others(
    defs, catalog: Catalog, settings, sonik_home
) -> None:
    # Given a week of plays
    assert run_asset_job(defs, "plays_job", DAYS[0], DAYS[-1]).success

    # When every mart is built in one run, and then each one alone (a subset of its multi-asset)
    assert run_asset_job(defs, "all_marts", DAYS[0], DAYS[-1], selection=dg.AssetSelection.groups("marts", "rolling"))
    together = _table_rows(catalog, MART_TABLES)
    for mart in (*DAILY_MARTS, *ROLLING_MARTS):
        alone = run_asset_job(
            defs, f"only_{mart.name}", DAYS[0], DAYS[-1], selection=dg.AssetSelection.assets(mart.name)
        )
        assert alone.success
        assert {
            m.asset_key.to_user_string()
            for m in alone.get_asset_materialization_events()
            and [e.event_specific_data.materialization for e in alone.get_asset_materialization_events()]
        } == {mart.name}

    # Then the tables are the same, row for row
    assert _table_rows(catalog, MART_TABLES) == together


def test_reading_plays_in_small_chunks_gives_the_same_marts(defs, catalog: Catalog) -> None:
    assert run_asset_job(defs, "plays_job", DAYS[0], DAYS[-1]).success
    marts = dg.AssetSelection.groups("marts", "rolling")
    assert run_asset_job(defs, "one_read", DAYS[0], DAYS[-1], selection=marts).success
    one_read = _table_rows(catalog, MART_TABLES)

    # A day of plays per read (2,000 rows each), the rolling views re-reading their windows each time
    chunked = {"ops": {op: {"config": {"max_rows_per_read": SMALL_DAY_EVENTS}} for op in
                       ("daily_marts", *(mart.name for mart in ROLLING_MARTS))}}  # fmt: skip
    result = run_asset_job(defs, "chunked", DAYS[0], DAYS[-1], selection=marts, run_config=chunked)

    assert result.success
    materializations = [e.event_specific_data.materialization for e in result.get_asset_materialization_events()]
    reads = {m.asset_key.to_user_string(): m.metadata["plays_reads"].value for m in materializations
             if "plays_reads" in m.metadata}  # fmt: skip
    assert reads == {m.name: len(DAYS) for m in (*DAILY_MARTS, *ROLLING_MARTS)}
    assert _table_rows(catalog, MART_TABLES) == one_read
