"""The landing-zone source: the files the app drops in ``<landing>/plays/YYYY-MM-DD/`` (*.jsonl, *.parquet).

The landing zone is a local folder or ``s3://bucket/prefix``, reached through PyArrow filesystems
with PyIceberg's ``s3.*`` settings, and read in bounded chunks so memory does not grow with the day.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO

from sonik_pipeline.lakehouse.events import BATCH_ROWS, ArrowRows, JsonLines, RawBatch, SourceFile, UnreadableFile
from sonik_pipeline.lakehouse.json_lines import read_text_chunks

JSONL_CHUNK_BYTES = 32 * 1024 * 1024
# What the reader reads; anything else in a day's folder (*.tmp of an upload in progress, _SUCCESS,
# .DS_Store) is not a data file, so it is neither read nor watched.
DATA_SUFFIXES = (".jsonl", ".parquet")


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


def _source_file(zone: LandingZone, info: pafs.FileInfo) -> SourceFile:
    return SourceFile(zone.display(info.path), info.size, info.mtime.astimezone(dt.UTC))


def _is_data_file(info: pafs.FileInfo) -> bool:
    return info.type == pafs.FileType.File and info.path.endswith(DATA_SUFFIXES)


def list_day(zone: LandingZone, day: dt.date) -> list[tuple[str, SourceFile]]:
    """The day's data files, sorted: (path on the zone's filesystem, what the listing says of it)."""
    infos = zone.filesystem.get_file_info(pafs.FileSelector(zone.day_dir(day), allow_not_found=True))
    return sorted((i.path, _source_file(zone, i)) for i in infos if _is_data_file(i))


def list_all_days(zone: LandingZone) -> dict[dt.date, list[SourceFile]]:
    """Every day folder's data files, in one recursive listing (on object storage: one paged LIST)."""
    plays = f"{zone.root}/plays/"
    infos = zone.filesystem.get_file_info(pafs.FileSelector(plays, allow_not_found=True, recursive=True))
    days: dict[dt.date, list[SourceFile]] = {}
    for info in infos:
        folder, _, name = info.path.removeprefix(plays).partition("/")
        if _is_data_file(info) and "/" not in name and (day := _folder_day(folder)):  # what the reader reads
            days.setdefault(day, []).append(_source_file(zone, info))
    return {day: sorted(files, key=lambda f: f.path) for day, files in sorted(days.items())}


def _folder_day(name: str) -> dt.date | None:
    """The day a folder named YYYY-MM-DD holds, or None for any other name."""
    try:
        return dt.date.fromisoformat(name) if len(name) == 10 else None
    except ValueError:
        return None


def landing_files(zone: LandingZone, day: dt.date) -> list[tuple[str, SourceFile]]:
    """The day's data files; none at all is an error (ingesting would wipe the day)."""
    if not (files := list_day(zone, day)):
        raise MissingLandingData(
            f"no landing files for {day} in {zone.display(zone.day_dir(day))} (expected *.jsonl or *.parquet)"
        )
    return files


def _read_jsonl(zone: LandingZone, path: str) -> Iterator[RawBatch]:
    with zone.filesystem.open_input_stream(path) as f:
        for text, first_line in read_text_chunks(f, JSONL_CHUNK_BYTES, BATCH_ROWS):
            yield JsonLines.of_text(text, first_line, zone.display(path))


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
    """Every landing file of the day, read in bounded chunks (memory does not grow with the day).

    Each file is announced (``SourceFile``, as listed before reading it) ahead of its rows: what the day
    read is recorded from these, so a file that grows while it is read looks changed to the sensor.
    """
    zone = LandingZone.at(landing_dir, properties)
    for path, listed in landing_files(zone, day):
        yield listed
        yield from read_landing_file(zone, path)
