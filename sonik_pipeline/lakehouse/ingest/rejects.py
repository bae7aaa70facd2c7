"""The quarantine as something to act on: what ``music.plays_rejected`` holds, and replaying it.

A replay writes each quarantined event's payload (the raw line, or a Parquet row as a JSON object) back
into the landing zone as JSON Lines, in the folder of the UTC day its ``played_at`` belongs to, so the
next ingest of that day validates it like any other event: a valid one reaches ``music.plays``, one that
still fails is quarantined again under that day. Files have fixed names, one per quarantined day, reason
group and target day, so replaying twice overwrites rather than doubles.

Events that belong to the day they were quarantined from are not written back: that folder already
holds them, and a second copy would only be quarantined again as a duplicate. Fixing them is a fix of
the source file or the rules, then a re-run of that day.

Reads are SQL in DuckDB over the files PyIceberg plans for the day asked (``file_scan``), so neither
the listing nor a replay holds the quarantine in Python memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
from pyiceberg.table import Table

from sonik_pipeline.lakehouse.days import date_filter, date_sql, format_days
from sonik_pipeline.lakehouse.duckdb_io.file_scan import planned_select
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_string
from sonik_pipeline.lakehouse.ingest.validation import reason_group, reason_group_sql, utc_timestamp_sql
from sonik_pipeline.lakehouse.sources.landing import LandingZone
from sonik_pipeline.lakehouse.sources.landing_writer import atomic_landing_file
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_REJECTED

STREAM_ROWS = 50_000


def rejects_table(catalog: Catalog) -> Table | None:
    """``music.plays_rejected``, or None before its first write (no reject yet is zero rejects)."""
    try:
        table = catalog.load_table(PLAYS_REJECTED.identifier)
    except (NoSuchTableError, NoSuchNamespaceError):
        return None
    return table if table.current_snapshot() is not None else None


def _rejects_sql(table: Table, con: duckdb.DuckDBPyConnection, day: dt.date | None) -> str:
    """A SELECT of the quarantine (of ``day`` only, if given): the files PyIceberg plans, else iceberg_scan."""
    select = planned_select(table, con, date_filter("ingest_day", day) if day else "true")
    where = date_sql("ingest_day", day) if day else "true"
    return f"SELECT * FROM ({select}) WHERE {where}"


def _grouped_sql(table: Table, con: duckdb.DuckDBPyConnection, day: dt.date | None) -> str:
    """The quarantine with each event's reason group and the UTC day its payload's played_at belongs to.

    ``belongs_to`` is read as validation reads played_at (offsets honoured, naive times taken as UTC);
    it is NULL for a payload that is not a JSON object or has no readable played_at.
    """
    played_at = "json_extract_string(_json, '$.played_at')"
    return (
        f"SELECT *, {reason_group_sql('reason')} AS reason_group, "
        f"CASE WHEN json_type(_json) = 'OBJECT' THEN CAST({utc_timestamp_sql(played_at)} AS DATE) END AS belongs_to "
        f"FROM (SELECT *, CASE WHEN json_valid(payload) THEN payload END AS _json "
        f"FROM ({_rejects_sql(table, con, day)}))"
    )


def _utc(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    con.execute("SET TimeZone = 'UTC'")  # naive played_at values are UTC, as in validation
    return con


@dataclass(frozen=True)
class RejectGroup:
    """Quarantined events of one ingested day and reason group, with the first of them as a sample."""

    ingest_day: dt.date
    reason: str
    events: int
    belongs_to: str  # the day(s) their played_at belongs to, as ``belongs_to_text`` says them
    sample_play_id: str | None
    sample_source: str


def quarantine_groups(
    catalog: Catalog, con: duckdb.DuckDBPyConnection, day: dt.date | None = None, reason: str | None = None
) -> list[RejectGroup]:
    """Counts by ingested day and reason group (newest day first, biggest group first); [] for none."""
    table = rejects_table(catalog)
    if table is None:
        return []
    wanted = f"WHERE reason_group = {sql_string(reason_group(reason))}" if reason else ""
    rows = (
        _utc(con)
        .execute(
            f"""SELECT ingest_day, reason_group, count(*), min(belongs_to), max(belongs_to), count(DISTINCT belongs_to),
                first(struct_pack(play_id, source_file, source_line) ORDER BY source_file, source_line NULLS FIRST)
            FROM ({_grouped_sql(table, con, day)}) {wanted}
            GROUP BY ALL ORDER BY ingest_day DESC, 3 DESC, 2"""
        )
        .fetchall()
    )
    return [
        RejectGroup(
            ingest_day=ingest_day,
            reason=group,
            events=events,
            belongs_to=belongs_to_text(first, last, days),
            sample_play_id=sample["play_id"],
            sample_source=_source(sample["source_file"], sample["source_line"]),
        )
        for ingest_day, group, events, first, last, days, sample in rows
    ]


def belongs_to_text(first: dt.date | None, last: dt.date | None, days: int) -> str:
    """The days a group's events belong to: '2026-04-18', '2026-04-16...2026-04-18 (2 days)', or '' (none read)."""
    if first is None or last is None:
        return ""
    return format_days(first) if days == 1 else f"{format_days(first, last)} ({days} days)"


