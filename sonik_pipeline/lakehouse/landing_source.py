"""The landing-zone source: the files the app drops in ``<landing>/plays/YYYY-MM-DD/`` (*.jsonl, *.parquet).

The landing zone is a local folder or ``s3://bucket/prefix``, reached through PyArrow filesystems
with PyIceberg's ``s3.*`` settings, and read in bounded chunks so memory does not grow with the day.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO

from sonik_pipeline.lakehouse.events import BATCH_ROWS, ArrowRows, JsonLines, RawBatch, UnreadableFile

JSONL_CHUNK_BYTES = 32 * 1024 * 1024


class MissingLandingData(FileNotFoundError):
    """No landing files for the day: ingesting would wipe the day, so it is an error, not an empty day."""


@dataclass(frozen=True)
class LandingZone:
    """A landing zone root on any filesystem PyArrow reaches: a local folder or ``s3://bucket/prefix``.

    Object storage is reached with PyIceberg's ``s3.*`` settings (the catalog's properties), so the
    landing bucket needs no second set of credentials.
    """

    filesystem: pafs.FileSystem
    scheme: str
    root: str

    @classmethod
    def at(cls, location: str | Path, properties: Mapping[str, str] | None = None) -> LandingZone:
        scheme, netloc, path = PyArrowFileIO.parse_location(str(location))
        return cls(PyArrowFileIO(dict(properties or {})).fs_by_scheme(scheme, netloc), scheme, path.rstrip("/"))

    def day_dir(self, day: dt.date) -> str:
        return f"{self.root}/plays/{day.isoformat()}"

    def display(self, path: str) -> str:
        """How a file is named to people (and in quarantine rows): a local path, or a full URI."""
        return path if self.scheme == "file" else f"{self.scheme}://{path}"


def landing_files(zone: LandingZone, day: dt.date) -> list[str]:
    day_dir = zone.day_dir(day)
    infos = zone.filesystem.get_file_info(pafs.FileSelector(day_dir, allow_not_found=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith((".jsonl", ".parquet")))
    if not files:
        raise MissingLandingData(
            f"no landing files for {day} in {zone.display(day_dir)} (expected *.jsonl or *.parquet)"
        )
    return files


def _read_jsonl(zone: LandingZone, path: str) -> Iterator[RawBatch]:
    line_no = 0
    with io.BufferedReader(zone.filesystem.open_input_stream(path), buffer_size=1 << 20) as f:
        while chunk := f.readlines(JSONL_CHUNK_BYTES):
            lines, numbers, invalid = [], [], []
            for raw in chunk:
                line_no += 1
                try:
                    text, bad = raw.decode("utf-8").strip(), False
                except UnicodeDecodeError:  # kept as escapes of its raw bytes, for the quarantine
                    text, bad = raw.decode("utf-8", errors="backslashreplace").strip(), True
                if text:
                    lines.append(text)
                    numbers.append(line_no)
                    invalid.append(bad)
            if lines:
                yield JsonLines(
                    pa.array(lines, pa.string()),
                    pa.array(numbers, pa.int64()),
                    zone.display(path),
                    pa.array(invalid, pa.bool_()) if any(invalid) else None,
                )


def _read_parquet(zone: LandingZone, path: str) -> Iterator[RawBatch]:
    with zone.filesystem.open_input_file(path) as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=BATCH_ROWS):
            yield ArrowRows(pa.Table.from_batches([batch]), zone.display(path))


def read_landing_file(zone: LandingZone, path: str) -> Iterator[RawBatch]:
    """One landing file in bounded batches; a file that cannot be read (cut short, corrupt, gone, no
    permission) ends as an ``UnreadableFile`` with the reason, never as an exception or a silent gap."""
    kind = "JSON Lines" if path.endswith(".jsonl") else "Parquet"
    reader = _read_jsonl if path.endswith(".jsonl") else _read_parquet
    try:
        yield from reader(zone, path)
    except (OSError, pa.ArrowException) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        yield UnreadableFile(zone.display(path), f"unreadable {kind} file: {first_line}")


def landing_events(
    landing_dir: str | Path, day: dt.date, properties: Mapping[str, str] | None = None
) -> Iterator[RawBatch]:
    """Every landing file of the day, read in bounded chunks (memory does not grow with the day)."""
    zone = LandingZone.at(landing_dir, properties)
    for path in landing_files(zone, day):
        yield from read_landing_file(zone, path)
