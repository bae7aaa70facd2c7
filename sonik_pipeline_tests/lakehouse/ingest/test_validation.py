import datetime as dt
import json
import re

import duckdb
import pyarrow as pa
import pytest

from sonik_pipeline.lakehouse.duckdb_io.extensions import spill_directory
from sonik_pipeline.lakehouse.ingest.validation import (
    _APP_TIME,
    DUPLICATE_REASON,
    VALIDATION_MEMORY_LIMIT,
    DayValidator,
    _all_app_times,
    reason_group,
    reason_group_sql,
)
from sonik_pipeline.lakehouse.sources.events import ArrowRows, JsonLines, LongLine, UnreadableFile
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SCHEMA

DAY = dt.date(2026, 4, 20)
GOOD = {
    "play_id": "p-good",
    "user_id": 7,
    "track_id": 3,
    "artist": "Drake",
    "title": "One Dance",
    "played_at": "2026-04-20T10:00:00Z",
    "duration_seconds": 180,
    "country": "US",
    "device": "tv",
}


def _lines(*payloads: str) -> JsonLines:
    return JsonLines(pa.array(payloads, pa.string()), pa.array(range(1, len(payloads) + 1), pa.int64()), "day.jsonl")


def _event(**changes) -> str:
    return json.dumps({**GOOD, "play_id": f"p-{len(changes)}-{sorted(changes)}", **changes})


def _only_reason(payload: str) -> str:
    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(payload))
    assert valid.num_rows == 0
    assert rejected.num_rows == 1
    return rejected.column("reason")[0].as_py()


def test_a_good_event_is_kept_typed_as_the_schema() -> None:
    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(json.dumps(GOOD)))

    assert rejected.num_rows == 0
    assert valid.to_pylist() == [{**GOOD, "played_at": dt.datetime(2026, 4, 20, 10), "subscription_tier": None}]
    assert valid.schema.field("played_at").type == pa.timestamp("us")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "not a JSON object"),
        (_event(user_id="abc"), 'wrong type for user_id: expected an integer, got VARCHAR "abc"'),
        (_event(track_id=1.5), "wrong type for track_id: expected an integer, got DOUBLE 1.5"),
        (_event(played_at="yesterday"), "wrong type for played_at: expected an ISO-8601 timestamp"),
        (_event(duration_seconds=2**40), "wrong type for duration_seconds: expected a 32-bit integer"),
        (_event(artist=None), "missing required field artist"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "title"}), "missing required field title"),
        (
            _event(played_at="2026-04-21T00:00:00Z"),
            "played_at outside 2026-04-20 (UTC): belongs to 2026-04-21 (2026-04-21 00:00:00)",
        ),
        (
            _event(played_at="2026-04-20T23:30:00-02:00"),
            "played_at outside 2026-04-20 (UTC): belongs to 2026-04-21 (2026-04-21 01:30:00)",
        ),
        (_event(duration_seconds=-1), "duration_seconds out of range 0..86400: -1"),
        (_event(duration_seconds=86_401), "duration_seconds out of range 0..86400: 86401"),
        (_event(country="usa"), "country is not a two-letter code: usa"),
        (_event(subscription_tier="Gold"), "subscription_tier is not one of Free, Premium, Family: Gold"),
    ],
)
def test_each_bad_event_is_rejected_with_its_reason(payload: str, reason: str) -> None:
    assert _only_reason(payload).startswith(reason)


def test_reasons_group_the_same_in_python_and_in_sql() -> None:
    reasons = [
        'wrong type for user_id: expected an integer, got VARCHAR "abc"',
        "played_at outside 2026-04-20 (UTC): belongs to 2026-04-18 (2026-04-18 10:00:00)",
        "malformed JSON",
        "unreadable Parquet file: Parquet magic bytes not found",
    ]

    in_sql = duckdb.execute(f"SELECT {reason_group_sql('r')} FROM unnest(?) AS t(r)", [reasons]).fetchall()

    assert (
        [reason_group(r) for r in reasons]
        == [g for (g,) in in_sql]
        == [
            "wrong type for user_id",
            "played_at outside 2026-04-20 (UTC)",
            "malformed JSON",
            "unreadable Parquet file",
        ]
    )


