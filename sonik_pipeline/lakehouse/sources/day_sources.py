"""A source of days of play events, read whole in this process or in parts anywhere (a Spark executor).

The local engine reads a day as one stream of batches (``events``). An engine that spreads a day over many
processes asks for its *splits*: self-contained, picklable parts (a landing file, a synthetic batch) that
any process with the project installed reads on its own into the same raw batches, in the same order.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from sonik_pipeline.lakehouse.sources.events import BATCH_ROWS, ArrowRows, RawBatch, SourceFile
from sonik_pipeline.lakehouse.sources.landing import LandingZone, landing_events, landing_files, read_landing_file
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch, synthetic_events


class DaySplit(Protocol):
    """A part of one day's events that any process reads on its own."""

    day: dt.date

    @property
    def listed(self) -> SourceFile | None:
        """The landing file as listed before reading (what ingest records), or None for generated events."""
        ...

    @property
    def source_file(self) -> str:
        """The name its events carry as their ``source_file`` (known without reading them)."""
        ...

    def read(self) -> Iterator[RawBatch]:
        """The part's raw batches in order (never a ``SourceFile``: that is ``listed``)."""
        ...


class DaySource(Protocol):
    """Where days of play events come from."""

    def events(self, day: dt.date) -> Iterator[RawBatch]:
        """The day as one stream of batches, each landing file announced before its rows."""
        ...

    def splits(self, day: dt.date) -> list[DaySplit]:
        """The day in parts, in the order ``events`` reads them (so the first copy of an event is the same)."""
        ...


@dataclass(frozen=True)
class SyntheticSplit:
    day: dt.date
    events: int
    seed: int
    batch: int

    @property
    def listed(self) -> None:
        return None

    @property
    def source_file(self) -> str:
        return f"synthetic://plays/{self.day}/{self.batch}"

    def read(self) -> Iterator[RawBatch]:
        rows = synthetic_batch(self.day, self.events, self.seed, self.batch)
        yield ArrowRows(rows, source_file=self.source_file)


@dataclass(frozen=True)
class SyntheticDays:
    """Deterministic generated events: the same day and seed give the same events, batch by batch."""

    events_per_day: int
    seed: int = 0

    def events(self, day: dt.date) -> Iterator[RawBatch]:
        return synthetic_events(day, self.events_per_day, self.seed)

    def splits(self, day: dt.date) -> list[DaySplit]:
        return [
            SyntheticSplit(day, min(BATCH_ROWS, self.events_per_day - start), self.seed, batch)
            for batch, start in enumerate(range(0, self.events_per_day, BATCH_ROWS))
        ]


@dataclass(frozen=True)
class LandingFileSplit:
    """One landing file; it is opened where it is read, with the landing zone's own settings."""

    day: dt.date
    location: str
    properties: Mapping[str, str]
    path: str  # on the zone's filesystem
    source: SourceFile

    @property
    def listed(self) -> SourceFile:
        return self.source

    @property
    def source_file(self) -> str:
        return self.source.path

    def read(self) -> Iterator[RawBatch]:
        return read_landing_file(LandingZone.at(self.location, self.properties), self.path)


@dataclass(frozen=True)
class LandingDays:
    """The app's files in a landing zone (a folder or ``s3://bucket/prefix``)."""

    location: str
    properties: Mapping[str, str] = field(default_factory=dict)

    def events(self, day: dt.date) -> Iterator[RawBatch]:
        return landing_events(self.location, day, self.properties)

    def splits(self, day: dt.date) -> list[DaySplit]:
        """The day's files, sorted as ``events`` reads them; none at all raises ``MissingLandingData``."""
        zone = LandingZone.at(self.location, self.properties)
        return [
            LandingFileSplit(day, self.location, dict(self.properties), path, listed)
            for path, listed in landing_files(zone, day)
        ]
