"""The rules a valid play keeps, each written once: its name, its reject reason, its words and its test.

Ingest rejects an event that breaks a rule, for the first one it breaks in ``PLAY_RULES``' order
(``validation.DayValidator``). The checks on music.plays (``assets/checks.py``) are the ``CHECKED_RULES``:
named and described by them, they measure committed days by the same tests (``reads/quality.py``). A test
is one predicate read two ways: as PyArrow compute masks over a typed batch (ingest's hot path), and,
where committed rows are counted, as the same predicate in DuckDB SQL (one grouped query per chunk of days).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.types import NestedField, StringType

from sonik_pipeline.lakehouse.days import day_bounds
from sonik_pipeline.lakehouse.duckdb_io.sql import sql_identifier
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SCHEMA, SUBSCRIPTION_TIERS

MAX_DURATION_SECONDS = 86_400
# The longest text a field may hold, in UTF-8 bytes: many times the longest real title or artist name, and
# small enough that no value can swell a row of music.plays or a group in the marts.
MAX_TEXT_BYTES = 4 * 1024

Values = pa.Array | pa.ChunkedArray


def _quoted(value: object) -> str:
    """A failing value as its reason quotes it; a time also says which UTC day it belongs to, which is what
    a replay of the quarantine (``rejects.py``) and the person reading it need."""
    if isinstance(value, dt.datetime):
        return f"belongs to {value.date()} ({value})"
    return str(value)


def _size_in_bytes(size: object) -> str:
    return f"{size:,} bytes"


@dataclass(frozen=True)
class Failing:
    """The rows of a batch that break a rule on one field, and the values its reason quotes (None: none)."""

    mask: Values
    field: str
    values: Values | None
    show: Callable[[object], str] = _quoted


class RowTest(Protocol):
    """What a rule tests each row of a batch for."""

    def failing(self, rows: pa.Table, fields: Sequence[NestedField], day: dt.date) -> Iterator[Failing]:
        """Masks of the typed ``rows`` (ingested for ``day``, of a table with ``fields``) that break the rule."""
        ...


@dataclass(frozen=True)
class LongerThan:
    """A text field over ``limit`` UTF-8 bytes, shown by its size, never quoted whole."""

    limit: int

    def failing(self, rows: pa.Table, fields: Sequence[NestedField], day: dt.date) -> Iterator[Failing]:
        for f in fields:
            if type(f.field_type) is StringType and f.name in rows.column_names:
                sizes = pc.binary_length(rows.column(f.name))
                if (pc.max(sizes).as_py() or 0) > self.limit:  # one look a column; rarely true
                    yield Failing(pc.greater(sizes, self.limit), f.name, sizes, _size_in_bytes)


@dataclass(frozen=True)
class Missing:
    """A required field that is null."""

    def failing(self, rows: pa.Table, fields: Sequence[NestedField], day: dt.date) -> Iterator[Failing]:
        for f in fields:
            if f.required:
                yield Failing(pc.is_null(rows.column(f.name)), f.name, None)

    def sql(self, fields: Sequence[NestedField]) -> str:
        return " OR ".join(f"{sql_identifier(f.name)} IS NULL" for f in fields if f.required)


@dataclass(frozen=True)
class OutsideDay:
    """A time outside the UTC day the play is ingested for (or, on music.plays, the day it is filed under)."""

    column: str

    def mask(self, values: Values, day: dt.date) -> Values:
        """The values outside ``day``: a column of a batch, or a data file's lower and upper bounds."""
        start, end = (pa.scalar(bound, pa.timestamp("us")) for bound in day_bounds(day))
        return pc.or_(pc.less(values, start), pc.greater_equal(values, end))

    def failing(self, rows: pa.Table, fields: Sequence[NestedField], day: dt.date) -> Iterator[Failing]:
        if self.column in rows.column_names:
            values = rows.column(self.column)
            yield Failing(self.mask(values, day), self.column, values)


@dataclass(frozen=True)
class OutOfRange:
    """A number outside ``low``..``high`` (both allowed)."""

    column: str
    low: int
    high: int

    def failing(self, rows: pa.Table, fields: Sequence[NestedField], day: dt.date) -> Iterator[Failing]:
        if self.column in rows.column_names:
            values = rows.column(self.column)
            yield Failing(pc.or_(pc.less(values, self.low), pc.greater(values, self.high)), self.column, values)

    def sql(self, fields: Sequence[NestedField]) -> str:
        column = sql_identifier(self.column)
        return f"{column} < {self.low} OR {column} > {self.high}"


