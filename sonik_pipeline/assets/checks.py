"""Asset checks: plays must be clean before marts are built on it, and marts must add up to plays.

The checks are partitioned like their assets, so Dagster records a result per day. A run over N days
measures them all with a few grouped queries (``lakehouse/reads/quality.py``) and logs one evaluation per
day and check; a blocking check that fails on any day then fails its step, so no mart of the run is
built on it, and the failing days are the ones marked failed.
"""

import datetime as dt
from collections.abc import Iterator, Sequence

import dagster as dg
from pyiceberg.table import Table

from sonik_pipeline.assets.plays import PLAYS_KEY
from sonik_pipeline.dagster_internals import decorated_check_fn
from sonik_pipeline.lakehouse.days import days_between, parse_day
from sonik_pipeline.lakehouse.ingest.rules import (
    CHECKED_RULES,
    DURATION_IN_RANGE,
    PLAYED_AT_IN_DAY,
    REQUIRED_FIELDS,
    UNIQUE_PLAY_ID,
)
from sonik_pipeline.lakehouse.marts.queries import (
    DAILY_COUNTRY_LISTENING,
    DAILY_DEVICE_MIX,
    DAILY_TIER_LISTENING,
    DAILY_USER_STATS,
    USER_TRACK_DAYS,
)
from sonik_pipeline.lakehouse.marts.run import plays_snapshots_behind
from sonik_pipeline.lakehouse.reads.plays_days import PlaysSnapshot
from sonik_pipeline.lakehouse.reads.quality import mart_totals_by_day, newest_day, plays_quality, plays_totals_by_day
from sonik_pipeline.lakehouse.tables.definitions import PLAYS
from sonik_pipeline.resources import LakehouseCatalog, LakehouseDuckDB

PLAY_ID_UNIQUE = UNIQUE_PLAY_ID.name
REQUIRED_FIELDS_PRESENT = REQUIRED_FIELDS.name
PLAYED_AT_INSIDE_DAY = PLAYED_AT_IN_DAY.name
DURATIONS_IN_RANGE = DURATION_IN_RANGE.name
RECONCILES_WITH_PLAYS = "reconciles_with_plays"

# The checks on plays are the validation rules measured on committed days: check name -> rule (its
# description, and the PlaysDayQuality figure that must be zero).
PLAYS_CHECKS = {rule.name: rule for rule in CHECKED_RULES}
RECONCILED_MARTS = (DAILY_COUNTRY_LISTENING, DAILY_TIER_LISTENING, DAILY_DEVICE_MIX, DAILY_USER_STATS, USER_TRACK_DAYS)


def _run_days(context: dg.AssetCheckExecutionContext) -> list[dt.date] | None:
    """The days the run targets (a partition or a range), or None for a run without partitions."""
    if context.has_partition_key_range:
        start, end = context.partition_key_range.start, context.partition_key_range.end
        return days_between(parse_day(start), parse_day(end))
    if context.has_partition_key:
        return [parse_day(context.partition_key)]
    return None


def _newest_day(table: Table) -> list[dt.date]:
    """Run on its own (from the UI), a check looks at the newest day the table holds (from its metadata)."""
    newest = newest_day(table)
    return [newest] if newest is not None else []


def _results(
    context: dg.AssetCheckExecutionContext,
    asset: dg.AssetKey,
    check: str,
    by_day: dict[dt.date, tuple[bool, dict]],
    blocking: bool,
) -> Iterator[dg.AssetCheckResult]:
    """A partitioned check's results: one per day of the run, so Dagster records each day's outcome.

    Dagster 1.13 gives a check result the step's partition only when the step has one; for a range, each
    day is logged as its own evaluation, and one result for the whole range follows (a blocking check's
    output is required, and a failing one keeps the marts of the run from being built).
    """
    if context.has_partition_key:
        [(passed, metadata)] = by_day.values()
        yield dg.AssetCheckResult(asset_key=asset, check_name=check, passed=passed, metadata=metadata)
        return
    for day, (passed, metadata) in by_day.items():
        context.op_execution_context.log_event(
            dg.AssetCheckEvaluation(
                asset_key=asset,
                check_name=check,
                passed=passed,
                partition=str(day),
                metadata=metadata,
                severity=dg.AssetCheckSeverity.ERROR,
                blocking=blocking,
            )
        )
    failing = [str(day) for day, (passed, _) in by_day.items() if not passed]
    yield dg.AssetCheckResult(
        asset_key=asset,
        check_name=check,
        passed=not failing,
        metadata={"days_checked": len(by_day), "failing_days": dg.MetadataValue.json(failing)},
    )


