"""Validating a day of raw play events: typed rows to keep, and rejects with their reason.

Every event ends in exactly one of two places: the day's rows, or the quarantine with a reason: a line
over the line bound, malformed JSON, a mistyped field, or a rule of ``rules.py`` broken (a text over the
text bound, a missing field, a time outside the day, an out-of-range duration, an unknown tier, a bad
country code, a duplicate play_id). Everything runs over whole batches, not Python per event: typing in
Arrow, with DuckDB SQL for what Arrow's reader refuses; the rules as PyArrow compute masks; play_ids by
their hash. The quarantine stays bounded too: a payload over the line bound keeps its first bytes and
says how long it was.
"""

from __future__ import annotations

import codecs
import datetime as dt
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.schema import Schema
from pyiceberg.types import IcebergType, IntegerType, LongType, NestedField, StringType, TimestampType

from sonik_pipeline.lakehouse.duckdb_io.extensions import bounded_connection
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_identifier, sql_string
from sonik_pipeline.lakehouse.ingest.dedupe import HashSet64
from sonik_pipeline.lakehouse.ingest.rules import ROW_RULES, UNIQUE_PLAY_ID
from sonik_pipeline.lakehouse.sources.events import (
    MAX_LINE_BYTES,
    ArrowRows,
    JsonLines,
    LongLine,
    RawBatch,
    UnreadableFile,
)
from sonik_pipeline.lakehouse.sources.json_lines import LONG_LINE_HEAD_BYTES, loose_lines, parse_lines

DUPLICATE_REASON = UNIQUE_PLAY_ID.reason
# DuckDB's JSON functions keep each parse of a vector's lines (2,048 of them) until the vector is done: lines
# are typed exactly in groups of about this many bytes, so a batch of long lines asks no more of DuckDB than
# a batch of short ones (32 lines of 1 MiB in one group need about 1 GB, in groups under 128 MB).
EXACT_GROUP_BYTES = 2 * 1024 * 1024
# The validator's DuckDB types what PyArrow's reader refused and hashes play_ids. The worst batches measured
# (131,072 lines all typed exactly, 32 lines just under MAX_LINE_BYTES, Parquet columns of 500 MB of text
# to cast) each need under 128 MB; past the limit DuckDB fails the day rather than take the machine's memory.
VALIDATION_MEMORY_LIMIT = "512MB"

# DuckDB type and JSON type names for each Iceberg type the plays schema uses.
_SQL_TYPE: dict[type[IcebergType], str] = {
    StringType: "VARCHAR",
    LongType: "BIGINT",
    IntegerType: "INTEGER",
    TimestampType: "TIMESTAMP",
}
_JSON_TYPES: dict[type[IcebergType], tuple[str, ...]] = {
    StringType: ("VARCHAR",),
    LongType: ("BIGINT", "UBIGINT"),
    IntegerType: ("BIGINT", "UBIGINT"),
    TimestampType: ("VARCHAR",),
}
_TYPE_WORD: dict[type[IcebergType], str] = {
    StringType: "a string",
    LongType: "an integer",
    IntegerType: "a 32-bit integer",
    TimestampType: "an ISO-8601 timestamp",
}

