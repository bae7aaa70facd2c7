"""The fast landing paths decide every event exactly as the row-by-row path does.

A generated corpus of good and bad lines (every kind of fault the quarantine names, and text that only
looks odd) goes through the landing reader and ``DayValidator`` as ingest runs them, and through the
reference: the old reader (``readlines`` + ``decode`` + ``strip``) and DuckDB's typing for every line.
The kept rows and the quarantine rows (reason, payload, file, line) must be the same, line for line.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from sonik_pipeline.lakehouse.ingest.validation import DayValidator, _typed_from_arrow
from sonik_pipeline.lakehouse.sources import landing as landing_source
from sonik_pipeline.lakehouse.sources.events import MAX_LINE_BYTES, ArrowRows, JsonLines, SourceFile
from sonik_pipeline.lakehouse.sources.json_lines import read_text_chunks, split_lines
from sonik_pipeline.lakehouse.sources.landing import landing_events
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SCHEMA

DAY = dt.date(2026, 4, 20)


class LineByLineValidator(DayValidator):
    """The reference: every JSON line typed by DuckDB's JSON functions on its own (the old classifier)."""

    def _typed_json(self, raw: JsonLines) -> tuple[pa.Table, pa.Array | None]:
        return self._typed_json_exactly(raw, np.arange(len(raw.lines)))


def reference_lines(path: Path, source_file: str, chunk_bytes: int) -> Iterator[JsonLines]:
    """The old landing reader: ``readlines`` in chunks, each line decoded and stripped in Python."""
    line_no = 0
    with open(path, "rb") as f:
        while chunk := f.readlines(chunk_bytes):
            lines, numbers, invalid = [], [], []
            for raw in chunk:
                line_no += 1
                try:
                    text, bad = raw.decode("utf-8").strip(), False
                except UnicodeDecodeError:
                    text, bad = raw.decode("utf-8", errors="backslashreplace").strip(), True
                if text:
                    lines.append(text)
                    numbers.append(line_no)
                    invalid.append(bad)
            if lines:
                yield JsonLines(
                    pa.array(lines, pa.string()),
                    pa.array(numbers, pa.int64()),
                    source_file,
                    pa.array(invalid, pa.bool_()) if any(invalid) else None,
                )


def _good_events(n: int, seed: int) -> list[dict]:
    events = synthetic_batch(DAY, n, seed=seed).to_pylist()
    for e in events:
        e["played_at"] = e["played_at"].strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return events


def _dump(event: dict, rng: random.Random) -> str:
    style = rng.random()
    if style < 0.6:
        return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    if style < 0.8:
        return json.dumps(event)  # spaces, \\u escapes for non-ASCII
    items = list(event.items())
    rng.shuffle(items)
    return json.dumps(dict(items), indent=None, separators=(", ", ": "), ensure_ascii=False)


def _swap(line: str, key: str, raw_value: str) -> str:
    """``line`` (compact JSON) with ``key``'s value replaced by raw JSON text."""
    event = json.loads(line)
    event[key] = "\x00MARK\x00"
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).replace('"\\u0000MARK\\u0000"', raw_value)