def test_offsets_are_converted_to_utc_and_naive_times_taken_as_utc() -> None:
    payloads = [_event(played_at="2026-04-20T01:30:00+02:00"), _event(played_at="2026-04-20 05:00:00")]

    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(*payloads))

    assert valid.column("played_at").to_pylist() == [dt.datetime(2026, 4, 20, 5)]
    assert rejected.column("reason").to_pylist() == [
        "played_at outside 2026-04-20 (UTC): belongs to 2026-04-19 (2026-04-19 23:30:00)"
    ]


def test_rejects_keep_the_raw_payload_file_and_line() -> None:
    _, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(json.dumps(GOOD), "{broken"))

    assert rejected.to_pylist() == [
        {
            "play_id": None,
            "reason": "malformed JSON",
            "payload": "{broken",
            "source_file": "day.jsonl",
            "source_line": 2,
        }
    ]


def test_duplicate_play_ids_are_dropped_within_and_across_batches_first_one_wins() -> None:
    validator = DayValidator(PLAYS_SCHEMA, DAY)
    first, second = json.dumps(GOOD), json.dumps({**GOOD, "device": "mobile"})

    valid1, rejected1 = validator.classify(_lines(first, second))
    valid2, rejected2 = validator.classify(_lines(first, json.dumps({**GOOD, "play_id": "p-other"})))

    assert valid1.column("device").to_pylist() == ["tv"]
    assert rejected1.column("reason").to_pylist() == [DUPLICATE_REASON]
    assert valid2.column("play_id").to_pylist() == ["p-other"]
    assert rejected2.column("reason").to_pylist() == [DUPLICATE_REASON]
    assert validator.totals.duplicates == 2
    assert validator.totals.invalid == 0


def test_a_rejected_event_does_not_make_a_later_good_one_a_duplicate() -> None:
    bad = json.dumps({**GOOD, "country": "nowhere"})

    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(bad, json.dumps(GOOD)))

    assert valid.num_rows == 1
    assert rejected.column("reason").to_pylist() == ["country is not a two-letter code: nowhere"]


def test_clean_columnar_batches_pass_whole_and_every_event_is_accounted_for() -> None:
    validator = DayValidator(PLAYS_SCHEMA, DAY)
    events = synthetic_batch(DAY, 10_000)

    valid, rejected = validator.classify(ArrowRows(events, "synthetic"))

    assert (valid.num_rows, rejected.num_rows) == (10_000, 0)
    assert valid.column("play_id").to_pylist() == events.column("play_id").to_pylist()
    assert validator.totals.seen == validator.totals.valid + validator.totals.rejected


def test_mistyped_parquet_columns_are_cast_or_rejected_per_row() -> None:
    rows = pa.table(
        {
            "play_id": ["a", "b"],
            "user_id": ["12", "twelve"],  # strings in an integer column
            "track_id": [1, 2],
            "artist": ["Drake", "Drake"],
            "title": ["One Dance", "One Dance"],
            "played_at": pa.array(
                [dt.datetime(2026, 4, 20, 8), dt.datetime(2026, 4, 20, 9)], pa.timestamp("us", tz="UTC")
            ),
            "duration_seconds": [100, 200],
        }
    )

    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(ArrowRows(rows, "day.parquet"))

    assert valid.column("user_id").to_pylist() == [12]
    assert valid.column("country").to_pylist() == [None]  # absent optional column reads null
    assert rejected.column("reason").to_pylist() == ["wrong type for user_id: expected an integer, got twelve"]
    assert json.loads(rejected.column("payload")[0].as_py())["user_id"] == "twelve"


def test_an_unreadable_file_is_quarantined_not_skipped() -> None:
    validator = DayValidator(PLAYS_SCHEMA, DAY)

    valid, rejected = validator.classify(UnreadableFile("bad.parquet", "unreadable Parquet file: magic bytes"))

    assert valid.num_rows == 0
    assert rejected.column("source_file").to_pylist() == ["bad.parquet"]
    assert validator.totals.rejected_by_reason == {"unreadable Parquet file": 1}