def _source(source_file: str, line: int | None) -> str:
    return f"{source_file}:{line}" if line is not None else source_file


def replay_file_name(from_day: dt.date, group: str) -> str:
    """The fixed name of a replay file: the same day and reason group always write the same file.

    A short hash of the group keeps two groups whose readable parts match from sharing a file.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", group.lower()).strip("-")[:48].rstrip("-")
    digest = hashlib.sha256(group.encode()).hexdigest()[:8]
    return f"replay-from-{from_day.isoformat()}-{slug}-{digest}.jsonl"


@dataclass(frozen=True)
class ReplayFile:
    """One landing file a replay writes: events of one reason group, into the folder of their day."""

    day: dt.date
    name: str
    reason: str
    events: int


@dataclass(frozen=True)
class Staying:
    """Events a replay leaves where they are, and why (they belong to their own day, or to none readable)."""

    reason: str
    events: int
    readable: bool  # played_at read, and it is the day they were quarantined from


@dataclass(frozen=True)
class ReplayPlan:
    from_day: dt.date
    files: list[ReplayFile]
    staying: list[Staying]

    @property
    def events(self) -> int:
        return sum(f.events for f in self.files)


def plan_replay(from_day: dt.date, counts: list[tuple[str, dt.date | None, int]]) -> ReplayPlan:
    """Which events go to which file, from (reason group, day they belong to or None, events) counts."""
    files, staying = [], []
    for group, belongs_to, events in sorted(counts, key=lambda c: (c[0], c[1] or dt.date.min)):
        if belongs_to is None or belongs_to == from_day:
            staying.append(Staying(group, events, readable=belongs_to is not None))
        else:
            files.append(ReplayFile(belongs_to, replay_file_name(from_day, group), group, events))
    return ReplayPlan(from_day, files, staying)


def replay_plan(
    catalog: Catalog, con: duckdb.DuckDBPyConnection, day: dt.date, reason: str | None = None
) -> ReplayPlan:
    """What a replay of ``day`` (of one reason group, if given) would write; writes nothing."""
    table = rejects_table(catalog)
    if table is None:
        return ReplayPlan(day, [], [])
    wanted = f"WHERE reason_group = {sql_string(reason_group(reason))}" if reason else ""
    sql = f"SELECT reason_group, belongs_to, count(*) FROM ({_grouped_sql(table, con, day)}) {wanted} GROUP BY ALL"
    counts = _utc(con).execute(sql).fetchall()
    return plan_replay(day, counts)


def _payloads(
    table: Table, con: duckdb.DuckDBPyConnection, day: dt.date, reason: str | None
) -> Iterator[tuple[str, dt.date, str]]:
    """(reason group, target day, payload) to replay, ordered so that each file is written in one go."""
    wanted = f"AND reason_group = {sql_string(reason_group(reason))}" if reason else ""
    sql = (
        f"SELECT reason_group, belongs_to, payload FROM ({_grouped_sql(table, con, day)}) "
        f"WHERE belongs_to IS NOT NULL AND belongs_to <> DATE '{day.isoformat()}' {wanted} "
        f"ORDER BY reason_group, belongs_to, source_file, source_line"
    )
    for batch in _utc(con).execute(sql).to_arrow_reader(STREAM_ROWS):
        yield from zip(*(batch.column(i).to_pylist() for i in range(3)), strict=True)


def write_replay(
    catalog: Catalog, con: duckdb.DuckDBPyConnection, zone: LandingZone, day: dt.date, reason: str | None = None
) -> ReplayPlan:
    """Write the replay files of ``day`` into the landing zone, each whole or not at all; return what was written."""
    plan = replay_plan(catalog, con, day, reason)
    table = rejects_table(catalog)
    if table is None or not plan.files:
        return plan
    written = []
    for (group, target), rows in itertools.groupby(_payloads(table, con, day, reason), key=lambda r: r[:2]):
        name = replay_file_name(day, group)
        events = 0
        with atomic_landing_file(zone, target, name) as out:
            payloads = (payload for _, _, payload in rows)
            while chunk := list(itertools.islice(payloads, STREAM_ROWS)):
                out.write("".join(f"{payload}\n" for payload in chunk).encode("utf-8"))
                events += len(chunk)
        written.append(ReplayFile(target, name, group, events))
    return ReplayPlan(day, written, plan.staying)
