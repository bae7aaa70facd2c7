"""Each table's health as Dagster observations on its asset, which the UI plots over time (Plots, "Events").

Logged after every ingest, mart run and maintenance step for the tables it touched, so an operator sees
small files climb through the day and fall after compaction on a chart rather than in run logs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping

import dagster as dg
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.tables.definitions import MART_TABLES, PLAYS
from sonik_pipeline.lakehouse.tables.health import TableHealth, table_health

# The tables with an asset of their own (named as the table). The quarantine and the source ledger are
# written by `plays` and have none: their figures are in `sonik tables` and the maintenance steps' metadata.
ASSET_OF_TABLE: Mapping[str, dg.AssetKey] = {t.identifier: dg.AssetKey(t.name) for t in (PLAYS, *MART_TABLES)}


def health_observation(health: TableHealth) -> dg.AssetObservation | None:
    """The observation of a table's figures on its asset; None for a table without one."""
    key = ASSET_OF_TABLE.get(health.table)
    if key is None:
        return None
    return dg.AssetObservation(asset_key=key, metadata=dict(health.figures()))


def observe_health(
    context: dg.OpExecutionContext | dg.AssetExecutionContext, tables: Iterable[Table], now: dt.datetime | None = None
) -> dict[str, dict[str, int | float]]:
    """Log every table's health on its asset and return the figures by table (for a step's metadata)."""
    now = now or dt.datetime.now(dt.UTC)
    figures = {}
    for table in tables:
        health = table_health(table, now)
        figures[health.table] = health.figures()
        if (observation := health_observation(health)) is not None:
            context.log_event(observation)
    return figures