GOOD_TEXT = json.dumps(GOOD)


@pytest.mark.parametrize(
    "lenient",
    [
        GOOD_TEXT[:-1] + ",}",  # a trailing comma
        GOOD_TEXT.replace('"country": "US"', '"country": "US", "extra": [1, 2, ]'),  # one inside a list
        GOOD_TEXT.replace('"duration_seconds": 180', '"duration_seconds": NaN'),  # JavaScript's NaN
        GOOD_TEXT.replace('"duration_seconds": 180', '"duration_seconds": -Infinity'),
        GOOD_TEXT.replace('"', "'"),  # single-quoted strings
        GOOD_TEXT.replace('"play_id"', "play_id"),  # an unquoted key
        GOOD_TEXT + " // a comment",
        "/* a comment */ " + GOOD_TEXT,
    ],
)
def test_a_line_that_is_not_strict_json_is_rejected_even_where_duckdb_would_accept_it(lenient: str) -> None:
    assert _only_reason(lenient) == "malformed JSON"


def test_strings_that_only_look_lenient_are_still_valid() -> None:
    tricky = json.dumps({**GOOD, "title": "NaN, }", "artist": "Infinity ]"})
    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(tricky))
    assert (valid.num_rows, rejected.num_rows) == (1, 0)
    assert valid.column("title")[0].as_py() == "NaN, }"


def test_a_line_of_invalid_utf8_is_rejected_with_its_bytes_as_escapes_not_replacement_characters() -> None:
    raw = GOOD_TEXT.replace("Drake", "Dr\udcffake").encode("utf-8", errors="surrogateescape")
    text = raw.decode("utf-8", errors="backslashreplace")
    lines = JsonLines(pa.array([text]), pa.array([1], pa.int64()), "day.jsonl", pa.array([True]))

    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(lines)

    assert valid.num_rows == 0
    [reject] = rejected.to_pylist()
    assert reject["reason"] == "line is not valid UTF-8 (its bytes are kept in the payload as \\xNN escapes)"
    assert "Dr\\xffake" in reject["payload"] and "\ufffd" not in reject["payload"]


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("title", "x" * 4_097, "title longer than 4,096 bytes: 4,097 bytes"),
        ("artist", "é" * 2_049, "artist longer than 4,096 bytes: 4,098 bytes"),  # bytes, not characters
        ("play_id", "p" * 10_000, "play_id longer than 4,096 bytes: 10,000 bytes"),
        ("country", "U" * 5_000, "country longer than 4,096 bytes: 5,000 bytes"),  # not quoted whole
    ],
)
def test_a_text_field_over_the_bound_is_rejected_with_its_size(field: str, value: str, reason: str) -> None:
    payload = _event(**{field: value})

    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(payload))

    assert valid.num_rows == 0
    assert rejected.column("reason").to_pylist() == [reason]
    assert rejected.column("payload").to_pylist() == [payload]  # a line within the line bound is kept whole


def test_a_text_field_at_the_bound_is_kept() -> None:
    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(_event(title="é" * 2_048)))

    assert (valid.num_rows, rejected.num_rows) == (1, 0)


def test_a_parquet_value_over_the_bounds_is_rejected_and_its_payload_kept_bounded() -> None:
    rows = synthetic_batch(DAY, 3)
    titles = rows.column("title").to_pylist()
    titles[1] = "y" * 3_000_000
    rows = rows.set_column(rows.schema.get_field_index("title"), "title", pa.array(titles, pa.large_string()))

    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(ArrowRows(rows, "day.parquet"))

    assert valid.num_rows == 2
    [reject] = rejected.to_pylist()
    assert reject["reason"] == "title longer than 4,096 bytes: 3,000,000 bytes"
    assert reject["play_id"] == rows.column("play_id")[1].as_py()
    payload = reject["payload"]
    assert len(payload.encode()) < 4_096 + 100
    assert payload.startswith('{"play_id": ')
    note = re.search(r"… \[truncated: ([0-9,]+) bytes\]$", payload)
    assert note and int(note.group(1).replace(",", "")) > 3_000_000


