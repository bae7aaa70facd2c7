"""What every play-event source yields: raw batches of one UTC day, not yet validated.

Strings are Arrow ``large_string``, the type PyIceberg writes, so clean batches need no conversion.
A source never yields more than ``BATCH_ROWS`` events at a time; validation (``validation.py``)
turns the batches into typed rows or quarantined rejects. The sources are ``synthetic_source.py``
and ``landing_source.py``; ``landing_writer.py`` drops files into a landing zone as the app does.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

BATCH_ROWS = 250_000


@dataclass(frozen=True)
class JsonLines:
    """Lines of a JSON Lines file as received: nothing parsed yet, so a malformed line is kept verbatim."""

    lines: pa.Array  # string
    line_numbers: pa.Array  # int64, 1-based
    source_file: str
    # bool per line: its bytes were not valid UTF-8 (the line then holds them as \xNN escapes, never U+FFFD)
    invalid_utf8: pa.Array | None = None


@dataclass(frozen=True)
class ArrowRows:
    """Columnar events (synthetic, or a Parquet file) whose columns may still hold wrong types."""

    rows: pa.Table
    source_file: str


@dataclass(frozen=True)
class UnreadableFile:
    """A landing file that could not be read; it fails the day (or, opted in, is skipped) and is quarantined.

    Rows a file yielded before it broke are already in the batches before this one: a day that reads
    an unreadable file fails as a whole unless the run opts in to skipping such files.
    """

    source_file: str
    error: str


RawBatch = JsonLines | ArrowRows | UnreadableFile
