"""Ingest on Spark: the day's parts judged by the project's own validator in Spark's executors, duplicates
found across the whole day by Spark, and each group of days replaced by Iceberg overwrites Spark commits.

The rules are defined once. Each split of a day (a landing file, a synthetic batch: ``day_sources.py``) is
read and judged by ``DayValidator`` inside an executor (``mapInArrow``), exactly as the local engine reads
and judges it: typing, strict JSON and UTF-8, long lines, unreadable files, every row rule and its reason.
Only the duplicates need the whole day: Spark groups the day's valid play_ids and keeps the first copy of
each in the order the local engine reads them (file by file, line by line); the later copies go to the
quarantine. A duplicate's payload is the event as typed (its file and line point to the raw line).

The guards are the local engine's: a day whose reject share is over the threshold or with an unreadable
file is refused after its quarantine is written, a re-ingest that would shrink a day is refused, an empty
day is an error, and the days before a refused one land. The quarantine and then the plays of a group of
days (``days_per_commit``) are each one overwrite of exactly those days, validated from the snapshot whose
rows the shrink guard counted, so a concurrent writer makes this commit fail rather than be overwritten.
The landing files read are then recorded as on the local engine. Only counts, the unreadable files and a
five-row preview per day come back to this process, so its memory does not grow with the day.
"""

from __future__ import annotations

import datetime as dt
import pickle
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import BooleanExpression
from pyiceberg.manifest import ManifestEntryStatus
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot

from sonik_pipeline.engines.spark_writes import SPARK_TYPES, WRITE_WHERE_THE_ROWS_ARE, across_task_slots, overwrite
from sonik_pipeline.lakehouse.days import date_filter, day_bounds, format_days, partition_day, played_at_filter
from sonik_pipeline.lakehouse.ingest.run import (
    PREVIEW_ROWS,
    DayIngestResult,
    IngestError,
    IngestOptions,
    IngestTables,
    day_refusal,
    ingest_commit_properties,
    record_sources,
    shrink_guard,
)
from sonik_pipeline.lakehouse.ingest.validation import (
    DUPLICATE_REASON,
    DayValidator,
    JudgedBatch,
    ValidationTotals,
    reason_group,
)
from sonik_pipeline.lakehouse.sources.day_sources import DaySource, DaySplit
from sonik_pipeline.lakehouse.sources.events import JsonLines, SourceFile, UnreadableFile
from sonik_pipeline.lakehouse.sources.ingested_files import LateArrivals
from sonik_pipeline.lakehouse.tables.catalog import table_name
from sonik_pipeline.lakehouse.tables.writes import CommitReport, commit_report

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

Progress = Callable[[str], None]
APP_TIME_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS'Z'"
# Up to this many repeated play_ids in a run's days are sent whole to every task to be joined where the rows
# are (about 60 MB); more (a source that resent a day) are joined by shuffling the rows instead.
BROADCAST_DUPLICATES = 1_000_000

# What an executor returns for each event besides its typed columns: where it came from and what became of it.
_DAY, _PART, _SEQ = "_day", "_part", "_seq"  # the day, the split's place in the day, the event's place in it
_REASON, _PAYLOAD, _FILE, _LINE, _UNREADABLE = "_reason", "_payload", "_source_file", "_source_line", "_unreadable"
_HASH = "_hash"  # a valid row's play_id hashed as the local engine hashes it (``DayValidator``): what duplicates share
_TRAILER = pa.schema(
    [
        pa.field(_DAY, pa.date32()),
        pa.field(_PART, pa.int32()),
        pa.field(_SEQ, pa.int64()),
        pa.field(_REASON, pa.string()),
        pa.field(_PAYLOAD, pa.string()),
        pa.field(_FILE, pa.string()),
        pa.field(_LINE, pa.int64()),
        pa.field(_UNREADABLE, pa.bool_()),
        pa.field(_HASH, pa.int64()),
    ]
)
_SPARK_TRAILER = "_day DATE, _part INT, _seq BIGINT, _reason STRING, _payload STRING, _source_file STRING, " \
    "_source_line BIGINT, _unreadable BOOLEAN, _hash BIGINT"  # fmt: skip


def judged_schema(schema: Schema) -> pa.Schema:
    """What ``judge_split`` yields: the table's columns (nullable, strings as Spark reads them), then the trailer."""
    columns = [
        pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type, nullable=True)
        for f in schema.as_arrow()
    ]
    return pa.schema([*columns, *_TRAILER])


