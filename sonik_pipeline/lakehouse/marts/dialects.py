"""Where DuckDB's SQL and Spark SQL differ for the marts: the one place the two engines' queries part ways.

The marts' queries (``queries.py``) are written once, in what both dialects read the same way (``CAST``,
``count(*) FILTER (WHERE ...)``, window functions, a subquery where DuckDB alone has ``QUALIFY``,
``date - n``), and take from a ``Dialect`` the few things the two spell differently. A transpiler (sqlglot)
was weighed and left out: these three are all the differences there are, each small enough to read here.
(The timestamp literals also serve the read of plays' days: ``plays_days.select_days``.)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    """How one SQL engine spells what the marts need beyond the common subset."""

    name: str
    # The type of music.plays' played_at (no time zone), for its literals. Spark's plain TIMESTAMP has one:
    # comparing played_at with it would cast the column, and Iceberg could no longer prune other days' files.
    timestamp: str
    # A SELECT of one DATE column ``target``: every day from {first} to {last}, both included.
    day_series: str
    # The aggregate of the {value} with the highest {count} in the group, ties to the smallest value.
    most_played: str

    def days(self, first: dt.date, last: dt.date) -> str:
        return self.day_series.format(first=first, last=last)

    def most_played_of(self, value: str, count: str) -> str:
        return self.most_played.format(value=value, count=count)


DUCKDB = Dialect(
    "duckdb",
    timestamp="TIMESTAMP",
    day_series="SELECT CAST(unnest(range(DATE '{first}', DATE '{last}' + 1, INTERVAL 1 DAY)) AS DATE) AS target",
    most_played="first({value} ORDER BY {count} DESC, {value})",
)
SPARK = Dialect(
    "spark",
    timestamp="TIMESTAMP_NTZ",
    day_series="SELECT explode(sequence(DATE '{first}', DATE '{last}', INTERVAL 1 DAY)) AS target",
    most_played="min_by({value}, struct(-{count}, {value}))",  # structs compare field by field
)
