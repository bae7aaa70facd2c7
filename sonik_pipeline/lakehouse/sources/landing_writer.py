"""Writing landing-zone files as the app would: test data for the landing source (``sonik landing``), and
quarantined events replayed into the folder of their day (``sonik rejects replay``)."""

from __future__ import annotations

import datetime as dt
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from sonik_pipeline.lakehouse.duckdb_io.extensions import bounded_connection
from sonik_pipeline.lakehouse.sources.landing import LandingZone


def write_landing_day(
    landing_dir: str | Path,
    day: dt.date,
    events: pa.Table,
    files: int = 4,
    fmt: str = "jsonl",
    properties: Mapping[str, str] | None = None,
) -> list[str]:
    """Drop a day of events as the app would: ``files`` parts under ``<landing>/plays/<day>/``."""
    zone = LandingZone.at(landing_dir, properties)
    written = []
    per_file = -(-events.num_rows // files)
    con = bounded_connection()
    # Parts are written locally, then copied: one code path for a folder and for object storage.
    with tempfile.TemporaryDirectory(prefix="sonik-landing-") as staging:
        try:
            for i in range(files):
                part = events.slice(i * per_file, per_file)
                if part.num_rows == 0:
                    continue
                local = Path(staging) / f"part-{i:03d}.{fmt}"
                if fmt == "parquet":
                    pq.write_table(part, local)
                else:
                    con.register("part", part)
                    con.execute(
                        f"""COPY (SELECT * REPLACE (strftime(played_at, '%Y-%m-%dT%H:%M:%S.%fZ') AS played_at)
                            FROM part) TO '{local}' (FORMAT JSON)"""
                    )
                    con.unregister("part")
                written.append(f"{zone.day_dir(day)}/{local.name}")
        finally:
            con.close()
        zone.filesystem.create_dir(zone.day_dir(day), recursive=True)
        pafs.copy_files(
            staging,
            zone.day_dir(day),
            source_filesystem=pafs.LocalFileSystem(),
            destination_filesystem=zone.filesystem,
        )
    return [zone.display(path) for path in written]


@contextmanager
def atomic_landing_file(zone: LandingZone, day: dt.date, name: str) -> Iterator[pa.NativeFile]:
    """A stream to ``<landing>/plays/<day>/<name>`` that a reader only ever sees whole, replacing any earlier one.

    It is written as ``.<name>.tmp`` (a name the landing reader skips), then moved to ``name``: a rename
    on a folder, one server-side copy on object storage. On failure the temporary file is removed.
    """
    final = f"{zone.day_dir(day)}/{name}"
    temporary = f"{zone.day_dir(day)}/.{name}.tmp"
    zone.filesystem.create_dir(zone.day_dir(day), recursive=True)
    try:
        with zone.filesystem.open_output_stream(temporary) as out:
            yield out
        zone.filesystem.move(temporary, final)
    except BaseException:
        try:
            zone.filesystem.delete_file(temporary)
        except OSError:  # never written, or already gone: nothing to clean up
            pass
        raise
