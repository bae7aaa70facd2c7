"""The landing-zone source: the files the app drops in ``<landing>/plays/YYYY-MM-DD/`` (*.jsonl, *.parquet).

The landing zone is a local folder or ``s3://bucket/prefix``, reached through PyArrow filesystems
with PyIceberg's ``s3.*`` settings, and read in bounded chunks so memory does not grow with the day.

Nothing is read from outside the landing zone. In a folder, a data file that is a symbolic link, or lies
in a day folder (or ``plays/``) that is one, is read only when it resolves to a file inside the landing
zone; one that leads out of it is still listed (so the day never silently shrinks) but is refused
unread, as an ``UnreadableFile`` naming the link and where it leads. Object storage has no links.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO

from sonik_pipeline.lakehouse.days import parse_day
from sonik_pipeline.lakehouse.sources.events import (
    BATCH_ROWS,
    MAX_LINE_BYTES,
    ArrowRows,
    JsonLines,
    LongLine,
    RawBatch,
    SourceFile,
    UnreadableFile,
)
from sonik_pipeline.lakehouse.sources.json_lines import SkippedLine, TextBuffers, read_text_chunks

# A JSON Lines file is read this much at a time (a batch: about 100,000 of the app's lines). Each batch
# being prepared holds its text and its parse, so the size sets memory: 24 MiB took a 10M-event day's
# peak from 567 to 516 MiB for 2-5% more time; 16 MiB saved 35 MiB more and cost 9% (2026-12-07).
JSONL_CHUNK_BYTES = 24 * 1024 * 1024
# A Parquet file's column chunks are read through a buffer of this size, not ahead whole: a row group of a
# million rows would otherwise hold all its compressed columns in memory while its batches are read
# (79 MB of Arrow memory at once for the benchmark's files, 38 MB read this way).
PARQUET_READ_BUFFER_BYTES = 1024 * 1024
# What the reader reads; anything else in a day's folder (*.tmp of an upload in progress, _SUCCESS,
# .DS_Store) is not a data file, so it is neither read nor watched.
DATA_SUFFIXES = (".jsonl", ".parquet")


class MissingLandingData(FileNotFoundError):
    """No landing files for the day: ingesting would wipe the day, so it is an error, not an empty day."""


class OutsideLandingZone(Exception):  # read as "the path is outside the landing zone"
    """A local landing path that resolves, through a symbolic link, to a place outside the landing zone."""


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

    @cached_property
    def _real_root(self) -> str:
        return os.path.realpath(self.root)

    def inside(self, path: str) -> str:
        """Where ``path`` really is, its links resolved; ``OutsideLandingZone`` when that leaves the zone.

        The reader opens the resolved path, so what was checked is what is read. Object storage has no
        links: its paths come back as they are.
        """
        if self.scheme != "file":
            return path
        real = os.path.realpath(path)
        if not Path(real).is_relative_to(self._real_root):
            raise OutsideLandingZone(
                f"link out of the landing zone: resolves to {real}, outside {self._real_root}; not read"
            )
        return real


def _source_file(zone: LandingZone, info: pafs.FileInfo) -> SourceFile:
    return SourceFile(zone.display(info.path), info.size, info.mtime.astimezone(dt.UTC))


def _is_data_file(info: pafs.FileInfo) -> bool:
    return info.type == pafs.FileType.File and info.path.endswith(DATA_SUFFIXES)


def list_day(zone: LandingZone, day: dt.date) -> list[tuple[str, SourceFile]]:
    """The day's data files, sorted: (path on the zone's filesystem, what the listing says of it)."""
    infos = zone.filesystem.get_file_info(pafs.FileSelector(zone.day_dir(day), allow_not_found=True))
    return sorted((i.path, _source_file(zone, i)) for i in infos if _is_data_file(i))


def list_all_days(zone: LandingZone) -> dict[dt.date, list[SourceFile]]:
    """Every day folder's data files: what ``list_day`` lists for each day, so the sensor sees what the reader reads.

    On object storage, one recursive listing (one paged LIST). In a folder, one listing per day folder: a
    recursive one would follow symbolic links below the day folders, even round a loop.
    """
    plays = f"{zone.root}/plays/"
    if zone.scheme == "file":
        folders = zone.filesystem.get_file_info(pafs.FileSelector(plays, allow_not_found=True))
        named = [_folder_day(f.base_name) for f in folders if f.type == pafs.FileType.Directory]
        listed = {day: [f for _, f in list_day(zone, day)] for day in sorted(d for d in named if d)}
        return {day: files for day, files in listed.items() if files}
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
        return parse_day(name) if len(name) == 10 else None
    except ValueError:
        return None


def landing_files(zone: LandingZone, day: dt.date) -> list[tuple[str, SourceFile]]:
    """The day's data files; none at all is an error (ingesting would wipe the day)."""
    if not (files := list_day(zone, day)):
        raise MissingLandingData(
            f"no landing files for {day} in {zone.display(zone.day_dir(day))} (expected *.jsonl or *.parquet)"
        )
    return files


def _read_jsonl(zone: LandingZone, path: str, source_file: str, buffers: TextBuffers | None) -> Iterator[RawBatch]:
    with zone.filesystem.open_input_stream(path) as f:
        for chunk in read_text_chunks(f, JSONL_CHUNK_BYTES, BATCH_ROWS, MAX_LINE_BYTES, buffers):
            if isinstance(chunk, SkippedLine):
                yield LongLine(source_file, chunk.number, chunk.size, chunk.head, MAX_LINE_BYTES)
            else:
                yield JsonLines.of_text(*chunk, source_file)


def _read_parquet(zone: LandingZone, path: str, source_file: str, buffers: TextBuffers | None) -> Iterator[RawBatch]:
    with zone.filesystem.open_input_file(path) as f:
        for batch in pq.ParquetFile(f, buffer_size=PARQUET_READ_BUFFER_BYTES, pre_buffer=False).iter_batches(
            batch_size=BATCH_ROWS
        ):
            # Prepared one at a time: a 10M-event day took as long (5.4-5.8 s) and its peak fell from
            # 535-567 MiB to 497-504 (2026-12-07), as reading and writing keep the cores busy meanwhile.
            yield ArrowRows(pa.Table.from_batches([batch]), source_file, prepare_ahead=False)


def read_landing_file(zone: LandingZone, path: str, buffers: TextBuffers | None = None) -> Iterator[RawBatch]:
    """One landing file in bounded batches; a file that cannot be read (cut short, corrupt, gone, no
    permission) or that leads out of the landing zone ends as an ``UnreadableFile`` with the reason,
    never as an exception or a silent gap. JSON Lines text is read into ``buffers`` when given."""
    kind = "JSON Lines" if path.endswith(".jsonl") else "Parquet"
    reader = _read_jsonl if path.endswith(".jsonl") else _read_parquet
    try:
        yield from reader(zone, zone.inside(path), zone.display(path), buffers)
    except OutsideLandingZone as exc:
        yield UnreadableFile(zone.display(path), str(exc))
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
    buffers = TextBuffers()  # the day's files take turns with the same few buffers
    for path, listed in landing_files(zone, day):
        yield listed
        yield from read_landing_file(zone, path, buffers)