def _mutations(good: str, other_id: str) -> list[bytes | str]:
    """Faulty and odd variants of one good line; str lines are written as UTF-8, bytes as they are."""
    e = json.loads(good)
    return [
        # malformed, not an object, not strict JSON
        good[: len(good) // 2],
        good[:-1],
        "[1, 2]",
        "null",
        '"just a string"',
        "42",
        "{}",
        good[:-1] + ",}",
        good[:-1] + ', "extra": [1, 2, ]}',
        _swap(good, "extra", "NaN"),
        _swap(good, "extra", "-Infinity"),
        _swap(good, "extra", "Inf"),
        _swap(good, "extra", "inf"),
        _swap(good, "extra", "nan"),
        _swap(good, "duration_seconds", "Infinity"),
        good.replace('"', "'"),
        good + " // a comment",
        "/* a comment */ " + good,
        good + " " + good,
        good + "x",
        _swap(good, "user_id", "07"),
        _swap(good, "user_id", "+7"),
        _swap(good, "user_id", "0x7"),
        _swap(good, "extra", "1e400"),
        good.replace('"artist":', '"artist":\r'),
        good.replace(",", ",\r", 1),
        "\ufeff" + good,
        good[:20] + "\ufeff" + good[20:],
        # wrong types, missing and null fields
        _swap(good, "user_id", '"12"'),
        _swap(good, "user_id", '"abc"'),
        _swap(good, "user_id", "7.0"),
        _swap(good, "user_id", "7e2"),
        _swap(good, "user_id", "true"),
        _swap(good, "user_id", "9223372036854775808"),
        _swap(good, "user_id", "-9223372036854775808"),
        _swap(good, "user_id", "-0"),
        _swap(good, "track_id", "1.5"),
        _swap(good, "duration_seconds", "3000000000"),
        _swap(good, "duration_seconds", "2147483647"),
        _swap(good, "artist", "12"),
        _swap(good, "artist", "false"),
        _swap(good, "artist", '{"a": 1}'),
        _swap(good, "title", "[1]"),
        _swap(good, "artist", "null"),
        _swap(good, "country", "null"),
        json.dumps({k: v for k, v in e.items() if k != "title"}),
        json.dumps({k: v for k, v in e.items() if k not in ("play_id", "user_id")}),
        # duplicate keys
        good[:-1] + ', "artist": "Somebody Else"}',
        good[:-1] + ', "art\\u0069st": "Escaped Twin"}',
        good[:-1] + ', "extra": 1, "extra": "two"}',
        good.replace('"artist"', '"art\\u0069st"'),
        # times
        _swap(good, "played_at", '"2026-04-20T10:00:00Z"'),
        _swap(good, "played_at", '"2026-04-20T10:00:00.5Z"'),
        _swap(good, "played_at", '"2026-04-20T10:00:00.1234567Z"'),
        _swap(good, "played_at", '"2026-04-20T01:30:00+02:00"'),
        _swap(good, "played_at", '"2026-04-20T23:30:00-02:00"'),
        _swap(good, "played_at", '"2026-04-20 05:00:00"'),
        _swap(good, "played_at", '"2026-04-20T05:00:00"'),
        _swap(good, "played_at", '"2026-04-20"'),
        _swap(good, "played_at", '"2026-04-20T24:00:00Z"'),
        _swap(good, "played_at", '"2026-04-19T23:59:60Z"'),
        _swap(good, "played_at", '"2026-02-30T10:00:00Z"'),
        _swap(good, "played_at", '"2026-04-21T00:00:00Z"'),
        _swap(good, "played_at", '"2026-04-19T23:59:59.999999Z"'),
        _swap(good, "played_at", '"yesterday"'),
        _swap(good, "played_at", '"2026-04-20T10:00:00\\u005a"'),
        _swap(good, "played_at", "1745143200"),
        # rules
        _swap(good, "duration_seconds", "-1"),
        _swap(good, "duration_seconds", "86401"),
        _swap(good, "duration_seconds", "86400"),
        _swap(good, "country", '"usa"'),
        _swap(good, "country", '"us"'),
        _swap(good, "subscription_tier", '"Gold"'),
        _swap(good, "play_id", json.dumps(other_id)),  # a duplicate of an earlier event
        # strings: escapes, Unicode, control characters, surrogates, long values
        _swap(good, "title", '"tab\\there \\"quoted\\" \\/ \\\\ \\u00e9\\ud83c\\udfb5"'),
        _swap(good, "title", '"Beyoncé — 🎵 ünïcödé"'),
        _swap(good, "title", '"nul \\u0000 inside"'),
        _swap(good, "title", '"NaN, } Infinity ] inf nan"'),
        _swap(good, "title", '"lone \\ud800 surrogate"'),
        _swap(good, "title", '"lone \\udc00 low"'),
        _swap(good, "title", '"raw\ttab"'),
        _swap(good, "title", '"raw\x01control"'),
        _swap(good, "title", '"bad \\x escape"'),
        _swap(good, "title", json.dumps("long " * 20_000)),
        _swap(good, "extra", "[" * 3000 + "]" * 3000),
        _swap(good, "extra", '{"nested": {"deeper": [1, 2.5, null, true, "x"]}}'),
        # whitespace around lines, and blank lines
        "   " + good + "\t",
        "\x0b" + good + "\x0c",
        "\x1c" + good + "\x1f",
        "\u00a0" + good + "\u2028",
        "\u3000" + good,
        good + "\x85",
        "",
        "   \t ",
        # bytes that are not UTF-8
        good.encode().replace(b'"title":"', b'"title":"\xff'),
        good.encode()[:-1] + b', "extra": "\xc0\xaf"}',
        b"\xff\xfe",
    ]


def corpus(seed: int, good_lines: int, bad_share: float) -> bytes:
    """Good events in several JSON styles with faulty lines scattered among them; CRLF in places."""
    rng = random.Random(seed)
    goods = [_dump(e, rng) for e in _good_events(good_lines, seed)]
    out: list[bytes] = []
    for i, good in enumerate(goods):
        if i and rng.random() < bad_share:
            variants = _mutations(good, json.loads(goods[rng.randrange(i)])["play_id"])
            line = variants[rng.randrange(len(variants))]
        else:
            line = good
        encoded = line if isinstance(line, bytes) else line.encode("utf-8")
        out.append(encoded + (b"\r\n" if rng.random() < 0.02 else b"\n"))
    return b"".join(out)


def every_mutation(seed: int) -> bytes:
    """Each mutation of the list once, between good lines."""
    rng = random.Random(seed)
    goods = [_dump(e, rng) for e in _good_events(400, seed + 1)]
    variants = _mutations(goods[1], json.loads(goods[0])["play_id"])
    lines: list[bytes] = [goods[0].encode()]
    for i, variant in enumerate(variants):
        lines += [goods[2 + 2 * i].encode(), variant if isinstance(variant, bytes) else variant.encode()]
    return b"\n".join(lines)  # no final newline: the last line counts too


def _outcomes(validator: DayValidator, batches) -> tuple[pa.Table, pa.Table]:
    valid, rejected = [], []
    for batch in batches:
        v, r = validator.classify(batch)
        valid.append(v)
        rejected.append(r)
    validator.close()
    return pa.concat_tables(valid), pa.concat_tables(rejected)


def _assert_same_outcomes(folder: Path, text: bytes, chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    day_dir = folder / "plays" / str(DAY)
    day_dir.mkdir(parents=True)
    path = day_dir / "part-000.jsonl"
    path.write_bytes(text)
    monkeypatch.setattr(landing_source, "JSONL_CHUNK_BYTES", chunk_bytes)

    fast = DayValidator(PLAYS_SCHEMA, DAY)
    batches = [b for b in landing_events(folder, DAY) if not isinstance(b, SourceFile)]
    fast_valid, fast_rejected = _outcomes(fast, batches)
    reference = LineByLineValidator(PLAYS_SCHEMA, DAY)
    ref_valid, ref_rejected = _outcomes(reference, reference_lines(path, str(path), chunk_bytes))

    assert fast.totals.seen == reference.totals.seen == ref_valid.num_rows + ref_rejected.num_rows
    assert fast.totals.rejected_by_reason == reference.totals.rejected_by_reason
    assert fast_valid.equals(ref_valid)
    fast_rows = {r["source_line"]: r for r in fast_rejected.to_pylist()}
    ref_rows = {r["source_line"]: r for r in ref_rejected.to_pylist()}
    for line in sorted(set(fast_rows) | set(ref_rows)):
        assert fast_rows.get(line) == ref_rows.get(line), f"line {line}"
    assert fast_rejected.equals(ref_rejected)


def test_every_kind_of_line_is_decided_as_the_line_by_line_path_decides_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = every_mutation(seed=3)

    _assert_same_outcomes(tmp_path, text, 1 << 20, monkeypatch)

    assert text.count(b"\n") > 190  # the list really was written


@pytest.mark.parametrize(
    ("seed", "bad_share", "chunk_bytes"),
    [(1, 0.002, 1 << 20), (2, 0.03, 64 * 1024), (4, 0.3, 16 * 1024), (5, 0.0, 8 * 1024)],
)
def test_a_generated_corpus_is_decided_line_for_line_as_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int, bad_share: float, chunk_bytes: int
) -> None:
    _assert_same_outcomes(tmp_path, corpus(seed, 6_000, bad_share), chunk_bytes, monkeypatch)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1 << 20])
