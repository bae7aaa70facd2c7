"""Asset checks: plays must be clean before marts are built on it, and marts must add up to plays."""

import datetime as dt
from collections.abc import Sequence

import dagster as dg
from pyiceberg.table import Table

from sonik_pipeline.assets.plays import PLAYS_KEY
from sonik_pipeline.lakehouse.marts import (
    DAILY_COUNTRY_LISTENING,
    DAILY_DEVICE_MIX,
    DAILY_TIER_LISTENING,
    DAILY_USER_STATS,
    Mart,
    PlaysSnapshot,
    plays_snapshot_behind,
)
from sonik_pipeline.lakehouse.quality import mart_totals, plays_day_quality, plays_totals
from sonik_pipeline.lakehouse.tables import PLAYS
from sonik_pipeline.resources import LakehouseCatalog, LakehouseDuckDB

PLAY_ID_UNIQUE = "play_id_unique"
REQUIRED_FIELDS_PRESENT = "required_fields_present"
PLAYED_AT_INSIDE_DAY = "played_at_inside_day"
DURATIONS_IN_RANGE = "durations_in_range"
RECONCILES_WITH_PLAYS = "reconciles_with_plays"

# check name -> (PlaysDayQuality field that must be zero, description)
PLAYS_CHECKS = {
    PLAY_ID_UNIQUE: ("duplicate_play_ids", "No play_id appears twice in the day."),
    REQUIRED_FIELDS_PRESENT: ("null_required", "No required field (play_id ... played_at) is null."),
    PLAYED_AT_INSIDE_DAY: ("rows_outside_day", "Every data file of the day holds only played_at inside that UTC day."),
    DURATIONS_IN_RANGE: ("durations_out_of_range", "duration_seconds is within 0..86400."),
}
RECONCILED_MARTS = (DAILY_COUNTRY_LISTENING, DAILY_TIER_LISTENING, DAILY_DEVICE_MIX, DAILY_USER_STATS)


def _run_days(context: dg.AssetCheckExecutionContext) -> list[dt.date] | None:
    """The days the run targets (a partition or a range), or None for a run without partitions."""
    if context.has_partition_key_range:
        first, last = (
            dt.date.fromisoformat(k) for k in (context.partition_key_range.start, context.partition_key_range.end)
        )
        return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    if context.has_partition_key:
        return [dt.date.fromisoformat(context.partition_key)]
    return None


def _newest_day(table: Table, column: str) -> list[dt.date]:
    """Run on its own (from the UI), a check looks at the newest day the table holds."""
    values = table.scan(selected_fields=(column,)).to_arrow().column(column)
    if not len(values):
        return []
    newest = max(values.to_pylist())
    return [newest.date() if isinstance(newest, dt.datetime) else newest]


def build_plays_checks() -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(name, asset=PLAYS_KEY, description=desc, blocking=True)
            for name, (_, desc) in PLAYS_CHECKS.items()
        ],
        name="plays_quality",
    )
    def plays_quality(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseCatalog, duckdb: LakehouseDuckDB):
        """Blocking checks on each day of plays in the run: a day that fails stops the marts built on it."""
        plays = lakehouse.load().load_table(PLAYS.identifier)
        src = PlaysSnapshot.current(plays)
        with duckdb.get_connection() as con:
            days = _run_days(context) or _newest_day(plays, "played_at")
            measured = [plays_day_quality(con, plays, src, day) for day in days]
        for name, (field, _) in PLAYS_CHECKS.items():
            failing = {str(q.day): getattr(q, field) for q in measured if getattr(q, field)}
            yield dg.AssetCheckResult(
                check_name=name,
                asset_key=PLAYS_KEY,
                passed=not failing,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={
                    "days_checked": [str(q.day) for q in measured],
                    "failing_days": dg.MetadataValue.json(failing),
                    "rows_checked": sum(q.rows for q in measured),
                    "plays_snapshot_id": str(src.snapshot_id),
                },
            )

    return plays_quality


def _reconciliation_check(mart: Mart) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=dg.AssetKey(mart.name),
        name=RECONCILES_WITH_PLAYS,
        description=f"Total plays and seconds per day in {mart.name} equal music.plays at the snapshot it read.",
    )
    def reconciles(context: dg.AssetCheckExecutionContext, lakehouse: LakehouseCatalog, duckdb: LakehouseDuckDB):
        catalog = lakehouse.load()
        table = catalog.load_table(mart.table.identifier)
        days = _run_days(context) or _newest_day(table, "day")
        mismatches: dict[str, dict] = {}
        with duckdb.get_connection() as con:
            for day in days:
                src = plays_snapshot_behind(table, day)
                if src is None:
                    mismatches[str(day)] = {"error": "no materialization of this day"}
                    continue
                expected, actual = plays_totals(con, src, day), mart_totals(con, table, day)
                if expected != actual:
                    mismatches[str(day)] = {
                        "plays": [expected.plays, actual.plays],
                        "seconds_played": [expected.seconds_played, actual.seconds_played],
                    }
        return dg.AssetCheckResult(
            passed=not mismatches,
            metadata={
                "days_checked": [str(d) for d in days],
                "mismatches (plays, mart)": dg.MetadataValue.json(mismatches),
            },
        )

    return reconciles


def build_mart_checks() -> Sequence[dg.AssetChecksDefinition]:
    return [_reconciliation_check(mart) for mart in RECONCILED_MARTS]


def build_plays_freshness_checks(plays: dg.AssetsDefinition) -> Sequence[dg.AssetChecksDefinition]:
    """A missed day is seen, not discovered: the day that just ended must be in plays by 06:00 UTC.

    Dagster 1.13 supersedes these per-partition checks with ``FreshnessPolicy``, which judges an asset as a
    whole; a daily partition that never arrived is what matters here, so these are kept on purpose.
    """
    return dg.build_time_partition_freshness_checks(assets=[plays], deadline_cron="0 6 * * *", timezone="UTC")