def judged_ddl(schema: Schema) -> str:
    """``judged_schema`` in Spark's DDL, as ``mapInArrow`` is told it."""
    columns = [f"`{f.name}` {SPARK_TYPES[type(f.field_type)]}" for f in schema.fields]
    return ", ".join([*columns, _SPARK_TRAILER])


def judge_split(schema: Schema, split: DaySplit, part: int) -> Iterator[pa.RecordBatch]:
    """One split read and judged by the local engine's validator, duplicates aside: its valid rows and its rejects.

    Runs in an executor. A valid row's ``_seq`` is its place among the split's events, so Spark keeps the first
    copy of a play_id in the order the local engine reads the day; its ``_source_line`` is its line (JSON Lines).
    A valid row's ``_source_file`` is left empty: it is the split's, known to the driver (``_split_files``), and
    a copy in every row made Spark convert, store and read back 40 bytes more an event.
    """
    out_schema = judged_schema(schema)
    validator = DayValidator(schema, split.day)
    seq = 0
    try:
        for raw in split.read():
            prepared = validator.prepare(raw)
            valid, rejected = validator.classify(prepared, mark_duplicates=False)
            if isinstance(prepared, JudgedBatch):
                places = prepared.valid_rows.astype(np.int64)
                lines = raw.numbers_of(places) if isinstance(raw, JsonLines) else pa.nulls(len(places), pa.int64())
                events = prepared.typed.num_rows
            else:  # a long line or an unreadable file: one event, rejected before typing
                places, lines, events = np.zeros(0, np.int64), pa.nulls(0, pa.int64()), 1
            if valid.num_rows:
                trailer = {
                    _SEQ: pa.array(seq + places, pa.int64()),
                    _REASON: pa.nulls(valid.num_rows, pa.string()),
                    _PAYLOAD: pa.nulls(valid.num_rows, pa.string()),
                    _FILE: pa.nulls(valid.num_rows, pa.string()),  # the split's (``_split_files``), not a copy a row
                    _LINE: lines,
                    _UNREADABLE: pa.array(np.zeros(valid.num_rows, dtype=bool)),
                    _HASH: pa.array(prepared.valid_hashes.view(np.int64)),  # the valid rows', in their order
                }
                yield _batch(out_schema, valid, split.day, part, trailer)
            if rejected.num_rows:
                n = rejected.num_rows
                columns = pa.table({"play_id": rejected.column("play_id")})
                trailer = {
                    _SEQ: pa.nulls(n, pa.int64()),
                    _REASON: rejected.column("reason"),
                    _PAYLOAD: rejected.column("payload"),
                    _FILE: rejected.column("source_file"),
                    _LINE: rejected.column("source_line"),
                    _UNREADABLE: pa.array(np.full(n, isinstance(raw, UnreadableFile))),
                }
                yield _batch(out_schema, columns, split.day, part, trailer)
            seq += events
    finally:
        validator.close()


def _batch(out_schema: pa.Schema, rows: pa.Table, day: dt.date, part: int, trailer: dict) -> pa.RecordBatch:
    n = rows.num_rows
    trailer = {_DAY: pa.array([day] * n, pa.date32()), _PART: pa.array(np.full(n, part, np.int32)), **trailer}
    arrays = []
    for f in out_schema:
        column = rows.column(f.name) if f.name in rows.column_names else trailer.get(f.name)
        if column is None:
            column = pa.nulls(n, f.type)
        arrays.append(pc.cast(column, f.type) if column.type != f.type else column)
    return pa.RecordBatch.from_arrays(
        [a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a for a in arrays], schema=out_schema
    )


def _judge_partition(schema_json: str) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The function ``mapInArrow`` runs in each task: judge every split of its rows."""

    def judge(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        schema = Schema.model_validate_json(schema_json)
        for batch in batches:
            for part, blob in zip(batch.column("part").to_pylist(), batch.column("split").to_pylist(), strict=True):
                yield from judge_split(schema, pickle.loads(blob), part)

    return judge


# -- the driver ---------------------------------------------------------------------------------


@dataclass
class _Day:
    """One day as Spark judged it: what the local engine's staged day holds, counted instead of written."""

    day: dt.date
    sources: tuple[SourceFile, ...]
    split_files: tuple[str, ...] = ()  # each split's source_file, in the splits' order
    totals: ValidationTotals = field(default_factory=ValidationTotals)
    events_per_file: dict[str, int] = field(default_factory=dict)
    valid_per_part: dict[int, int] = field(default_factory=dict)  # before duplicates
    unreadable: list[UnreadableFile] = field(default_factory=list)
    preview: pa.Table | None = None
    rows_before: int = 0

    @property
    def rows(self) -> int:
        return self.totals.valid