def test_chunks_hold_whole_lines_and_split_them_as_readlines_does(chunk_bytes: int) -> None:
    text = every_mutation(seed=9)
    pieces = list(read_text_chunks(io.BytesIO(text), chunk_bytes, max_lines=50, max_line_bytes=MAX_LINE_BYTES))

    assert b"".join(p for p, _ in pieces) == text
    assert all(bytes(p).count(b"\n") <= 50 for p, _ in pieces)
    split = [split_lines(p, first) for p, first in pieces]
    lines = [line for s in split for line in s[0].to_pylist()]
    numbers = [n for s in split for n in s[1].to_pylist()]
    reference = list(reference_lines_of(text))
    assert list(zip(numbers, lines, strict=True)) == [(n, line) for n, line, _ in reference]


def reference_lines_of(text: bytes) -> Iterator[tuple[int, str, bool]]:
    for number, raw in enumerate(io.BytesIO(text).readlines(), start=1):
        try:
            line, bad = raw.decode("utf-8").strip(), False
        except UnicodeDecodeError:
            line, bad = raw.decode("utf-8", errors="backslashreplace").strip(), True
        if line:
            yield number, line, bad


def _row_by_row(validator: DayValidator, rows: pa.Table) -> pa.Table:
    """Columns typed by DuckDB row by row, the path a Parquet file whose types need reading takes."""
    rel = rows.append_column("_source_line", pa.nulls(rows.num_rows, pa.int64()))
    out = validator._typed_via_sql(rel, _typed_from_arrow(validator.fields, set(rows.column_names)))
    return out.select(PLAYS_SCHEMA.as_arrow().names).cast(PLAYS_SCHEMA.as_arrow())