@dataclass(frozen=True)
class NotOneOf:
    """A text that is none of ``allowed`` (a null is unknown, not wrong)."""

    column: str
    allowed: tuple[str, ...]

    def failing(self, rows: pa.Table, fields: Sequence[NestedField], day: dt.date) -> Iterator[Failing]:
        if self.column in rows.column_names:
            values = rows.column(self.column)
            allowed = pa.array(self.allowed, values.type)
            mask = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=allowed)))
            yield Failing(mask, self.column, values)


@dataclass(frozen=True)
class NotMatching:
    """A text that does not match ``pattern`` (a null is unknown, not wrong)."""

    column: str
    pattern: str

    def failing(self, rows: pa.Table, fields: Sequence[NestedField], day: dt.date) -> Iterator[Failing]:
        if self.column in rows.column_names:
            values = rows.column(self.column)
            yield Failing(pc.invert(pc.match_substring_regex(values, self.pattern)), self.column, values)


@dataclass(frozen=True)
class Repeated:
    """A value already kept earlier in the day (the first one wins). No batch alone can tell: the validator
    tests it last, against the ids it kept (``_mark_duplicates``), and quality by ``count(DISTINCT)``."""

    column: str


@dataclass(frozen=True)
class Rule:
    """One rule of a valid play."""

    name: str  # the rule's name: the asset check's on music.plays, for a checked rule
    reason: str  # why an event that breaks it is rejected; ``{field}`` and ``{day}`` are filled in
    description: str  # what a valid play keeps, in words: a checked rule's check description
    test: RowTest | Repeated
    figure: str | None = None  # committed rows that break it (a ``PlaysDayQuality`` count); None: ingest only

    def reason_for(self, field: str, day: dt.date) -> str:
        return self.reason.format(field=field, day=day)


_REQUIRED = ", ".join(f.name for f in PLAYS_SCHEMA.fields if f.required)

TEXT_WITHIN_BOUND = Rule(
    "text_within_bound",
    f"{{field}} longer than {MAX_TEXT_BYTES:,} bytes",
    f"No text field holds more than {MAX_TEXT_BYTES:,} UTF-8 bytes.",
    LongerThan(MAX_TEXT_BYTES),
)
REQUIRED_FIELDS = Rule(
    "required_fields_present",
    "missing required field {field}",
    f"No required field ({_REQUIRED}) is null.",
    Missing(),
    figure="null_required",
)
PLAYED_AT_IN_DAY = Rule(
    "played_at_inside_day",
    "played_at outside {day} (UTC)",
    "played_at is inside the UTC day: every data file of the day holds only times of that day.",
    OutsideDay("played_at"),
    figure="rows_outside_day",
)
DURATION_IN_RANGE = Rule(
    "durations_in_range",
    f"duration_seconds out of range 0..{MAX_DURATION_SECONDS}",
    f"duration_seconds is within 0..{MAX_DURATION_SECONDS}.",
    OutOfRange("duration_seconds", 0, MAX_DURATION_SECONDS),
    figure="durations_out_of_range",
)
KNOWN_TIER = Rule(
    "subscription_tier_known",
    f"subscription_tier is not one of {', '.join(SUBSCRIPTION_TIERS)}",
    f"subscription_tier is one of {', '.join(SUBSCRIPTION_TIERS)}, or unknown.",
    NotOneOf("subscription_tier", SUBSCRIPTION_TIERS),
)
COUNTRY_CODE = Rule(
    "country_is_a_code",
    "country is not a two-letter code",
    "country is a two-letter code in capitals, or unknown.",
    NotMatching("country", "^[A-Z]{2}$"),
)
UNIQUE_PLAY_ID = Rule(
    "play_id_unique",
    "duplicate play_id",
    "No play_id appears twice in the day.",
    Repeated("play_id"),
    figure="duplicate_play_ids",
)

# The rules a batch alone can test, in the order ingest tests them: an event that breaks several is rejected
# for the first. A text over the bound comes first, so that it is shown by its size rather than quoted.
ROW_RULES = (TEXT_WITHIN_BOUND, REQUIRED_FIELDS, PLAYED_AT_IN_DAY, DURATION_IN_RANGE, KNOWN_TIER, COUNTRY_CODE)
# Uniqueness last: only an event that breaks no other rule is kept, and so can make a later one a duplicate.
PLAY_RULES = (*ROW_RULES, UNIQUE_PLAY_ID)
# The asset checks on music.plays: the rules whose breaches committed days are measured for.
CHECKED_RULES = tuple(rule for rule in PLAY_RULES if rule.figure)
