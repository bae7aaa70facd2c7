"""Every SONIK_* setting and its default, read in one place at run time (never at import)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CATALOG_NAME = "sonik"
DEFAULT_START_DATE = "2025-01-01"
DEFAULT_EVENTS_PER_DAY = 50_000
SOURCE_KINDS = ("synthetic", "landing")


def _location(value: str | None, base: Path) -> str | None:
    """A URI (s3://...) as given; a local path made absolute against ``base``."""
    if not value:
        return None
    return value if "://" in value else str((base / value).resolve())


@dataclass(frozen=True)
class Settings:
    """Where the lakehouse lives and where play events come from.

    The embedded default keeps everything under ``SONIK_HOME`` (a SQLite catalog and a
    ``file://`` warehouse, as in the tutorial); production only changes these values.
    """

    home: Path
    catalog_uri: str
    warehouse: str
    source: str
    landing_dir: str  # a folder (made absolute) or an object-store URI such as s3://bucket/landing
    events_per_day: int
    start_date: str

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> Settings:
        env = os.environ if environ is None else environ
        base = Path.cwd() if cwd is None else cwd
        home = (base / env.get("SONIK_HOME", "lakehouse")).resolve()
        source = env.get("SONIK_SOURCE", "synthetic")
        if source not in SOURCE_KINDS:
            raise ValueError(f"SONIK_SOURCE must be one of {', '.join(SOURCE_KINDS)}, got {source!r}")
        return cls(
            home=home,
            catalog_uri=env.get("SONIK_CATALOG_URI") or f"sqlite:///{home / 'catalog.db'}",
            warehouse=env.get("SONIK_WAREHOUSE") or (home / "warehouse").as_uri(),
            source=source,
            landing_dir=_location(env.get("SONIK_LANDING_DIR"), base) or str(home / "landing"),
            events_per_day=int(env.get("SONIK_EVENTS_PER_DAY", DEFAULT_EVENTS_PER_DAY)),
            start_date=env.get("SONIK_START_DATE", DEFAULT_START_DATE),
        )