def ingest_days_on_spark(
    session: SparkSession,
    catalog_name: str,
    tables: IngestTables,
    source: DaySource,
    days: Sequence[dt.date],
    options: IngestOptions,
    days_per_commit: int,
    progress: Progress,
) -> Iterator[DayIngestResult]:
    """Ingest consecutive ``days``, ``days_per_commit`` to a group; yields each day once its commit landed.

    A failing day raises after the days before it are committed (and yielded), as on the local engine.
    """
    for start in range(0, len(days), days_per_commit):
        group = list(days[start : start + days_per_commit])
        listed: list[tuple[dt.date, list[DaySplit]]] = []
        missing: FileNotFoundError | None = None
        for day in group:
            try:
                listed.append((day, source.splits(day)))
            except FileNotFoundError as exc:  # no landing files: the days before it land, then the error
                missing = exc
                break
        if listed:
            yield from _ingest_group(session, catalog_name, tables, listed, options, progress)
        if missing is not None:
            raise missing


def _ingest_group(
    session: SparkSession,
    catalog_name: str,
    tables: IngestTables,
    listed: list[tuple[dt.date, list[DaySplit]]],
    options: IngestOptions,
    progress: Progress,
) -> Iterator[DayIngestResult]:
    """Judge the group's splits once (kept by Spark on its disks), find the duplicates, then commit.

    The judged rows are read four times from Spark's storage, never judged again: counted (which stores
    them), their ids grouped, the rejects written, the plays written.
    """
    from pyspark import StorageLevel

    started = time.monotonic()
    first, last = listed[0][0], listed[-1][0]
    schema = tables.plays.schema()
    splits = [(day, part, split) for day, parts in listed for part, split in enumerate(parts)]
    progress(f"{format_days(first, last)}: {len(splits)} parts to judge in Spark's executors")
    # On disk, not in memory: a day is larger than an executor's heap, and building its blocks in memory first
    # ran a 1 GB driver out of memory with two tasks at once; each pass reads the blocks in order anyway. Not
    # compressed (this session only): compressing them cost a third of the judging (4M events: 34.7 s, 24.1 s
    # without) for blocks that live minutes on local disks.
    session.conf.set("spark.sql.inMemoryColumnarStorage.compressed", "false")
    judged = _judged(session, schema, splits).persist(StorageLevel.DISK_ONLY)
    try:
        judged_days = _count(judged, listed)
        seen = sum(d.totals.seen for d in judged_days)
        progress(f"{format_days(first, last)}: {seen:,} events judged in {time.monotonic() - started:.1f}s")
        repeated = _repeated_ids(judged).persist(StorageLevel.MEMORY_AND_DISK)
        try:
            _count_duplicates(repeated, judged_days)
            flagged = _without_duplicates(judged, repeated, schema, sum(d.totals.duplicates for d in judged_days))
            yield from _commit_group(session, catalog_name, tables, flagged, judged_days, options, progress, started)
        finally:
            repeated.unpersist()
    finally:
        judged.unpersist()


def _judged(session: SparkSession, schema: Schema, splits: list[tuple[dt.date, int, DaySplit]]) -> DataFrame:
    """Every split judged in an executor of its own (one task a split): valid rows and rejects, duplicates aside."""
    rows = [(part, pickle.dumps(split)) for _, part, split in splits]
    parts = session.createDataFrame(rows, "part INT, split BINARY").repartition(max(1, len(rows)))
    with warnings.catch_warnings():  # PySpark 3.5 checks pandas' version with distutils' deprecated LooseVersion
        warnings.filterwarnings("ignore", "distutils Version classes are deprecated", DeprecationWarning)
        return parts.mapInArrow(_judge_partition(schema.model_dump_json()), judged_ddl(schema))


def _place() -> Column:
    """Where an event was read in its day: its split, then its place in it (the local engine's reading order)."""
    from pyspark.sql import functions as F

    return F.struct(F.col(_PART), F.col(_SEQ))


