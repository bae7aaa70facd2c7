"""Reading JSON Lines text in chunks: whole lines, and a line over the bound read through, never held."""

from __future__ import annotations

import io

import pytest

from sonik_pipeline.lakehouse.sources.json_lines import (
    LONG_LINE_HEAD_BYTES,
    SkippedLine,
    TextBuffers,
    read_text_chunks,
    split_lines,
)

LIMIT = 100


def _text(*sizes: int, final_newline: bool = True) -> bytes:
    """Lines of the given sizes (bytes, without their newline), each starting with its number."""
    lines = [(f"{number}:".encode() + b"x" * size)[:size] for number, size in enumerate(sizes, start=1)]
    return b"\n".join(lines) + (b"\n" if final_newline else b"")


def _read(text: bytes, chunk_bytes: int, max_lines: int = 50, limit: int = LIMIT):
    """(kept lines as (number, text), skipped lines, the biggest buffer a chunk was read into)."""
    kept, skipped, biggest = [], [], 0
    for item in read_text_chunks(io.BytesIO(text), chunk_bytes, max_lines, limit):
        if isinstance(item, SkippedLine):
            skipped.append(item)
            continue
        chunk, first = item
        biggest = max(biggest, len(chunk.obj))
        lines, numbers, _ = split_lines(chunk, first)
        kept += zip(numbers.to_pylist(), lines.to_pylist(), strict=True)
    return kept, skipped, biggest


def _reference(text: bytes, limit: int = LIMIT):
    kept, skipped = [], []
    for number, raw in enumerate(io.BytesIO(text).readlines(), start=1):
        line = raw.removesuffix(b"\n")
        if len(line) > limit:
            skipped.append((number, len(line), line[:LONG_LINE_HEAD_BYTES]))
        elif line.strip():
            kept.append((number, line.decode().strip()))
    return kept, skipped


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1000, 1 << 20])
@pytest.mark.parametrize(
    ("sizes", "final_newline"),
    [
        ((20, 30, 101, 20, 40), True),  # one just over the bound, amid short lines
        ((5_000, 20, 20), True),  # the first line, longer than a chunk
        ((20, 20, 7_777), False),  # the last line, with no newline after it
        ((20, 100, 30), True),  # exactly at the bound: kept
        ((20, 250, 300, 20, 9_000, 9_000, 20), True),  # several, one after the other
    ],
)
def test_a_line_over_the_bound_is_skipped_with_its_number_size_and_first_bytes(
    sizes: tuple[int, ...], final_newline: bool, chunk_bytes: int
) -> None:
    text = _text(*sizes, final_newline=final_newline)

    kept, skipped, biggest = _read(text, chunk_bytes)

    expected_kept, expected_skipped = _reference(text)
    assert kept == expected_kept
    assert [(s.number, s.size, s.head) for s in skipped] == expected_skipped
    # never buffered whole: a chunk's buffer holds at most a chunk, after an unfinished line within the bound
    assert biggest <= chunk_bytes + LIMIT + 1


def test_a_huge_line_is_streamed_through_in_bounded_memory() -> None:
    # Given 8 MB on one line between two events, read in 64 KiB chunks with a 1 KiB bound
    text = b'{"n": 1}\n{"title": "' + b"x" * 8_000_000 + b'"}\n{"n": 3}\n'

    kept, skipped, biggest = _read(text, 64 * 1024, limit=1024)

    assert kept == [(1, '{"n": 1}'), (3, '{"n": 3}')]
    [line] = skipped
    assert (line.number, line.size) == (2, 8_000_013)
    assert line.head == (b'{"title": "' + b"x" * 8_000_000)[:LONG_LINE_HEAD_BYTES]
    assert biggest <= 64 * 1024 + 1024 + 1


def test_lines_past_max_lines_still_meet_the_bound() -> None:
    text = _text(*([10] * 7), 500, 10, final_newline=True)

    kept, skipped, _ = _read(text, 1 << 20, max_lines=3)

    assert [n for n, _ in kept] == [1, 2, 3, 4, 5, 6, 7, 9]
    assert [(s.number, s.size) for s in skipped] == [(8, 500)]


def test_buffers_are_used_again_only_once_no_chunk_holds_them():
    """Chunks read into shared buffers keep their text while held; released ones' buffers serve again."""
    text = _text(*([30] * 200))
    buffers = TextBuffers(keep=2)
    held = [bytes(c) for c, _ in read_text_chunks(io.BytesIO(text), 200, 50, LIMIT, buffers)]
    kept_views = list(read_text_chunks(io.BytesIO(text), 200, 50, LIMIT, buffers))  # every chunk held at once
    assert [bytes(c) for c, _ in kept_views] == held  # none was overwritten by a later read
    assert b"".join(held) == text
    owners = {id(c.obj) for c, _ in kept_views}
    assert len(owners) > 2  # the pool lent out what it had, then gave fresh buffers
    del kept_views
    pooled = {id(b) for b in buffers._buffers}
    again = {id(c.obj) for c, _ in read_text_chunks(io.BytesIO(text), 200, 50, LIMIT, buffers)}
    assert again <= pooled  # released: the pool's two buffers take turns, no fresh one is needed


def test_a_few_lines_past_the_line_cap_go_with_the_next_buffer_not_alone():
    """A buffer holding a few more lines than a batch may hold passes them on: no batch of a few lines."""
    text = _text(*([30] * 1_000))  # 31 bytes a line: a 3,255-byte buffer holds 105 lines, the cap is 100
    chunks = read_text_chunks(io.BytesIO(text), 31 * 105, max_lines=100, max_line_bytes=2 * LIMIT)
    sizes = [len(bytes(chunk).splitlines()) for chunk, _ in chunks]
    assert sizes == [100] * 10  # without passing them on: 100, 5, 100, 5, ...
