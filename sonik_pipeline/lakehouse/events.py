"""What every play-event source yields: raw batches of one UTC day, not yet validated.

Strings are Arrow ``large_string``, the type PyIceberg writes, so clean batches need no conversion.
A source never yields more than ``BATCH_ROWS`` events at a time (a landing source first yields a
``SourceFile`` naming each file it is about to read); validation (``validation.py``)
turns the batches into typed rows or quarantined rejects. The sources are ``synthetic_source.py``
and ``landing_source.py``; ``landing_writer.py`` drops files into a landing zone as the app does.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

# Small enough that the few batches in flight (read ahead, validated, written behind) stay a small part of
# an ingest's memory; big enough that each one's fixed cost is noise. A batch is also one Parquet row group.
BATCH_ROWS = 128 * 1024


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


@dataclass(frozen=True)
class SourceFile:
    """A landing file as listed before it is read (no rows): ingest records what each day read, so the
    landing sensor can tell a day whose files changed since (new, grown, rewritten or removed files)."""

    path: str  # as shown to people: a local path or a full URI (the batches' source_file)
    size: int
    modified_at: dt.datetime  # UTC, as the filesystem or object store reports it


RawBatch = JsonLines | ArrowRows | UnreadableFile | SourceFile