def test_parquet_columns_of_wider_or_zoned_types_pass_in_arrow_with_the_same_values() -> None:
    rows = synthetic_batch(DAY, 2_000)
    rows = rows.set_column(4, "title", rows["title"].dictionary_encode())
    rows = rows.set_column(5, "played_at", rows["played_at"].cast(pa.timestamp("ns", "Europe/Paris")))
    rows = rows.set_column(6, "duration_seconds", rows["duration_seconds"].cast(pa.int64()))
    validator = DayValidator(PLAYS_SCHEMA, DAY)

    typed, errors, _ = validator._typed(ArrowRows(rows, "day.parquet"))
    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(ArrowRows(rows, "day.parquet"))

    assert errors is None  # no row went through DuckDB
    assert typed.cast(PLAYS_SCHEMA.as_arrow()).equals(_row_by_row(validator, rows))
    assert (valid.num_rows, rejected.num_rows) == (2_000, 0)


def test_a_parquet_value_that_does_not_fit_is_typed_row_by_row_with_its_reason() -> None:
    rows = synthetic_batch(DAY, 10)
    durations = pa.array([2**40] + rows["duration_seconds"].to_pylist()[1:], pa.int64())
    rows = rows.set_column(6, "duration_seconds", durations)

    valid, rejected = DayValidator(PLAYS_SCHEMA, DAY).classify(ArrowRows(rows, "day.parquet"))

    assert valid.num_rows == 9
    assert rejected.column("reason").to_pylist() == [
        f"wrong type for duration_seconds: expected a 32-bit integer, got {2**40}"
    ]