def test_a_line_over_the_bound_is_quarantined_by_its_number_with_its_first_bytes() -> None:
    validator = DayValidator(PLAYS_SCHEMA, DAY)
    head = (GOOD_TEXT[:-1] + ', "lyrics": "' + "la" * 3_000).encode()[:4_096]

    valid, rejected = validator.classify(LongLine("day.jsonl", 42, 5_000_000, head, 1_048_576))

    assert valid.num_rows == 0
    [reject] = rejected.to_pylist()
    assert reject == {
        "play_id": None,
        "reason": "line longer than 1,048,576 bytes: 5,000,000 bytes",
        "payload": head.decode() + "… [truncated: 5,000,000 bytes]",
        "source_file": "day.jsonl",
        "source_line": 42,
    }
    assert (validator.totals.seen, validator.totals.invalid) == (1, 1)
    assert validator.totals.rejected_by_reason == {"line longer than 1,048,576 bytes": 1}


def test_the_validators_duckdb_has_a_memory_limit_and_spills_outside_the_working_folder() -> None:
    validator = DayValidator(PLAYS_SCHEMA, DAY)
    validator.classify(_lines(_event(user_id="abc")))  # a reject: typed by DuckDB

    [(limit, spill)] = (
        validator._duckdb()
        .execute("SELECT current_setting('memory_limit'), current_setting('temp_directory')")
        .fetchall()
    )
    validator.close()

    with duckdb.connect() as con:
        con.execute(f"SET memory_limit = '{VALIDATION_MEMORY_LIMIT}'")
        assert limit == con.execute("SELECT current_setting('memory_limit')").fetchone()[0]
    assert spill == spill_directory()  # DuckDB's own default is .tmp in the working folder


def test_long_lines_typed_exactly_stay_within_the_validators_memory_limit() -> None:
    # 12 lines of 500 KB that DuckDB types (each holds a loose "Inf"): when each line was parsed once a
    # field, 4 of them at once needed about 1 GB of DuckDB's memory
    lines = [_event(title="Inf" + "t" * 500_000, play_id=f"p-{i}") for i in range(12)]

    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(_lines(*lines))

    assert valid.num_rows == 0
    assert rejected.column("play_id").to_pylist() == [f"p-{i}" for i in range(12)]
    assert rejected.column("reason").to_pylist() == ["title longer than 4,096 bytes: 500,003 bytes"] * 12
    assert rejected.column("source_line").to_pylist() == list(range(1, 13))


@pytest.mark.parametrize("fraction", ["", ".5", ".123", ".123456"])
def test_the_app_times_byte_check_agrees_with_the_regex_on_every_one_byte_change(fraction: str) -> None:
    """Times of one length are judged from their bytes; each one-byte change must be judged as the regex
    judges it (a digit for a digit stays a time; anything else in any place is not the app's form)."""
    good = f"2026-04-20T10:00:00{fraction}Z"
    replacements = ["0", "9", "-", ":", "T", "Z", ".", " ", "a", "/", "\u00e9", "\u0663", "\x00"]
    variants = [good[:i] + r + good[i + 1 :] for i in range(len(good)) for r in replacements]
    for variant in variants:
        for type_ in (pa.string(), pa.large_string()):
            column = pa.chunked_array([pa.array([good] * 3 + [variant] + [good] * 2, type_)])
            expected = all(re.fullmatch(_APP_TIME.strip("^$"), v, re.ASCII) for v in [good, variant])
            assert _all_app_times(column) is bool(expected), variant
    assert _all_app_times(pa.chunked_array([pa.array([good, None, good])]))  # nulls: left to the regex
    assert not _all_app_times(pa.chunked_array([pa.array([good, good + " "])]))  # mixed lengths
    sliced = pa.array(["x" * len(good), good, good, "y"]).slice(1, 2)  # an offset into shared buffers
    assert _all_app_times(pa.chunked_array([sliced]))