def _repeated_ids(judged: DataFrame) -> DataFrame:
    """(day, play_id's hash, copies, where its first copy was read) of each valid play_id read more than once in
    its day.

    Only the ids' 64-bit hashes are grouped (not the rows, nor the ids' text: 8 bytes an event through the
    shuffle, not 36), so a day's rows are not shuffled to find its few duplicates. Equal hashes are duplicates,
    as on the local engine (``DayValidator._mark_duplicates``: the same hash, the same odds of a collision).
    """
    from pyspark.sql import functions as F

    return (
        judged.where(F.col(_REASON).isNull())
        .groupBy(_DAY, _HASH)
        .agg(F.count(F.lit(1)).alias("_copies"), F.min(_place()).alias("_first"))
        .where(F.col("_copies") > 1)
    )


def _count_duplicates(repeated: DataFrame, judged: list[_Day]) -> None:
    """Move each day's later copies from its valid events to its rejects (the count also stores ``repeated``)."""
    from pyspark.sql import functions as F

    days = {d.day: d for d in judged}
    for row in repeated.groupBy(_DAY).agg(F.sum(F.col("_copies") - 1).alias("n")).collect():
        totals = days[row[_DAY]].totals
        totals.valid -= row["n"]
        totals.rejected_by_reason[DUPLICATE_REASON] += row["n"]
        totals.rejected_by_reason = Counter(dict(sorted(totals.rejected_by_reason.items())))


def _without_duplicates(judged: DataFrame, repeated: DataFrame, schema: Schema, duplicates: int) -> DataFrame:
    """``judged`` with every valid row whose play_id came earlier in its day rejected as a duplicate.

    The repeated ids are few on a normal day and go to every task whole (a broadcast), so the rows stay where
    they are; past ``BROADCAST_DUPLICATES`` they are joined by a shuffle instead. The first copy is the one
    the local engine keeps (file by file, line by line).
    """
    from pyspark.sql import functions as F

    ids = repeated.select(_DAY, _HASH, "_first")
    flagged = judged.join(F.broadcast(ids) if duplicates <= BROADCAST_DUPLICATES else ids, [_DAY, _HASH], "left")
    duplicate = F.col(_REASON).isNull() & F.col("_first").isNotNull() & (_place() != F.col("_first"))
    # The event as typed, its times as the app writes them (to the microsecond, in UTC)
    event = F.to_json(F.struct(*[F.col(f.name) for f in schema.fields]), {"timestampNTZFormat": APP_TIME_FORMAT})
    return flagged.select(
        *[F.col(f.name) for f in schema.fields],
        _DAY,
        _PART,
        _SEQ,
        F.when(duplicate, F.lit(DUPLICATE_REASON)).otherwise(F.col(_REASON)).alias(_REASON),
        F.when(duplicate, event).otherwise(F.col(_PAYLOAD)).alias(_PAYLOAD),
        _FILE,
        _LINE,
        _UNREADABLE,
    )


def _count(judged: DataFrame, listed: list[tuple[dt.date, list[DaySplit]]]) -> list[_Day]:
    """Each day's totals (duplicates aside), events per file and per split, and unreadable files, counted by Spark
    in one pass that also stores the judged rows (a row per day, split, file and reason comes back)."""
    from pyspark.sql import functions as F

    days = {
        day: _Day(day, tuple(s.listed for s in splits if s.listed is not None), tuple(s.source_file for s in splits))
        for day, splits in listed
    }
    # Reasons by group (the wording after ':' quotes values); an unreadable file's whole reason is its error
    group = F.when(F.col(_UNREADABLE), F.col(_REASON)).otherwise(F.substring_index(F.col(_REASON), ":", 1))
    for row in judged.groupBy(_DAY, _PART, _FILE, _UNREADABLE, group.alias("_group")).count().collect():
        judged_day, count, reason = days[row[_DAY]], row["count"], row["_group"]
        source_file = row[_FILE] if row[_FILE] is not None else judged_day.split_files[row[_PART]]
        judged_day.totals.seen += count
        if reason is None:
            judged_day.totals.valid += count
            judged_day.valid_per_part[row[_PART]] = judged_day.valid_per_part.get(row[_PART], 0) + count
        elif row[_UNREADABLE]:
            judged_day.totals.rejected_by_reason[reason_group(reason)] += count
            judged_day.unreadable.append(UnreadableFile(source_file, reason))
        else:
            judged_day.totals.rejected_by_reason[reason] += count
        if not row[_UNREADABLE]:
            judged_day.events_per_file[source_file] = judged_day.events_per_file.get(source_file, 0) + count
    for judged_day in days.values():
        totals = judged_day.totals
        totals.rejected_by_reason = Counter(dict(sorted(totals.rejected_by_reason.items())))
        judged_day.unreadable.sort(key=lambda u: u.source_file)
    return [days[day] for day, _ in listed]


