"""JSON Lines text to Arrow, fast where the text is ordinary and exact where it is not.

The landing path's contract is line by line: every line is kept or quarantined with its reason, its
raw text and its line number, judged by strict JSON (RFC 8259) and DuckDB's typing (``validation.py``).
Judging each line on its own is slow, so a chunk of a file is first parsed whole by PyArrow's JSON
reader, once per line. That parse is trusted only where it cannot differ from the line-by-line
judgement: the chunk is valid UTF-8, every line is one ``{...}`` object on its own (no blank line, no
two values on a line, no stray carriage return), the parse yields exactly one row a line, and a field
that the reader types loosely (a ``NaN`` or ``Inf`` it accepts, a byte-order mark) is flagged so its
line is judged exactly. Anything else (a mistyped field, a malformed line) makes the reader refuse, and
the lines are then split and parsed again in smaller groups, down to the few lines that are judged one
by one. Splitting keeps Python's semantics: ``readlines`` on ``\\n`` only, ``str.strip()``, and bytes
that are not UTF-8 kept as ``\\xNN`` escapes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

# A chunk of a file's text: whole lines, as read (a view of the buffer it was read into).
Text = bytes | memoryview
# A chunk parsed at once: a row a line, and the lines to judge one by one all the same.
ParsedText = tuple[pa.Table, np.ndarray]
# What ``str.strip()`` removes among ASCII characters; non-ASCII whitespace is left to Python itself.
ASCII_WHITESPACE = " \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"
# Bytes PyArrow's reader accepts where strict JSON does not (NaN, Inf, Infinity, -Inf) or reads
# differently from a line judged alone (a byte-order mark): a line holding one is judged exactly.
_LOOSE_BYTES = (b"NaN", b"Inf", b"\xef\xbb\xbf")
_LOOSE_PATTERN = "|".join(re.escape(needle.decode()) for needle in _LOOSE_BYTES)
_WINDOW_BYTES = 1 << 20
# What a line over the bound keeps of itself, for the quarantine to show what it was.
LONG_LINE_HEAD_BYTES = 4 * 1024
_ROW_IN_ERROR = re.compile(r"in row (\d+)")
# A chunk parsed whole is parsed in blocks of this size, one after the other.
SERIAL_BLOCK_BYTES = 4 * 1024 * 1024
# A group this small that the reader still refuses is judged line by line.
_SMALLEST_GROUP = 8


@dataclass(frozen=True)
class SkippedLine:
    """A line over the bound, read through without being held: all that is known of it is kept."""

    number: int  # 1-based
    size: int  # bytes, without its newline
    head: bytes  # its first ``LONG_LINE_HEAD_BYTES``


class TextBuffers:
    """Buffers for chunks of text, each handed out again once nothing holds a view of it any more.

    A fresh buffer for every chunk costs fresh pages from the system every time: 2.2 s of CPU to read
    the 2.5 GB of a 10M-event day, against 0.2 s to read it into buffers used again. Whether a chunk,
    its lines or a parse still use a buffer is its reference count, so reuse never overwrites text in use.
    """

    def __init__(self, keep: int = 8) -> None:
        self._keep = keep
        self._buffers: list[bytearray] = []

    def take(self, size: int, capacity: int = 0) -> memoryview:
        """A writable view of ``size`` bytes (not zeroed when used again) of a buffer of at least
        ``capacity``, so that it serves bigger requests later."""
        for buffer in self._buffers:
            # references: the list, this loop's name and getrefcount's argument; a view adds one
            if len(buffer) >= size and sys.getrefcount(buffer) == 3:
                return memoryview(buffer)[:size]
        buffer = bytearray(max(size, capacity))
        if len(self._buffers) < self._keep:
            self._buffers.append(buffer)
        return memoryview(buffer)[:size]


def read_text_chunks(
    stream: BinaryIO, chunk_bytes: int, max_lines: int, max_line_bytes: int, buffers: TextBuffers | None = None
) -> Iterator[tuple[memoryview, int] | SkippedLine]:
    """(text of whole lines, number of its first line): about ``chunk_bytes`` and at most ``max_lines``
    lines each; a line over ``max_line_bytes`` comes as a ``SkippedLine`` in its place instead.

    Each buffer is read straight from the file, after the unfinished line the last one left (at most
    ``max_line_bytes``), and its chunks are handed on as views of it: the text is copied once, from the
    file, and no buffer grows past ``chunk_bytes + max_line_bytes``. A longer line is read through in
    pieces and never held whole. Lines are measured one by one only in a buffer where a stretch of half
    the bound holds no newline, which a file of events never has: the common path adds no step a line.
    Buffers come from ``buffers`` (the chunks of one day's files share them) or are fresh. A buffer that
    holds a few more lines than ``max_lines`` passes them on to the next one rather than making a batch
    (and a Parquet row group) of them alone.
    """
    window = max(1, min(_WINDOW_BYTES, (max_line_bytes + 1) // 2))  # a longer line fills a whole window
    buffers = buffers or TextBuffers(keep=0)
    first_line, pending, ended, carried = 1, b"", False, 0
    while not ended or pending:
        # whole lines carried over take the place of new text, so every buffer holds about as many lines
        view = buffers.take(len(pending) + (0 if ended else chunk_bytes - carried), chunk_bytes + max_line_bytes)
        view[: len(pending)] = pending
        size = len(pending)
        while size < len(view) and (got := stream.readinto(view[size:])):
            size += got
        ended = ended or size < len(view)
        start, carried = 0, 0
        while start < size:
            cut, lines, suspect = _cut_after_lines(view[start:size], max_lines, ended, window)
            long = _first_long_line(view[start : start + cut], max_line_bytes) if suspect else None
            if long is not None:
                before, length = long
                if before:
                    yield view[start : start + before], first_line
                    first_line += int(np.count_nonzero(np.frombuffer(view[start : start + before], np.uint8) == 0x0A))
                at = start + before
                yield SkippedLine(first_line, length, bytes(view[at : at + min(length, LONG_LINE_HEAD_BYTES)]))
                first_line += 1
                start = at + length + 1  # past its newline
                continue
            if not cut:
                break
            yield view[start : start + cut], first_line
            first_line += lines
            start += cut
            if not ended and lines == max_lines and size - start <= min(max_line_bytes, cut // 4):
                carried = size - start  # the few lines left go with the next buffer's: no batch of a few
                break
        pending = bytes(view[start:size])  # the unfinished line, and the few whole ones before it
        if not ended and len(pending) > max_line_bytes:
            skipped, pending, ended = _read_through_line(stream, pending, first_line, min(chunk_bytes, max_line_bytes))
            yield skipped
            first_line += 1


def _read_through_line(
    stream: BinaryIO, begun: bytes, number: int, piece_bytes: int
) -> tuple[SkippedLine, bytes, bool]:
    """(the line ``begun`` starts, read to its end in pieces of ``piece_bytes``; what follows its newline,
    at most a piece; whether the file ended)."""
    head, size = begun[:LONG_LINE_HEAD_BYTES], len(begun)
    piece = bytearray(max(piece_bytes, 1))
    while got := stream.readinto(piece):
        end = piece.find(b"\n", 0, got)
        line_part = got if end < 0 else end
        if len(head) < LONG_LINE_HEAD_BYTES:
            head += bytes(piece[: min(line_part, LONG_LINE_HEAD_BYTES - len(head))])
        size += line_part
        if end >= 0:
            return SkippedLine(number, size, head), bytes(piece[end + 1 : got]), False
    return SkippedLine(number, size, head), b"", True


def _first_long_line(text: memoryview, max_line_bytes: int) -> tuple[int, int] | None:
    """(where the first line of ``text`` over ``max_line_bytes`` starts, its length), or None."""
    buffer = np.frombuffer(text, np.uint8)
    newlines = np.flatnonzero(buffer == 0x0A)
    starts = np.concatenate(([0], newlines + 1))
    ends = np.append(newlines, len(buffer))  # the last line may end with the text
    over = np.flatnonzero(ends - starts > max_line_bytes)
    return (int(starts[over[0]]), int(ends[over[0]] - starts[over[0]])) if len(over) else None


def _cut_after_lines(text: memoryview, max_lines: int, at_end: bool, window: int) -> tuple[int, int, bool]:
    """(where a chunk of ``text`` ends: after its last whole line or its ``max_lines``-th; its newlines;
    whether a whole window before that end holds no newline, so a line in the chunk may be over the bound).

    At the end of the file the last line needs no newline. Counted in windows: a temporary the size of
    the chunk would cost more in fresh pages than the comparing does.
    """
    buffer = np.frombuffer(text, np.uint8)
    lines = 0
    empty_window_end = 0  # where the first whole window without a newline ends
    for start in range(0, len(buffer), window):
        newline = buffer[start : start + window] == 0x0A
        count = int(np.count_nonzero(newline))
        if count == 0 and not empty_window_end and start + window <= len(buffer):
            empty_window_end = start + window
        if lines + count >= max_lines:
            cut = start + int(np.flatnonzero(newline)[max_lines - lines - 1]) + 1
            return cut, max_lines, 0 < empty_window_end <= cut
        lines += count
    if at_end:
        cut = len(buffer)
    else:
        newlines = np.flatnonzero(buffer[-_WINDOW_BYTES:] == 0x0A)  # the last line ends near the end
        if len(newlines):
            cut = len(buffer) - min(len(buffer), _WINDOW_BYTES) + int(newlines[-1]) + 1
        else:
            newlines = np.flatnonzero(buffer == 0x0A)
            cut = int(newlines[-1]) + 1 if len(newlines) else 0
    return cut, lines if cut else 0, 0 < empty_window_end <= cut


def split_lines(text: Text, first_line: int) -> tuple[pa.Array, pa.Array, pa.Array | None]:
    """(non-blank lines stripped, their 1-based numbers, per-line not-UTF-8 flags or None).

    The same lines as ``readlines()`` + ``decode("utf-8")`` + ``strip()``, without a Python step per line.
    """
    buffer = np.frombuffer(text, np.uint8)
    ends = np.flatnonzero(buffer == 0x0A) + 1
    if len(text) and text[-1] != 0x0A:
        ends = np.append(ends, len(text))
    offsets = np.concatenate(([0], ends)).astype(np.int64)
    raw = pa.Array.from_buffers(pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(text)])
    try:
        decoded = raw.cast(pa.large_string())
    except pa.ArrowInvalid:  # some line is not UTF-8: decode line by line, as the quarantine shows it
        return _split_lines_not_all_utf8(text, first_line)
    lines = _strip(decoded)
    numbers = pa.array(first_line + np.arange(len(ends), dtype=np.int64))
    nonblank = pc.greater(pc.binary_length(lines), 0)
    if nonblank.false_count:
        lines, numbers = lines.filter(nonblank), numbers.filter(nonblank)
    return lines, numbers, None


def _strip(lines: pa.Array) -> pa.Array:
    """``str.strip()`` of every line: ASCII whitespace in Arrow, the rare non-ASCII ends in Python."""
    stripped = pc.utf8_trim(lines, ASCII_WHITESPACE)
    if len(stripped) == 0:
        return stripped
    offsets = np.frombuffer(stripped.buffers()[1], np.int64)[stripped.offset : stripped.offset + len(stripped) + 1]
    data = np.frombuffer(stripped.buffers()[2], np.uint8) if stripped.buffers()[2] else np.zeros(0, np.uint8)
    nonempty = offsets[1:] > offsets[:-1]
    first = np.zeros(len(stripped), np.uint8)
    last = np.zeros(len(stripped), np.uint8)
    first[nonempty] = data[offsets[:-1][nonempty]]
    last[nonempty] = data[offsets[1:][nonempty] - 1]
    unicode_ends = np.flatnonzero((first >= 0x80) | (last >= 0x80))
    if len(unicode_ends) == 0:
        return stripped
    values = stripped.to_pylist()
    for index in unicode_ends:
        values[index] = values[index].strip()
    return pa.array(values, pa.large_string())


def _split_lines_not_all_utf8(text: Text, first_line: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    lines, numbers, invalid = [], [], []
    text = bytes(text)
    pieces = text.split(b"\n")
    if text.endswith(b"\n"):
        pieces.pop()
    for number, piece in enumerate(pieces, start=first_line):
        try:
            line, bad = piece.decode("utf-8").strip(), False
        except UnicodeDecodeError:  # kept as escapes of its raw bytes, for the quarantine
            line, bad = piece.decode("utf-8", errors="backslashreplace").strip(), True
        if line:
            lines.append(line)
            numbers.append(number)
            invalid.append(bad)
    return pa.array(lines, pa.large_string()), pa.array(numbers, pa.int64()), pa.array(invalid, pa.bool_())


# -- parsing ---------------------------------------------------------------------------------------


def _read(body: Text | pa.Buffer, schema: pa.Schema, unexpected_fields: str = "ignore", whole_block: bool = True):
    """Parse newline-delimited objects on this thread: ingest parses several chunks at once, one a thread
    (the reader's own threads took 1.6x the CPU for the same lines, leaving less for everything else).

    In one block, the row an error names is the object's index in ``body``; otherwise in blocks of a few
    MB, whose buffers the allocator reuses (a block the size of a chunk gets fresh pages every time).
    """
    block_size = max(len(body), 1 << 16) + 1 if whole_block else SERIAL_BLOCK_BYTES
    return pajson.read_json(
        pa.BufferReader(body),
        read_options=pajson.ReadOptions(use_threads=False, block_size=block_size),
        parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior=unexpected_fields),
        # The system's pool, not jemalloc (arrow_memory.py): a parse's buffers live for one chunk, and when
        # jemalloc gave pages back at once, fresh pages for every chunk cost 7 s of system time on a
        # 10M-event day. With its decay now (100 ms) both pools measure the same.
        memory_pool=pa.system_memory_pool(),
    )


def _is_valid_utf8(text: Text) -> bool:
    offsets = pa.py_buffer(np.array([0, len(text)], np.int64))
    try:
        pa.Array.from_buffers(pa.large_binary(), 1, [None, offsets, pa.py_buffer(text)]).cast(pa.large_string())
    except pa.ArrowInvalid:
        return False
    return True


def _lines_if_each_opens_an_object(text: Text) -> int | None:
    """How many lines ``text`` has, if every one starts with ``{`` (so none is blank, padded or a scalar)."""
    buffer = np.frombuffer(text, np.uint8)
    if len(buffer) == 0 or buffer[0] != 0x7B:
        return None
    inner_lines = opening = 0
    # In windows: temporaries the size of the chunk would cost more in fresh pages than in comparing.
    for start in range(0, len(buffer) - 1, _WINDOW_BYTES):
        stop = min(start + _WINDOW_BYTES, len(buffer) - 1)  # a final newline ends the last line
        breaks = buffer[start:stop] == 0x0A
        inner_lines += int(np.count_nonzero(breaks))
        opening += int(np.count_nonzero(breaks & (buffer[start + 1 : stop + 1] == 0x7B)))
    return inner_lines + 1 if opening == inner_lines else None


def loose_lines_of_text(text: Text) -> np.ndarray:
    """Indices of the lines of ``text`` holding a loosely read byte sequence (see ``_LOOSE_BYTES``)."""
    buffer = np.frombuffer(text, np.uint8)
    positions = []
    for needle in _LOOSE_BYTES:
        starts = np.flatnonzero(buffer[: len(buffer) - len(needle) + 1] == needle[0])
        for offset in range(1, len(needle)):
            starts = starts[buffer[starts + offset] == needle[offset]]
        positions.append(starts)
    found = np.concatenate(positions)
    if len(found) == 0:
        return np.zeros(0, np.int64)
    newlines = np.flatnonzero(buffer == 0x0A)
    return np.unique(np.searchsorted(newlines, found, side="left")).astype(np.int64)


def parse_text(text: Text, schema: pa.Schema) -> ParsedText | None:
    """(every line of ``text`` as one row, parsed at once; the lines to judge exactly all the same), or
    None when the lines must be taken one by one.

    A line's trailing whitespace, a carriage return, a second value or anything after the object makes
    the reader refuse or yield more rows than lines. A line of only the schema's fields cannot hold a
    loose value (the reader refuses NaN where a number or text belongs), so lines are searched for
    them only when the text has other fields too.
    """
    line_count = _lines_if_each_opens_an_object(text)
    if line_count is None or not _is_valid_utf8(text):
        return None
    loose = np.zeros(0, np.int64)
    try:
        table = _read(text, schema, unexpected_fields="error", whole_block=False)
    except pa.ArrowInvalid as exc:
        if "unexpected field" not in str(exc).lower():
            return None
        try:
            table = _read(text, schema, unexpected_fields="ignore", whole_block=False)
        except pa.ArrowInvalid:
            return None
        loose = loose_lines_of_text(text)
    return (table, loose) if table.num_rows == line_count else None


def loose_lines(lines: pa.Array) -> np.ndarray:
    """Indices of ``lines`` holding a loosely read byte sequence (see ``_LOOSE_BYTES``)."""
    return np.flatnonzero(pc.match_substring_regex(lines, _LOOSE_PATTERN).to_numpy(zero_copy_only=False))


def parse_lines(lines: pa.Array, schema: pa.Schema) -> tuple[pa.Table, np.ndarray]:
    """(rows the reader parsed, the indices of their lines) for lines that are each one ``{...}``.

    A group the reader refuses is split: at the row its error names, or in halves, down to groups of
    a few lines; the lines it still refuses are left out, for the caller to judge one by one.
    """
    lines = lines.cast(pa.large_string())  # 64-bit offsets, read below
    newline = pa.scalar("\n", lines.type)
    tables, indices = [], []
    pending = [(0, len(lines))]
    while pending:
        start, stop = pending.pop()
        if start >= stop:
            continue
        group = lines.slice(start, stop - start)
        joined = pc.binary_join_element_wise(group, newline, pa.scalar("", lines.type))
        size = int(np.frombuffer(joined.buffers()[1], np.int64)[len(joined)])
        try:
            table = _read(joined.buffers()[2].slice(0, size), schema)
            if table.num_rows != len(group):
                raise pa.ArrowInvalid("a line held more than one value")
        except pa.ArrowInvalid as exc:
            if stop - start <= _SMALLEST_GROUP:
                continue
            row = _ROW_IN_ERROR.search(str(exc))
            at = int(row.group(1)) if row else -1
            if 0 <= at < stop - start:
                # parsing stops at the first error: rows before it are kept, the named one is judged alone
                pending += [(start + at + 1, stop), (start, start + at)]
            else:
                middle = (start + stop) // 2
                pending += [(middle, stop), (start, middle)]
            continue
        tables.append(table)
        indices.append(np.arange(start, stop, dtype=np.int64))
    if not tables:
        return schema.empty_table(), np.zeros(0, np.int64)
    order = np.argsort([i[0] for i in indices], kind="stable")
    return pa.concat_tables([tables[i] for i in order]), np.concatenate([indices[i] for i in order])