def build_plays_checks(partitions: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                name, asset=PLAYS_KEY, description=rule.description, blocking=True, partitions_def=partitions
            )
            for name, rule in PLAYS_CHECKS.items()
        ],
        name="plays_quality",
    )
    def plays_quality_checks(
        context: dg.AssetCheckExecutionContext, lakehouse: LakehouseCatalog, duckdb: LakehouseDuckDB
    ) -> Iterator[dg.AssetCheckResult]:
        """Blocking checks on each day of plays in the run: a day that fails stops the marts built on it."""
        plays = lakehouse.load().load_table(PLAYS.identifier)
        src = PlaysSnapshot.current(plays)
        days = _run_days(context) or _newest_day(plays)
        with duckdb.get_connection() as con:
            measured = plays_quality(con, plays, src, days[0], days[-1]) if days else {}
        context.log.info(f"checked {len(days)} days of plays at snapshot {src.snapshot_id}")
        for name, rule in PLAYS_CHECKS.items():
            by_day = {}
            for day in days:
                found = getattr(measured[day], rule.figure)
                metadata = {
                    rule.figure: found,
                    "rows_checked": measured[day].rows,
                    "plays_snapshot_id": str(src.snapshot_id),
                }
                by_day[day] = (not found, metadata)
            yield from _results(context, PLAYS_KEY, name, by_day, blocking=True)

    return plays_quality_checks


def build_mart_checks(partitions: dg.PartitionsDefinition) -> Sequence[dg.AssetChecksDefinition]:
    @dg.multi_asset_check(
        specs=[
            dg.AssetCheckSpec(
                RECONCILES_WITH_PLAYS,
                asset=dg.AssetKey(mart.name),
                description=f"Plays and seconds per day in {mart.name} equal music.plays at the snapshot it read.",
                partitions_def=partitions,
            )
            for mart in RECONCILED_MARTS
        ],
        name="marts_reconcile_with_plays",
        can_subset=True,
    )
    def reconciliation_checks(
        context: dg.AssetCheckExecutionContext, lakehouse: LakehouseCatalog, duckdb: LakehouseDuckDB
    ) -> Iterator[dg.AssetCheckResult]:
        """Each mart's plays and seconds per day, against plays at the snapshot that mart read: a few queries."""
        catalog = lakehouse.load()
        selected = {key.asset_key for key in context.selected_asset_check_keys}
        expected: dict[PlaysSnapshot, dict] = {}  # plays totals per snapshot read, shared by the marts
        with duckdb.get_connection() as con:
            for mart in (m for m in RECONCILED_MARTS if dg.AssetKey(m.name) in selected):
                table = catalog.load_table(mart.table.identifier)
                days = _run_days(context) or _newest_day(table)
                if not days:
                    continue
                behind = plays_snapshots_behind(table, days)
                actual = mart_totals_by_day(con, table, days[0], days[-1])
                for src in {s for s in behind.values() if s is not None} - expected.keys():
                    read = [d for d, s in behind.items() if s == src]
                    expected[src] = plays_totals_by_day(con, src, min(read), max(read))
                by_day = {}
                for day in days:
                    src = behind[day]
                    if src is None:
                        passed, metadata = False, {"error": "no materialization of this day"}
                    else:
                        want, got = expected[src].get(day), actual.get(day)
                        passed = want == got
                        metadata = {
                            "plays (plays, mart)": dg.MetadataValue.json([_of(want, "plays"), _of(got, "plays")]),
                            "seconds (plays, mart)": dg.MetadataValue.json(
                                [_of(want, "seconds_played"), _of(got, "seconds_played")]
                            ),
                            "plays_snapshot_id": str(src.snapshot_id),
                        }
                    by_day[day] = (passed, metadata)
                yield from _results(context, dg.AssetKey(mart.name), RECONCILES_WITH_PLAYS, by_day, blocking=False)

    return [reconciliation_checks]


def _of(totals, field: str) -> int:
    return getattr(totals, field) if totals is not None else 0


def build_plays_freshness_checks(plays: dg.AssetsDefinition) -> Sequence[dg.AssetChecksDefinition]:
    """A missed day is seen, not discovered: the day that just ended must be in plays by 06:00 UTC.

    Dagster 1.13 supersedes these per-partition checks with ``FreshnessPolicy``, which judges an asset as a
    whole; a daily partition that never arrived is what matters here, so these are kept on purpose.

    Freshness is judged by ``plays_freshness_sensor`` on the clock, in runs of the check alone. A run that
    materializes assets (``dagster asset materialize --select plays`` over old days, a backfill) selects
    the check with its asset, but whether yesterday has landed says nothing about the days that run
    wrote: there the check yields no result (it may, being part of a subsettable multi-check) and logs why.
    """
    [dagster_check] = dg.build_time_partition_freshness_checks(
        assets=[plays], deadline_cron="0 6 * * *", timezone="UTC"
    )
    evaluate = decorated_check_fn(dagster_check)  # Dagster's own evaluation

    @dg.multi_asset_check(specs=list(dagster_check.check_specs), can_subset=True, name=dagster_check.node_def.name)
    def plays_freshness(context: dg.AssetCheckExecutionContext):
        # A run launched with an asset selection (the CLI, the UI) says so on the run; a job over assets on
        # its job definition. The sensor's runs select the check alone.
        if context.run.asset_selection or context.job_def.asset_layer.selected_asset_keys:
            context.log.info(
                "freshness is judged by plays_freshness_sensor, not in runs that materialize assets: no result here"
            )
            return
        yield from evaluate(context)

    return [plays_freshness]