def _preview(flagged: DataFrame, schema: Schema, judged: _Day) -> pa.Table:
    """The day's first valid rows in the order they were read, as the local engine previews them.

    Read from the day's first splits that hold enough valid rows for the preview and its duplicates, so
    Spark skips the stored blocks of the others.
    """
    from pyspark.sql import functions as F

    wanted, enough, last_part = PREVIEW_ROWS + judged.totals.duplicates, 0, None
    for part in sorted(judged.valid_per_part):
        enough, last_part = enough + judged.valid_per_part[part], part
        if enough >= wanted:
            break
    day = flagged.where(F.col(_REASON).isNull() & (F.col(_DAY) == F.lit(judged.day)))
    if last_part is not None:
        day = day.where(F.col(_PART) <= F.lit(last_part))
    rows = day.orderBy(_PART, _SEQ).select(*[f.name for f in schema.fields]).limit(PREVIEW_ROWS).collect()
    return pa.Table.from_pylist([r.asDict() for r in rows], schema=schema.as_arrow())


def _split_files(session: SparkSession, judged: list[_Day]) -> DataFrame:
    """(day, split, the file its events came from) of the run's splits, for rows that do not carry it."""
    rows = [(d.day, part, name) for d in judged for part, name in enumerate(d.split_files)]
    return session.createDataFrame(rows, f"{_DAY} DATE, {_PART} INT, _split_file STRING")


def _rows_now(plays: Table, day: dt.date) -> int:
    return sum(t.file.record_count for t in plays.scan(row_filter=played_at_filter(day)).plan_files())


def _commit_group(
    session: SparkSession,
    catalog_name: str,
    tables: IngestTables,
    flagged: DataFrame,
    judged: list[_Day],
    options: IngestOptions,
    progress: Progress,
    started: float,
) -> Iterator[DayIngestResult]:
    """The local engine's ``commit_days`` for days Spark judged: guards in day order, quarantine, plays, sources."""
    from pyspark.sql import functions as F

    plays, rejected = tables.plays, tables.rejected
    plays.refresh()
    base = plays.current_snapshot()
    # The local engine checks each day in order as it stages it: an empty day or one that would shrink stops the
    # run before its quarantine; a refused day (too many rejects, an unreadable file) after its quarantine.
    stop: IngestError | None = None
    quarantined, landing = judged, judged
    for index, day in enumerate(judged):
        day.rows_before = _rows_now(plays, day.day)
        if day.totals.seen == 0:
            stop = IngestError(f"{day.day}: the source has no events for this day; refusing to replace it with nothing")
            quarantined = landing = judged[:index]
            break
        if not day.unreadable or options.skip_unreadable_files:
            try:
                shrink_guard(day.day, options.max_shrink_share)(day.rows_before, day.rows)
            except IngestError as exc:
                stop, quarantined, landing = exc, judged[:index], judged[:index]
                break
        refusal = day_refusal(
            day.day, day.totals, day.unreadable, options.max_reject_share, options.skip_unreadable_files
        )
        if refusal is not None:
            stop, quarantined, landing = refusal, judged[: index + 1], judged[:index]
            break
    if quarantined:
        first, last = quarantined[0].day, quarantined[-1].day
        properties = ingest_commit_properties(options, first, last, [d.totals for d in quarantined])
        rejected_rows = flagged.where(F.col(_REASON).isNotNull() & (F.col(_DAY) <= F.lit(last)))
        # a duplicate was a valid row: its file is its split's
        rejects = rejected_rows.join(F.broadcast(_split_files(session, judged)), [_DAY, _PART], "left").select(
            F.col(_DAY).alias("ingest_day"),
            F.col("play_id").cast("STRING").alias("play_id"),
            F.col(_REASON).alias("reason"),
            F.col(_PAYLOAD).alias("payload"),
            F.coalesce(F.col(_FILE), F.col("_split_file")).alias("source_file"),
            F.col(_LINE).alias("source_line"),
            F.lit(dt.datetime.now(dt.UTC).replace(tzinfo=None)).cast("TIMESTAMP_NTZ").alias("rejected_at"),
            F.lit(options.run_id).cast("STRING").alias("dagster_run_id"),
        )
        count = sum(d.totals.rejected for d in quarantined)
        where = (
            f"ingest_day >= DATE '{first}' AND ingest_day <= DATE '{last}'",
            date_filter("ingest_day", first, last),
        )
        _overwrite(catalog_name, rejected, rejects, where, count, properties, None)
        progress(f"{format_days(first, last)}: {count:,} rejects in music.plays_rejected (Spark)")
    results = []
    if landing:
        first, last = landing[0].day, landing[-1].day
        properties = ingest_commit_properties(
            options, quarantined[0].day, quarantined[-1].day, [d.totals for d in quarantined]
        )
        landing_properties = {
            **properties,
            "dagster.partition": format_days(first, last),
            "sonik.events-read": str(sum(d.totals.seen for d in landing)),
        }
        rows = flagged.where(F.col(_REASON).isNull() & (F.col(_DAY) <= F.lit(last))).select(
            *[f.name for f in plays.schema().fields]
        )
        count = sum(d.rows for d in landing)
        report = _overwrite(catalog_name, plays, rows, _played(first, last), count, landing_properties, base)
        previews = {d.day: _preview(flagged, plays.schema(), d) for d in landing}
        late = record_sources(tables, landing, properties)
        added = _added_by_day(plays, report.snapshot_id)
        seconds = time.monotonic() - started
        results = [
            DayIngestResult(
                day=d.day,
                plays=report,
                totals=d.totals,
                rows_written=d.rows,
                rows_before=d.rows_before,
                data_files_added=added.get(d.day, (0, 0))[0],
                bytes_added=added.get(d.day, (0, 0))[1],
                unreadable_files_skipped=tuple(u.source_file for u in d.unreadable),
                schema_changes=tables.schema_changes,
                seconds=seconds / len(landing),
                preview=previews[d.day],
                files_read=len(d.sources),
                late=late.get(d.day, LateArrivals()),
            )
            for d in landing
        ]
        progress(f"{format_days(first, last)}: {count:,} rows in music.plays, snapshot {report.snapshot_id} (Spark)")
    yield from results
    if stop is not None:
        raise stop