REJECT_SCHEMA = pa.schema(
    [
        pa.field("play_id", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("payload", pa.string()),
        pa.field("source_file", pa.string()),
        pa.field("source_line", pa.int64()),
    ]
)


def utc_timestamp_sql(expr: str) -> str:
    """Any timestamp-ish value as naive UTC: offsets are honoured, naive values are taken as UTC."""
    return f"CAST(TRY_CAST({expr} AS TIMESTAMPTZ) AT TIME ZONE 'UTC' AS TIMESTAMP)"


INVALID_UTF8_REASON = "line is not valid UTF-8 (its bytes are kept in the payload as \\xNN escapes)"
# Text DuckDB's JSON functions accept that RFC 8259 does not: a trailing comma, and NaN, Inf or Infinity in
# any case. Lines that match are few (a title that says "Infinity" matches too) and are judged again by
# Python's strict parser.
_LENIENT_JSON = r"(?i),\s*[}\]]|nan|inf"


# The times the app writes: UTC with a Z, up to microseconds. These convert the same in Arrow as in DuckDB.
_APP_TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$"
# The same form as a template a length ("0" where a digit goes): the app writes its times at one length.
_APP_TIME_TEMPLATES = {
    len(t): np.frombuffer(t.encode(), np.uint8)
    for t in ["0000-00-00T00:00:00Z", *(f"0000-00-00T00:00:00.{'0' * k}Z" for k in range(1, 7))]
}


def _app_times_by_bytes(text: pa.Array) -> bool | None:
    """Whether every value of ``text`` matches ``_APP_TIME``, read from its bytes as a table of one row a
    value when all values have one length (0.05 s for 10M times, against 1.2 s for the regex); None when
    they do not (nulls, mixed lengths) and the regex must say."""
    if text.null_count or len(text) == 0 or not _is_text(text.type):
        return None
    width_type = np.int64 if pa.types.is_large_string(text.type) else np.int32
    offsets = np.frombuffer(text.buffers()[1], width_type)[text.offset : text.offset + len(text) + 1]
    width = int(offsets[1] - offsets[0])
    template = _APP_TIME_TEMPLATES.get(width)
    if template is None or not (np.diff(offsets) == width).all():
        return None
    values = np.frombuffer(text.buffers()[2], np.uint8)[offsets[0] : offsets[-1]].reshape(len(text), width)
    digit = template == ord("0")
    return bool(((values[:, digit] - ord("0")) < 10).all() and (values[:, ~digit] == template[~digit]).all())


def _all_app_times(text: pa.ChunkedArray) -> bool:
    """Whether every time in ``text`` (nulls aside) is in the form the app writes (``_APP_TIME``)."""
    for chunk in text.chunks:
        by_bytes = _app_times_by_bytes(chunk)
        if by_bytes is False or (
            by_bytes is None and pc.all(pc.match_substring_regex(chunk, _APP_TIME)).as_py() is False
        ):
            return False
    return True


def _json_payloads(rows: pa.Table) -> pa.Array:
    """Rows that arrived typed, as the JSON text a quarantine row keeps."""
    return pa.array([json.dumps(r, default=str, ensure_ascii=False) for r in rows.to_pylist()], pa.string())


def _no_lines(rows: pa.Array) -> pa.Array:
    """Source lines of rows that came as columns, not lines."""
    return pa.nulls(rows.true_count, pa.int64())


def _truncated(head: bytes, size: int) -> str:
    """The first bytes of a payload too long to keep, as text (a character cut in two is left out), and a note."""
    text = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace").decode(head, final=False)
    return f"{text}… [truncated: {size:,} bytes]"


def _bounded(payloads: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Payloads as the quarantine keeps them: one over ``MAX_LINE_BYTES`` (a Parquet row holding a huge
    value; a line that long never gets here) keeps its first bytes and says how long it was."""
    over = pc.fill_null(pc.greater(pc.binary_length(payloads), MAX_LINE_BYTES), False)
    if not pc.any(over).as_py():
        return payloads
    values = payloads.to_pylist()
    for row in np.flatnonzero(over.to_numpy(zero_copy_only=False)):
        raw = values[row].encode()
        values[row] = _truncated(raw[:LONG_LINE_HEAD_BYTES], len(raw))
    return pa.array(values, pa.string())


def _byte_groups(texts: pa.Array, group_bytes: int) -> list[tuple[int, int]]:
    """(start, stop) of consecutive runs of ``texts`` starting within each ``group_bytes`` of their total."""
    sizes = pc.binary_length(texts).to_numpy(zero_copy_only=False)
    group = (np.cumsum(sizes) - sizes) // group_bytes
    bounds = [0, *(np.flatnonzero(np.diff(group)) + 1).tolist(), len(texts)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


_RowsOfOrigin = Callable[[pa.Array], tuple[pa.Array, pa.Array]]
# A rule over typed rows: (failing mask, reason, the values its reason quotes or None, how one is shown).
_Rule = tuple[pa.Array | pa.ChunkedArray, str, pa.Array | pa.ChunkedArray | None, Callable[[object], str]]


def _reject_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def strictly_json(lines: pa.Array) -> pa.Array:
    """A bool per line: valid JSON by RFC 8259, where DuckDB's parser is lenient (trailing commas, NaN)."""
    suspect = pc.match_substring_regex(lines, _LENIENT_JSON).to_numpy(zero_copy_only=False)
    valid = np.ones(len(lines), dtype=bool)
    for index in np.flatnonzero(suspect):
        try:
            json.loads(lines[int(index)].as_py(), parse_constant=_reject_constant)
        except (ValueError, RecursionError):  # nested too deep for Python to vouch for it: kept in quarantine
            valid[index] = False
    return pa.array(valid)


def _typed_from_json(fields: list[NestedField]) -> str:
    """SELECT list turning JSON text lines into typed columns plus ``_type_error``.

    ``_line`` is NULL for a line already known to be bad (not UTF-8, or lenient JSON); ``_encoding_error``
    says when the bytes were the problem. Each line is parsed a few times in all, not a few times a field:
    DuckDB's JSON functions keep each parse of a vector's lines until the vector is done.
    """
    columns, errors = (
        [],
        [
            "_encoding_error",
            "CASE WHEN _line IS NULL THEN 'malformed JSON' END",
            "CASE WHEN NOT _ok THEN 'not a JSON object' END",
        ],
    )
    paths = f"[{', '.join(sql_string(f'$.{chr(34)}{f.name}{chr(34)}') for f in fields)}]"
    for i, f in enumerate(fields, start=1):
        kind = type(f.field_type)
        jtype, text = f"_types[{i}]", f"_texts[{i}]"
        ok_type = f"{jtype} IN ({', '.join(sql_string(t) for t in _JSON_TYPES[kind])})"
        if kind is TimestampType:
            value = utc_timestamp_sql(text)
        else:
            value = f"TRY_CAST({text} AS {_SQL_TYPE[kind]})"
        columns.append(f"CASE WHEN _ok AND {ok_type} THEN {value} END AS {sql_identifier(f.name)}")
        errors.append(
            f"CASE WHEN _ok AND {jtype} IS NOT NULL AND {jtype} <> 'NULL' "
            f"AND (NOT ({ok_type}) OR {value} IS NULL) "
            f"THEN 'wrong type for {f.name}: expected {_TYPE_WORD[kind]}, got ' || {jtype} || ' ' || "
            f"left(_values[{i}]::VARCHAR, 40) END"
        )
    return (
        f"SELECT {', '.join(columns)}, COALESCE({', '.join(errors)}) AS _type_error, "
        f"_raw_line AS _payload, _source_line "
        f"FROM (SELECT *, json_type(_line, {paths}) AS _types, json_extract_string(_line, {paths}) AS _texts, "
        f"json_extract(_line, {paths}) AS _values "
        f"FROM (SELECT * EXCLUDE (_line), _j AS _line, _j IS NOT NULL AND json_type(_j) = 'OBJECT' AS _ok "
        f"FROM (SELECT *, CASE WHEN json_valid(_line) THEN _line END AS _j FROM _raw)))"
    )


def _typed_from_arrow(fields: list[NestedField], present: set[str]) -> str:
    """SELECT list casting Arrow columns (any type) to the schema's types plus ``_type_error``."""
    columns, errors = [], []
    for f in fields:
        kind = type(f.field_type)
        if f.name not in present:
            columns.append(f"CAST(NULL AS {_SQL_TYPE[kind]}) AS {sql_identifier(f.name)}")
            continue
        col = sql_identifier(f.name)
        value = utc_timestamp_sql(col) if kind is TimestampType else f"TRY_CAST({col} AS {_SQL_TYPE[kind]})"
        columns.append(f"{value} AS {col}")
        errors.append(
            f"CASE WHEN {col} IS NOT NULL AND {value} IS NULL THEN 'wrong type for {f.name}: expected "
            f"{_TYPE_WORD[kind]}, got ' || left({col}::VARCHAR, 40) END"
        )
    payload_fields = ", ".join(f"{sql_identifier(n)} := {sql_identifier(n)}" for n in sorted(present))
    return (
        f"SELECT {', '.join(columns)}, {'COALESCE(' + ', '.join(errors) + ')' if errors else 'NULL'} AS _type_error, "
        f"to_json(struct_pack({payload_fields}))::VARCHAR AS _payload, "
        f"_source_line FROM _raw"
    )


@dataclass
class ValidationTotals:
    """Running counts for the day, for metadata and the reject threshold."""

    seen: int = 0
    valid: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)

    @property
    def duplicates(self) -> int:
        return self.rejected_by_reason.get(DUPLICATE_REASON, 0)

    @property
    def rejected(self) -> int:
        return sum(self.rejected_by_reason.values())

    @property
    def invalid(self) -> int:
        """Rejected for being wrong, not merely repeated: what the reject threshold counts."""
        return self.rejected - self.duplicates

    def invalid_share(self) -> float:
        return self.invalid / self.seen if self.seen else 0.0


def reason_group(reason: str) -> str:
    """Group reasons for counting ('wrong type for user_id: ... got "abc"' -> 'wrong type for user_id')."""
    return reason.split(":", 1)[0]


def reason_group_sql(column: str) -> str:
    """``reason_group`` in DuckDB SQL, for grouping a quarantine too big to bring into Python."""
    return f"split_part({column}, ':', 1)"


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _same_type(actual: pa.DataType, wanted: pa.DataType) -> bool:
    """Equal, or both strings (string and large_string differ only in offset width)."""
    return actual == wanted or (_is_text(actual) and _is_text(wanted))


def _cast_losslessly(column: pa.ChunkedArray, wanted: pa.DataType) -> pa.ChunkedArray | None:
    """``column`` as ``wanted`` where that changes no value: the same type, text of either offset width or
    dictionary-encoded, a narrower integer, a time with a zone or in other units (to UTC, none truncated).
    None when a value would need reading or rounding: those columns are typed row by row in DuckDB."""
    actual = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if _same_type(actual, wanted) and not pa.types.is_dictionary(column.type):
        return column
    similar = (
        (_is_text(actual) and _is_text(wanted))
        or (pa.types.is_integer(actual) and pa.types.is_integer(wanted))
        or (pa.types.is_timestamp(actual) and pa.types.is_timestamp(wanted))
    )
    if not similar:
        return None
    try:
        return column.cast(wanted, safe=True)  # safe: an integer out of range or a truncated time raises
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


@dataclass(frozen=True)
class JudgedBatch:
    """A batch typed and tested against the row rules, the play_ids of its passing rows hashed."""

    source_file: str
    typed: pa.Table  # a row an event, in the batch's order
    reasons: pa.Array  # why each row is rejected so far (type errors and row rules), null where it passes
    origin: _RowsOfOrigin  # the payloads and source lines of the rows a mask selects
    valid_rows: np.ndarray  # where ``reasons`` is null
    valid_hashes: np.ndarray  # uint64 hash of each valid row's play_id


class DayValidator:
    """Classifies the raw batches of one UTC day; remembers play_ids so duplicates across batches are caught.

    Typing is format-specific: JSON text is parsed once by PyArrow's reader where that is exact
    (``json_lines.py``) and line by line by DuckDB's JSON functions elsewhere; columns of the schema's
    types, or wider ones, pass in Arrow, and other columns are cast row by row with TRY_CAST. The rules
    (``rules.py``) are one set of Arrow compute kernels over typed columns, with a fast path when a batch
    is clean, since clean batches are the common case and the hot path of ingest.

    ``prepare`` does all of that for a batch on its own (any thread, several batches at once); only the
    duplicates depend on the batches before, so ``classify`` takes prepared batches in order.
    """

    def __init__(self, schema: Schema, day: dt.date):
        self.schema = schema
        self.day = day
        self.fields = list(schema.fields)
        unsupported = [f.name for f in self.fields if type(f.field_type) not in _SQL_TYPE]
        if unsupported:
            raise TypeError(f"validation has no rule for the types of: {', '.join(unsupported)}")
        self.arrow_schema = schema.as_arrow()
        # Rows while being judged: a required field may still be missing.
        self._typed_schema = pa.schema([f.with_nullable(True) for f in self.arrow_schema])
        # What PyArrow's JSON reader parses: times arrive as text and are converted as DuckDB does.
        self._parse_schema = pa.schema(
            [f.with_type(pa.large_string()) if pa.types.is_timestamp(f.type) else f for f in self._typed_schema]
        )
        self.totals = ValidationTotals()
        self._seen = HashSet64()
        self._con: duckdb.DuckDBPyConnection | None = None
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- typing ------------------------------------------------------------------------------

    def _duckdb(self) -> duckdb.DuckDBPyConnection:
        """This thread's connection to the validator's one DuckDB (a connection serves one thread at a time)."""
        con = getattr(self._local, "con", None)
        if con is None:
            with self._lock:
                if self._con is None:
                    self._con = bounded_connection(VALIDATION_MEMORY_LIMIT)
                con = self._con.cursor()
                self._cursors.append(con)
            con.execute("SET TimeZone = 'UTC'")
            self._local.con = con
        return con

    def _typed_via_sql(self, rel: pa.Table, select_sql: str) -> pa.Table:
        con = self._duckdb()
        con.register("_raw", rel)
        try:
            return con.execute(select_sql).arrow().read_all()
        finally:
            con.unregister("_raw")

    def _typed(self, raw: JsonLines | ArrowRows) -> tuple[pa.Table, pa.Array | None, _RowsOfOrigin]:
        """(typed columns, type errors or None, where each row came from: payloads and source lines)."""
        if isinstance(raw, JsonLines):
            typed, errors = self._typed_json(raw)
            return typed, errors, lambda rows: (raw.lines.filter(rows), raw.line_numbers.filter(rows))
        rows = raw.rows
        columns = [
            _cast_losslessly(rows.column(f.name), f.type)
            if f.name in rows.column_names
            else pa.nulls(len(rows), f.type)
            for f in self.arrow_schema
        ]
        if all(column is not None for column in columns):  # typed already, or only wider or renamed types
            typed = pa.table(columns, names=self.arrow_schema.names)
            return typed, None, lambda bad: (_json_payloads(typed.filter(bad)), _no_lines(bad))
        rel = rows.append_column("_source_line", pa.nulls(rows.num_rows, pa.int64()))
        out = self._typed_via_sql(rel, _typed_from_arrow(self.fields, set(rows.column_names)))
        typed = out.select([f.name for f in self.fields])
        return typed, out.column("_type_error"), lambda bad: (out.column("_payload").filter(bad), _no_lines(bad))

    def _typed_json(self, raw: JsonLines) -> tuple[pa.Table, pa.Array | None]:
        """(typed rows, type errors or None), a row a line in line order, each line parsed once.

        PyArrow's reader parses what it can (``json_lines.py``: a whole chunk at once, or groups of
        lines); the lines it refuses or reads loosely, and times that do not convert, are judged one by
        one by the exact typing (``_typed_from_json``), so a bad line's outcome and reason never change.
        """
        whole = raw.parsed_whole(self._parse_schema)
        if whole is not None:
            parsed, loose = whole
            line_count = parsed.num_rows
            rows = np.arange(line_count, dtype=np.int64)
        else:
            lines = raw.lines
            line_count = len(lines)
            candidate = pc.and_(pc.starts_with(lines, "{"), pc.ends_with(lines, "}"))
            if raw.invalid_utf8 is not None:
                candidate = pc.and_(candidate, pc.invert(pc.fill_null(raw.invalid_utf8, False)))
            candidates = np.flatnonzero(candidate.to_numpy(zero_copy_only=False))
            candidate_lines = lines.take(pa.array(candidates))
            parsed, rows = parse_lines(candidate_lines, self._parse_schema)
            rows, loose = candidates[rows], candidates[loose_lines(candidate_lines)]
        typed, converted = self._with_times(parsed)
        fast = np.zeros(line_count, dtype=bool)
        fast[rows[converted]] = True
        fast[loose] = False
        if fast.all():
            return typed, None
        keep = converted & fast[rows]
        exact_rows = np.flatnonzero(~fast)
        exact, errors = self._typed_json_exactly(raw, exact_rows)
        combined = pa.concat_tables([typed.filter(pa.array(keep)), exact])
        order = pa.array(np.argsort(np.concatenate([rows[keep], exact_rows]), kind="stable"))
        all_errors = pa.concat_arrays([pa.nulls(int(keep.sum()), pa.string()), errors])
        return combined.take(order), all_errors.take(order)

    def _typed_json_exactly(self, raw: JsonLines, rows: np.ndarray) -> tuple[pa.Table, pa.Array]:
        """The lines ``rows`` typed by DuckDB's JSON functions, as the quarantine's reasons are worded."""
        take = pa.array(rows)
        lines = raw.lines.take(take)
        acceptable = strictly_json(lines)
        flags = raw.invalid_utf8.take(take) if raw.invalid_utf8 is not None else pa.nulls(len(rows), pa.bool_())
        invalid_utf8 = pc.fill_null(flags, False)
        acceptable = pc.and_(acceptable, pc.invert(invalid_utf8))
        rel = pa.table(
            {
                "_line": pc.if_else(acceptable, lines, pa.scalar(None, lines.type)),
                "_raw_line": lines,
                "_source_line": raw.line_numbers.take(take),
                "_encoding_error": pc.if_else(invalid_utf8, INVALID_UTF8_REASON, pa.scalar(None, pa.string())),
            }
        )
        sql = _typed_from_json(self.fields)
        groups = _byte_groups(lines, EXACT_GROUP_BYTES)
        out = pa.concat_tables([self._typed_via_sql(rel.slice(start, stop - start), sql) for start, stop in groups])
        typed = out.select([f.name for f in self.fields]).cast(self._typed_schema)
        return typed, out.column("_type_error").combine_chunks()

    def _with_times(self, parsed: pa.Table) -> tuple[pa.Table, np.ndarray]:
        """``parsed`` as the schema's types (its times arrive as text), and which rows' times converted.

        Times in the form the app writes (``2026-04-20T10:00:00.123456Z``) convert in Arrow; any other
        form, or one Arrow refuses, goes through DuckDB's cast, exactly as the line-by-line typing does.
        """
        converted = np.ones(parsed.num_rows, dtype=bool)
        columns = []
        for f in self._typed_schema:
            column = parsed.column(f.name)
            if pa.types.is_timestamp(f.type):
                column = self._times(column)
                failed = pc.and_(pc.is_valid(parsed.column(f.name)), pc.is_null(column))
                converted &= ~failed.to_numpy(zero_copy_only=False)
            columns.append(column.cast(f.type))
        return pa.table(columns, schema=self._typed_schema), converted

    def _times(self, text: pa.ChunkedArray) -> pa.ChunkedArray:
        if _all_app_times(text):
            try:
                return pc.cast(pc.cast(text, pa.timestamp("us", "UTC")), pa.timestamp("us"))
            except pa.ArrowInvalid:  # a day or hour that does not exist: DuckDB says which rows
                pass
        return self._typed_via_sql(pa.table({"t": text}), f"SELECT {utc_timestamp_sql('t')} FROM _raw").column(0)

    # -- rules -------------------------------------------------------------------------------

    def _rule_masks(self, typed: pa.Table) -> list[_Rule]:
        """(failing mask, reason, values quoted in the reason, how one is shown) in ``ROW_RULES``' order."""
        return [
            (failing.mask, rule.reason_for(failing.field, self.day), failing.values, failing.show)
            for rule in ROW_RULES
            for failing in rule.test.failing(typed, self.fields, self.day)
        ]

    def _reasons(self, typed: pa.Table, type_errors: pa.Array | None) -> pa.Array:
        n = typed.num_rows
        masks = self._rule_masks(typed)
        any_bad = pc.is_valid(type_errors) if type_errors is not None else pa.array(np.zeros(n, dtype=bool))
        for mask, *_ in masks:
            any_bad = pc.or_kleene(any_bad, pc.fill_null(mask, False))
        bad_rows = np.flatnonzero(any_bad.to_numpy(zero_copy_only=False))
        reasons: list[str | None] = [None] * n
        if len(bad_rows) == 0:
            return pa.nulls(n, pa.string())
        take = pa.array(bad_rows)
        errors = type_errors.take(take).to_pylist() if type_errors is not None else [None] * len(bad_rows)
        subset_masks = [
            (
                pc.fill_null(m.take(take), False).to_pylist(),
                reason,
                values.take(take).to_pylist() if values is not None else None,
                show,
            )
            for m, reason, values, show in masks
        ]
        for k, row in enumerate(bad_rows):
            if errors[k] is not None:
                reasons[row] = errors[k]
                continue
            for failed, reason, values, show in subset_masks:
                if failed[k]:
                    reasons[row] = f"{reason}: {show(values[k])}" if values is not None else reason
                    break
        return pa.array(reasons, pa.string())

    def _mark_duplicates(self, batch: JudgedBatch) -> pa.Array:
        """Reject every valid row whose play_id was already kept earlier today (first one wins).

        Ids are compared by a 64-bit hash in a ``HashSet64`` (4 bytes an id in memory, 4 on file, no
        per-event objects), so a batch costs the same whether the day holds a million ids or a hundred
        million. Two different ids colliding (odds ~3e-4 in a 100M-event day) would put the later one in
        quarantine as a duplicate: kept there, never silently lost.
        """
        hashes, reasons = batch.valid_hashes, batch.reasons
        ordered = np.sort(hashes)  # one sort serves both questions
        repeat_sorted = np.zeros(len(ordered), dtype=bool)
        repeat_sorted[1:] = ordered[1:] == ordered[:-1]  # later copies within the batch
        repeat_sorted |= self._seen.contains_sorted(ordered)  # copies of ids kept by an earlier batch
        if not repeat_sorted.any():  # the common case: no row to map back, so no argsort
            self._seen.add(ordered, already_sorted=True)
            return reasons
        self._seen.add(ordered[~repeat_sorted], already_sorted=True)
        # Equal hashes are adjacent whatever the sort, so the flags hold for the stable order, in
        # which the first copy of an id comes first: the first one wins.
        duplicate = np.empty(len(hashes), dtype=bool)
        duplicate[np.argsort(hashes, kind="stable")] = repeat_sorted
        out = reasons.to_pylist()
        for row in batch.valid_rows[duplicate]:
            out[row] = DUPLICATE_REASON
        return pa.array(out, pa.string())

    # -- the whole batch ---------------------------------------------------------------------

    def prepare(self, raw: RawBatch) -> RawBatch | JudgedBatch:
        """Everything about a batch that does not depend on the batches before it: thread-safe, so
        several batches are prepared at once while ``classify`` takes the earlier ones in order.

        Rows are typed and tested against the row rules, and the play_ids of the rows that pass are
        hashed; what is left for ``classify`` is the duplicates.
        """
        if not isinstance(raw, JsonLines | ArrowRows):
            return raw
        typed, type_errors, origin = self._typed(raw)
        reasons = self._reasons(typed, type_errors)
        valid_rows = np.flatnonzero(pc.is_null(reasons).to_numpy(zero_copy_only=False))
        play_ids = typed.column("play_id").combine_chunks()
        if len(valid_rows) < len(play_ids):
            play_ids = play_ids.take(pa.array(valid_rows))
        return JudgedBatch(raw.source_file, typed, reasons, origin, valid_rows, self._hash64(play_ids))

    def _hash64(self, ids: pa.Array) -> np.ndarray:
        con = self._duckdb()
        con.register("_ids", pa.table({"id": ids}))
        try:
            return con.execute("SELECT hash(id) FROM _ids").arrow().read_all().column(0).to_numpy()
        finally:
            con.unregister("_ids")

    def classify(self, raw: RawBatch | JudgedBatch, mark_duplicates: bool = True) -> tuple[pa.Table, pa.Table]:
        """Return (valid rows typed as the schema, rejected rows as ``REJECT_SCHEMA``); batches of a day
        come in their order, prepared (``prepare``) or not. Without ``mark_duplicates`` a repeated play_id
        stays valid: an engine that sees the day in parts (Spark) finds the duplicates across them itself."""
        if isinstance(raw, UnreadableFile):
            return self._one_reject(raw.error, "", raw.source_file, None)
        if isinstance(raw, LongLine):
            reason = f"line longer than {raw.limit:,} bytes: {raw.size:,} bytes"
            return self._one_reject(reason, _truncated(raw.head, raw.size), raw.source_file, raw.line)
        batch = raw if isinstance(raw, JudgedBatch) else self.prepare(raw)
        if not isinstance(batch, JudgedBatch):
            raise TypeError(f"not a batch of events: {type(raw).__name__}")
        typed = batch.typed
        reasons = self._mark_duplicates(batch) if mark_duplicates else batch.reasons
        keep = pc.is_null(reasons)
        clean = reasons.null_count == len(reasons)
        valid = (typed if clean else typed.filter(keep)).cast(self.arrow_schema)
        bad = pc.invert(keep)
        if clean:
            self._count(typed.num_rows, valid.num_rows, [])
            return valid, REJECT_SCHEMA.empty_table()
        rejected_reasons = reasons.filter(bad)
        bad_rows = typed.filter(bad)
        payloads, source_lines = batch.origin(bad)
        rejected = pa.table(
            {
                "play_id": pc.cast(bad_rows.column("play_id"), pa.string()),
                "reason": rejected_reasons,
                "payload": _bounded(pc.cast(payloads, pa.string())),
                "source_file": pa.array([batch.source_file] * len(rejected_reasons), pa.string()),
                "source_line": source_lines,
            },
            schema=REJECT_SCHEMA,
        )
        self._count(typed.num_rows, valid.num_rows, rejected_reasons.to_pylist())
        return valid, rejected

    def _one_reject(self, reason: str, payload: str, source_file: str, line: int | None) -> tuple[pa.Table, pa.Table]:
        """An event known bad before typing (a file not read, a line not held): no rows, one reject."""
        self._count(1, 0, [reason])
        reject = pa.table(
            {
                "play_id": [None],
                "reason": [reason],
                "payload": [payload],
                "source_file": [source_file],
                "source_line": [line],
            },
            schema=REJECT_SCHEMA,
        )
        return self.arrow_schema.empty_table(), reject

    def _count(self, seen: int, valid: int, reasons: list[str]) -> None:
        self.totals.seen += seen
        self.totals.valid += valid
        self.totals.rejected_by_reason.update(reason_group(r) for r in reasons)

    def close(self) -> None:
        self._seen.close()
        for con in self._cursors:
            con.close()
        if self._con is not None:
            self._con.close()
