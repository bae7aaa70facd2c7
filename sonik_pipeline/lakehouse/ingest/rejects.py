"""The quarantine as something to act on: what ``music.plays_rejected`` holds, and replaying it.

A replay writes each quarantined event's payload (the raw line, or a Parquet row as a JSON object) back
into the landing zone as JSON Lines, in the folder of the UTC day its ``played_at`` belongs to, so the
next ingest of that day validates it like any other event: a valid one reaches ``music.plays``, one that
still fails is quarantined again under that day. Files have fixed names, one per quarantined day, reason
group and target day, so replaying twice overwrites rather than doubles.

Events that belong to the day they were quarantined from are not written back: that folder already
holds them, and a second copy would only be quarantined again as a duplicate. Fixing them is a fix of
the source file or the rules, then a re-run of that day. Nor are events of a day no partition holds
(before ``SONIK_START_DATE``, after today, or 1970-01-01, a played_at of 0): a folder for such a day
would never be ingested. A landing file that could not be read at all is one quarantine row with no
payload: it is listed as a file, never counted as an event, and a replay has nothing of it to write.

Reads are SQL in DuckDB over the files PyIceberg plans for the day asked (``file_scan``), so neither
the listing nor a replay holds the quarantine in Python memory.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import re
from collections.abc import Iterator, Sequence
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
EPOCH_DAY = dt.date(1970, 1, 1)  # where a played_at of 0 (a default, not a time) lands

# A quarantine row for a whole landing file that could not be read (``DayValidator.classify`` of an
# ``UnreadableFile``): no play_id, no line, no payload. Every event's row has a payload (its line, or
# its row as JSON), or a line number (an empty line), so this matches files only.
_WHOLE_FILE_SQL = "(play_id IS NULL AND source_line IS NULL AND coalesce(payload, '') = '')"


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
        f"SELECT *, {reason_group_sql('reason')} AS reason_group, {_WHOLE_FILE_SQL} AS whole_file, "
        f"CASE WHEN json_type(_json) = 'OBJECT' THEN CAST({utc_timestamp_sql(played_at)} AS DATE) END AS belongs_to "
        f"FROM (SELECT *, CASE WHEN json_valid(payload) THEN payload END AS _json "
        f"FROM ({_rejects_sql(table, con, day)}))"
    )


def _utc(con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
    con.execute("SET TimeZone = 'UTC'")  # naive played_at values are UTC, as in validation
    return con


@dataclass(frozen=True)
class RejectGroup:
    """Quarantined events of one ingested day and reason group, with the first of them as a sample; or the
    landing files of that day that could not be read at all (``files``, ``events`` 0), the first named."""

    ingest_day: dt.date
    reason: str
    events: int
    files: int  # whole landing files not read: no event of theirs reached validation
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
            f"""SELECT ingest_day, reason_group, count(*) FILTER (NOT whole_file), count(*) FILTER (whole_file),
                min(belongs_to), max(belongs_to), count(DISTINCT belongs_to),
                first(struct_pack(play_id, source_file, source_line) ORDER BY source_file, source_line NULLS FIRST)
            FROM ({_grouped_sql(table, con, day)}) {wanted}
            GROUP BY ALL ORDER BY ingest_day DESC, 3 DESC, 4 DESC, 2"""
        )
        .fetchall()
    )
    return [
        RejectGroup(
            ingest_day=ingest_day,
            reason=group,
            events=events,
            files=files,
            belongs_to=belongs_to_text(first, last, days),
            sample_play_id=sample["play_id"],
            sample_source=_source(sample["source_file"], sample["source_line"]),
        )
        for ingest_day, group, events, files, first, last, days, sample in rows
    ]


@dataclass(frozen=True)
class UnreadableFileReject:
    """A landing file an ingest could not read at all, as its quarantine row records it."""

    ingest_day: dt.date
    source_file: str
    reason: str


def unreadable_files(
    catalog: Catalog, con: duckdb.DuckDBPyConnection, day: dt.date | None = None, reason: str | None = None
) -> list[UnreadableFileReject]:
    """The quarantined whole files (of ``day`` and one reason group, if given), newest day first."""
    table = rejects_table(catalog)
    if table is None:
        return []
    wanted = f"AND reason_group = {sql_string(reason_group(reason))}" if reason else ""
    rows = (
        _utc(con)
        .execute(
            f"""SELECT DISTINCT ingest_day, source_file, reason FROM ({_grouped_sql(table, con, day)})
            WHERE whole_file {wanted} ORDER BY ingest_day DESC, source_file"""
        )
        .fetchall()
    )
    return [UnreadableFileReject(*row) for row in rows]


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
    """Events a replay leaves where they are, and why: they belong to their own day, to none readable, or
    to days no partition holds (``outside`` says which and why); or whole files that were never read."""

    reason: str
    events: int
    readable: bool  # played_at read, and it is the day they were quarantined from
    outside: str = ""  # the days their played_at reads as, when no partition holds them, and why
    files: int = 0  # unreadable landing files (``events`` is then 0): nothing of them to write


@dataclass(frozen=True)
class ReplayPlan:
    from_day: dt.date
    files: list[ReplayFile]
    staying: list[Staying]

    @property
    def events(self) -> int:
        return sum(f.events for f in self.files)


def outside_partitions(day: dt.date, first_day: dt.date, last_day: dt.date) -> str:
    """Why no partition holds ``day`` ('' when one does): what a replay says of events it will not write there."""
    if day == EPOCH_DAY:
        return "the Unix epoch (a played_at of 0), not a play's time"
    if day < first_day:
        return f"before {first_day}, the first partition"
    if day > last_day:
        return f"after {last_day}, the newest day the pipeline can ingest"
    return ""


def plan_replay(
    from_day: dt.date,
    counts: list[tuple[str, dt.date | None, int]],
    unreadable: Sequence[tuple[str, int]] = (),
    *,
    first_day: dt.date = dt.date.min,
    last_day: dt.date = dt.date.max,
) -> ReplayPlan:
    """Which events go to which file, from (reason group, day they belong to or None, events) counts.

    Only days from ``first_day`` to ``last_day`` (the partitions), never 1970-01-01, are written to;
    events of other days stay, one entry per reason group and why (with the span of their days).
    ``unreadable`` are (reason group, files) of whole files not read: they stay as files.
    """
    files, staying = [], []
    outside: dict[tuple[str, str], tuple[dt.date, dt.date, int]] = {}
    for group, belongs_to, events in sorted(counts, key=lambda c: (c[0], c[1] or dt.date.min)):
        why = outside_partitions(belongs_to, first_day, last_day) if belongs_to is not None else ""
        if why:
            first, _, before = outside.get((group, why), (belongs_to, belongs_to, 0))
            outside[(group, why)] = (first, belongs_to, before + events)
        elif belongs_to is None or belongs_to == from_day:
            staying.append(Staying(group, events, readable=belongs_to is not None))
        else:
            files.append(ReplayFile(belongs_to, replay_file_name(from_day, group), group, events))
    for (group, why), (first, last, events) in outside.items():
        staying.append(Staying(group, events, readable=False, outside=f"{format_days(first, last)}: {why}"))
    staying += [Staying(group, 0, readable=False, files=n) for group, n in sorted(unreadable)]
    return ReplayPlan(from_day, files, staying)


def replay_plan(
    catalog: Catalog,
    con: duckdb.DuckDBPyConnection,
    day: dt.date,
    reason: str | None = None,
    *,
    first_day: dt.date = dt.date.min,
    last_day: dt.date = dt.date.max,
) -> ReplayPlan:
    """What a replay of ``day`` (of one reason group, if given) would write into the days ``first_day`` to
    ``last_day``; writes nothing."""
    table = rejects_table(catalog)
    if table is None:
        return ReplayPlan(day, [], [])
    wanted = f"WHERE reason_group = {sql_string(reason_group(reason))}" if reason else ""
    sql = (
        f"SELECT reason_group, belongs_to, whole_file, count(*) FROM ({_grouped_sql(table, con, day)}) {wanted} "
        "GROUP BY ALL"
    )
    rows = _utc(con).execute(sql).fetchall()
    counts = [(group, belongs_to, n) for group, belongs_to, whole_file, n in rows if not whole_file]
    unreadable = [(group, n) for group, _, whole_file, n in rows if whole_file]
    return plan_replay(day, counts, unreadable, first_day=first_day, last_day=last_day)


def _payloads(
    table: Table, con: duckdb.DuckDBPyConnection, day: dt.date, reason: str | None, targets: list[dt.date]
) -> Iterator[tuple[str, dt.date, str]]:
    """(reason group, target day, payload) to replay into ``targets`` only, ordered so that each file is
    written in one go."""
    wanted = f"AND reason_group = {sql_string(reason_group(reason))}" if reason else ""
    days = ", ".join(f"DATE '{target.isoformat()}'" for target in targets)
    sql = (
        f"SELECT reason_group, belongs_to, payload FROM ({_grouped_sql(table, con, day)}) "
        f"WHERE NOT whole_file AND belongs_to IN ({days}) AND belongs_to <> DATE '{day.isoformat()}' {wanted} "
        f"ORDER BY reason_group, belongs_to, source_file, source_line"
    )
    for batch in _utc(con).execute(sql).to_arrow_reader(STREAM_ROWS):
        yield from zip(*(batch.column(i).to_pylist() for i in range(3)), strict=True)


def write_replay(
    catalog: Catalog,
    con: duckdb.DuckDBPyConnection,
    zone: LandingZone,
    day: dt.date,
    reason: str | None = None,
    *,
    first_day: dt.date = dt.date.min,
    last_day: dt.date = dt.date.max,
) -> ReplayPlan:
    """Write the replay files of ``day`` into the landing zone's folders of the days ``first_day`` to
    ``last_day`` (``replay_plan``), each whole or not at all; return what was written."""
    plan = replay_plan(catalog, con, day, reason, first_day=first_day, last_day=last_day)
    table = rejects_table(catalog)
    if table is None or not plan.files:
        return plan
    written = []
    targets = sorted({f.day for f in plan.files})
    payloads = _payloads(table, con, day, reason, targets)
    for (group, target), rows in itertools.groupby(payloads, key=lambda r: r[:2]):
        name = replay_file_name(day, group)
        events = 0
        with atomic_landing_file(zone, target, name) as out:
            payloads = (payload for _, _, payload in rows)
            while chunk := list(itertools.islice(payloads, STREAM_ROWS)):
                out.write("".join(f"{payload}\n" for payload in chunk).encode("utf-8"))
                events += len(chunk)
        written.append(ReplayFile(target, name, group, events))
    return ReplayPlan(day, written, plan.staying)