def _played(first: dt.date, last: dt.date) -> tuple[str, BooleanExpression]:
    """Days first..last of plays as Spark's overwrite condition and as Iceberg's filter (whole partitions)."""
    start, end = (f"TIMESTAMP_NTZ '{t:%Y-%m-%d %H:%M:%S}'" for t in day_bounds(first, last))
    return f"played_at >= {start} AND played_at < {end}", played_at_filter(first, last)


def _overwrite(
    catalog_name: str,
    table: Table,
    rows: DataFrame,
    where: tuple[str, BooleanExpression],
    count: int,
    properties: dict[str, str],
    validated_from: Snapshot | None,
) -> CommitReport:
    """Make ``rows`` the whole of ``where``'s partitions of ``table`` in one Spark overwrite; its commit.

    ``where`` is the days as Spark's overwrite condition and as Iceberg's filter.

    Validated from ``validated_from`` (the snapshot the guards read), a commit that would overwrite another
    writer's rows of these days fails instead. Nothing to add and nothing to remove commits nothing.
    """
    from pyspark.sql import functions as F

    condition, row_filter = where
    table.refresh()
    current = table.current_snapshot()
    if not count and (current is None or not table.scan(row_filter=row_filter).plan_files()):
        return commit_report(table, current.snapshot_id if current else 0, committed=False)
    options = dict(WRITE_WHERE_THE_ROWS_ARE)
    if validated_from is not None:
        options |= {"validate-from-snapshot-id": str(validated_from.snapshot_id), "isolation-level": "serializable"}
    name = f"{catalog_name}.{table_name(table)}"
    return overwrite(table, name, across_task_slots(rows), F.expr(condition), options, properties)


def _added_by_day(table: Table, snapshot_id: int) -> dict[dt.date, tuple[int, int]]:
    """(data files, bytes) the commit added to each day."""
    snapshot = table.snapshot_by_id(snapshot_id)
    added: dict[dt.date, tuple[int, int]] = {}
    for manifest in snapshot.manifests(table.io) if snapshot else []:
        if manifest.added_snapshot_id != snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            if entry.status != ManifestEntryStatus.ADDED:
                continue
            data = entry.data_file
            day = partition_day(table.specs()[data.spec_id], table.schema(), data.partition)
            files, size = added.get(day, (0, 0))
            added[day] = (files + 1, size + data.file_size_in_bytes)
    return added
