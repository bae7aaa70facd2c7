"""What every play-event source yields: raw batches of one UTC day, not yet validated.

Strings are Arrow ``large_string``, the type PyIceberg writes, so clean batches need no conversion.
A source never yields more than ``BATCH_ROWS`` events at a time (a landing source first yields a
``SourceFile`` naming each file it is about to read) nor a line over ``MAX_LINE_BYTES`` (a ``LongLine``
instead); validation (``validation.py``) turns the batches into typed rows or quarantined rejects.
The sources are ``synthetic_source.py`` and ``landing_source.py``; ``landing_writer.py`` drops files
into a landing zone as the app does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from sonik_pipeline.lakehouse.sources.json_lines import ParsedText, Text, parse_text, split_lines

# Small enough that the few batches in flight (read ahead, validated, written behind) stay a small part of
# an ingest's memory; big enough that each one's fixed cost is noise. A batch is also one Parquet row group.
BATCH_ROWS = 128 * 1024
# The longest landing line read: 4,000 times an app's event (about 250 bytes), and small beside a chunk of
# text (24 MB), so a chunk's memory stays bounded whatever a file holds. A longer line is read through
# without being held, and quarantined by its number with its first bytes (``LongLine``).
MAX_LINE_BYTES = 1024 * 1024


class JsonLines:
    """Lines of a JSON Lines file as received: nothing parsed yet, so a malformed line is kept verbatim.

    Read from a file, it holds the chunk's text and splits it into lines only when asked (``lines``,
    ``line_numbers``, ``invalid_utf8``): a chunk that parses whole never needs its lines one by one.
    """

    def __init__(
        self,
        lines: pa.Array | None = None,
        line_numbers: pa.Array | None = None,
        source_file: str = "",
        invalid_utf8: pa.Array | None = None,
        *,
        text: Text | None = None,
        first_line: int = 1,
    ):
        if (lines is None) == (text is None):
            raise ValueError("JsonLines holds either lines (with their numbers) or the text of a chunk")
        self.source_file = source_file
        self.text = text  # the chunk's bytes, whole lines (None when built from lines)
        self.first_line = first_line
        self._lines = lines
        self._line_numbers = line_numbers
        self._invalid_utf8 = invalid_utf8
        self._parsed: dict[pa.Schema, ParsedText | None] = {}

    @classmethod
    def of_text(cls, text: Text, first_line: int, source_file: str) -> JsonLines:
        return cls(text=text, first_line=first_line, source_file=source_file)

    def parsed_whole(self, schema: pa.Schema) -> ParsedText | None:
        """The chunk parsed at once as ``schema`` (``json_lines.parse_text``), or None when it cannot be.

        Remembered, so a reader thread can parse it ahead while the previous chunk is validated.
        """
        if self.text is None:
            return None
        if schema not in self._parsed:
            self._parsed[schema] = parse_text(self.text, schema)
        return self._parsed[schema]

    def _split(self) -> None:
        if self._lines is None:
            self._lines, self._line_numbers, self._invalid_utf8 = split_lines(self.text, self.first_line)

    @property
    def lines(self) -> pa.Array:
        """string per non-blank line, stripped (bytes that are not UTF-8 as \\xNN escapes, never U+FFFD)"""
        self._split()
        return self._lines

    @property
    def line_numbers(self) -> pa.Array:
        """int64 per line, 1-based"""
        self._split()
        return self._line_numbers

    def numbers_of(self, rows: np.ndarray) -> pa.Array:
        """The 1-based line numbers of the lines at positions ``rows``, without splitting a chunk that parsed
        whole (every line of such a chunk is an object, none blank, so line k is ``first_line + k``)."""
        if self._lines is None and self.text is not None and any(self._parsed.values()):
            return pa.array(self.first_line + np.asarray(rows, dtype=np.int64), pa.int64())
        return self.line_numbers.take(pa.array(rows, pa.int64()))

    @property
    def invalid_utf8(self) -> pa.Array | None:
        """bool per line: its bytes were not valid UTF-8; None when every line was"""
        self._split()
        return self._invalid_utf8


@dataclass(frozen=True)
class ArrowRows:
    """Columnar events (synthetic, or a Parquet file) whose columns may still hold wrong types."""

    rows: pa.Table
    source_file: str
    # Whether preparing the next batch while this one is judged gains time (``run.prepared_ahead``): it
    # does for generated rows; for a Parquet file's, it gained none and held a batch more (``landing.py``).
    prepare_ahead: bool = True


@dataclass(frozen=True)
class UnreadableFile:
    """A landing file that could not be read; it fails the day (or, opted in, is skipped) and is quarantined.

    Rows a file yielded before it broke are already in the batches before this one: a day that reads
    an unreadable file fails as a whole unless the run opts in to skipping such files.
    """

    source_file: str
    error: str


@dataclass(frozen=True)
class LongLine:
    """A landing line over the line bound (``MAX_LINE_BYTES``): read through, never held whole; it is
    quarantined with its number and its first bytes, so the quarantine stays bounded too."""

    source_file: str
    line: int  # 1-based
    size: int  # bytes, without the newline
    head: bytes  # the first bytes of the line (``json_lines.LONG_LINE_HEAD_BYTES``)
    limit: int  # the bound it went over


@dataclass(frozen=True)
class SourceFile:
    """A landing file as listed before it is read (no rows): ingest records what each day read, so the
    landing sensor can tell a day whose files changed since (new, grown, rewritten or removed files)."""

    path: str  # as shown to people: a local path or a full URI (the batches' source_file)
    size: int
    modified_at: dt.datetime  # UTC, as the filesystem or object store reports it


RawBatch = JsonLines | ArrowRows | LongLine | UnreadableFile | SourceFile
