"""Every SONIK_* setting and its default, read and checked in one place at run time (never at import)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar, get_args
from urllib.parse import urlsplit

from sonik_pipeline.lakehouse.duckdb_io import DEFAULT_MEMORY_LIMIT
from sonik_pipeline.lakehouse.sources.landing_changes import WatchSettings
from sonik_pipeline.lakehouse.tables.catalog import catalog_uri_problem, redact

CATALOG_NAME = "sonik"
DEFAULT_START_DATE = "2025-01-01"
DEFAULT_EVENTS_PER_DAY = 50_000
# DuckDB's memory for a step's queries: the marts of a 10M-event day fit; a bigger day spills to disk.
DEFAULT_DUCKDB_MEMORY_LIMIT = DEFAULT_MEMORY_LIMIT
# Where play events come from; the one definition (PlaySource.kind and SONIK_SOURCE use it).
SourceKind = Literal["synthetic", "landing"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
# What does the heavy work (LakehouseEngine.kind and SONIK_ENGINE use it).
EngineKind = Literal["local", "spark"]
ENGINE_KINDS: tuple[str, ...] = get_args(EngineKind)
T = TypeVar("T")
# The object stores PyIceberg opens with PyArrowFileIO (pyiceberg.io.SCHEMA_TO_FILE_IO; a contract test pins it).
OBJECT_STORE_SCHEMES = ("s3", "s3a", "s3n", "gs", "oss", "abfs", "abfss", "wasb", "wasbs", "hdfs", "viewfs")

_WHOLE_NUMBER = re.compile(r"[0-9]+(_[0-9]+)*")  # 50000 or 1_000_000, as Python writes it
_MEMORY = re.compile(r"[0-9]+(\.[0-9]+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)  # as DuckDB reads it
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")  # what Dagster's daily partitions parse (%Y-%m-%d)


class SettingsError(ValueError):
    """Bad SONIK_* values: one line per variable, naming it, its value and what is expected."""


class _Invalid(Exception):  # internal: "what was expected", raised by one parser
    pass


def _whole_positive(text: str) -> int:
    text = text.strip()
    if not _WHOLE_NUMBER.fullmatch(text) or int(text) < 1:
        raise _Invalid("expected a positive whole number of events per day, e.g. 50000")
    return int(text)


def _whole(minimum: int, example: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        text = text.strip()
        if not _WHOLE_NUMBER.fullmatch(text) or int(text) < minimum:
            kind = "positive whole number" if minimum > 0 else "whole number"
            raise _Invalid(f"expected a {kind} of {example}")
        return int(text)

    return parse


def _hours(text: str) -> float:
    try:
        hours = float(text.strip())
    except ValueError:
        hours = 0.0
    if not hours > 0 or hours == float("inf"):
        raise _Invalid("expected a number of hours above 0, e.g. 6 or 0.5")
    return hours


def _memory(text: str) -> str:
    if not _MEMORY.fullmatch(text.strip()):
        raise _Invalid("expected an amount of memory as DuckDB takes it, e.g. 2GB or 512MB")
    return text.strip()


def _start_date(today: dt.date) -> Callable[[str], str]:
    def parse(text: str) -> str:
        text = text.strip()
        try:
            day = dt.date.fromisoformat(text) if _ISO_DAY.fullmatch(text) else None
        except ValueError:
            day = None
        if day is None:
            raise _Invalid(f"expected a date as YYYY-MM-DD, e.g. {DEFAULT_START_DATE}")
        if day >= today:
            # Daily partitions hold complete UTC days only: a start from today on leaves none to run.
            raise _Invalid(f"expected a day before today ({today} UTC), so that there is a complete day to ingest")
        return day.isoformat()

    return parse


def _source(text: str) -> str:
    if text not in SOURCE_KINDS:
        raise _Invalid(f"expected one of {', '.join(SOURCE_KINDS)}")
    return text


def _engine(text: str) -> str:
    if text not in ENGINE_KINDS:
        raise _Invalid(f"expected one of {', '.join(ENGINE_KINDS)}")
    return text


def _spark_remote(text: str) -> str:
    if text and not text.startswith("sc://"):
        raise _Invalid("expected a Spark Connect URL, e.g. sc://spark-connect.internal:15002")
    return text


def _names(text: str) -> tuple[str, ...]:
    """A comma-separated list (jar paths, Maven coordinates); empty: none."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _spark_conf(text: str) -> tuple[tuple[str, str], ...]:
    try:
        conf = json.loads(text or "{}")
    except ValueError:
        conf = None
    if not isinstance(conf, dict) or not all(isinstance(v, str | int | float | bool) for v in conf.values()):
        raise _Invalid('expected a JSON object of Spark settings, e.g. {"spark.executor.memory": "4g"}')
    return tuple((str(k), str(v).lower() if isinstance(v, bool) else str(v)) for k, v in conf.items())


def _home(base: Path) -> Callable[[str], Path]:
    def parse(text: str) -> Path:
        if "://" in text or "\x00" in text:
            raise _Invalid("expected a local folder (the embedded catalog and warehouse live there), e.g. ./lakehouse")
        return (base / text).resolve()

    return parse


def _storage(base: Path, what: str, as_uri: bool) -> Callable[[str], str]:
    """A folder (made absolute against ``base``), a ``file://`` URI or an object-store URI PyArrow reaches.

    Local places come back as a ``file://`` URI (``as_uri``, for the warehouse) or as a path.
    ``file://lakehouse/warehouse`` is read as PyIceberg reads it: a path relative to the working folder.
    """

    def parse(text: str) -> str:
        scheme, sep, _ = text.partition("://")
        scheme = scheme.lower()
        if "\x00" in text or (sep and scheme != "file" and scheme not in OBJECT_STORE_SCHEMES):
            raise _Invalid(
                f"expected {what}: a folder, a file:// URI or an object-store URI such as s3://bucket/path "
                f"(schemes: {', '.join(OBJECT_STORE_SCHEMES)})"
            )
        if sep and scheme != "file":
            if not urlsplit(text).netloc:
                raise _Invalid(f"expected {scheme}://BUCKET/path, with a bucket (or host) name")
            return text
        if sep:
            parts = urlsplit(text)
            text = f"{parts.netloc}{parts.path}"
        path = (base / text).resolve()
        return path.as_uri() if as_uri else str(path)

    return parse


def _catalog_uri(text: str) -> str:
    if problem := catalog_uri_problem(text):
        raise _Invalid(problem)
    return text


@dataclass(frozen=True)
class Settings:
    """Where the lakehouse lives and where play events come from.

    The embedded default keeps everything under ``SONIK_HOME`` (a SQLite catalog and a
    ``file://`` warehouse, as in the tutorial); production only changes these values.
    """

    home: Path
    catalog_uri: str
    warehouse: str  # a file:// URI (a folder given as a path is made one) or an object-store URI
    source: str
    landing_dir: str  # a folder (made absolute) or an object-store URI such as s3://bucket/landing
    events_per_day: int
    start_date: str
    duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT  # past it, DuckDB spills to its temporary folder
    # The landing sensor (SONIK_SOURCE=landing): how long a file must be left alone before its day is read,
    # how many recent days every tick lists, and how often every day folder is listed.
    landing_settle_seconds: int = WatchSettings.settle_seconds
    landing_recent_days: int = WatchSettings.recent_days
    landing_sweep_hours: float = WatchSettings.sweep_hours
    # The engine (SONIK_ENGINE) and, for Spark, where its session runs and what it loads.
    engine: str = "local"
    spark_master: str = "local[*]"
    spark_remote: str = ""  # a Spark Connect URL; set, it wins over spark_master
    spark_jars: tuple[str, ...] = ()  # empty: the offline Iceberg runtime and JDBC driver
    spark_packages: tuple[str, ...] = ()  # Maven coordinates, e.g. org.apache.iceberg:iceberg-spark-runtime-...
    spark_conf: tuple[tuple[str, str], ...] = ()  # more Spark settings, applied last

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, cwd: Path | None = None, today: dt.date | None = None
    ) -> Settings:
        """The settings from ``environ`` (default: the process environment); an empty value means the default.

        Every value is checked here, so a bad one fails when the code location loads (or ``sonik``
        starts) with a line naming it, rather than as a traceback inside a run. ``today`` (UTC; tests
        fix it) bounds ``SONIK_START_DATE``. Raises ``SettingsError`` listing every bad variable.
        """
        env = os.environ if environ is None else environ
        base = Path.cwd() if cwd is None else cwd
        today = today or dt.datetime.now(dt.UTC).date()
        problems: list[str] = []

        def read(name: str, parse: Callable[[str], T], default: str) -> T:
            text = env.get(name) or default
            try:
                return parse(text)
            except _Invalid as exc:
                shown = redact(text) if name == "SONIK_CATALOG_URI" else text
                problems.append(f"{name}={shown!r}: {exc}")
                return None  # type: ignore[return-value] - never used: the problems are raised below

        home = read("SONIK_HOME", _home(base), "lakehouse")
        root = home or base  # stands in for a bad SONIK_HOME only, when from_env raises anyway
        settings = cls(
            home=home,
            catalog_uri=read("SONIK_CATALOG_URI", _catalog_uri, f"sqlite:///{root / 'catalog.db'}"),
            warehouse=read("SONIK_WAREHOUSE", _storage(base, "a warehouse", as_uri=True), str(root / "warehouse")),
            source=read("SONIK_SOURCE", _source, "synthetic"),
            landing_dir=read(
                "SONIK_LANDING_DIR", _storage(base, "a landing zone", as_uri=False), str(root / "landing")
            ),
            events_per_day=read("SONIK_EVENTS_PER_DAY", _whole_positive, str(DEFAULT_EVENTS_PER_DAY)),
            start_date=read("SONIK_START_DATE", _start_date(today), DEFAULT_START_DATE),
            duckdb_memory_limit=read("SONIK_DUCKDB_MEMORY_LIMIT", _memory, DEFAULT_DUCKDB_MEMORY_LIMIT),
            landing_settle_seconds=read(
                "SONIK_LANDING_SETTLE_SECONDS", _whole(0, "seconds, e.g. 120"), str(WatchSettings.settle_seconds)
            ),
            landing_recent_days=read(
                "SONIK_LANDING_RECENT_DAYS", _whole(1, "days, e.g. 7"), str(WatchSettings.recent_days)
            ),
            landing_sweep_hours=read("SONIK_LANDING_SWEEP_HOURS", _hours, str(WatchSettings.sweep_hours)),
            engine=read("SONIK_ENGINE", _engine, "local"),
            spark_master=read("SONIK_SPARK_MASTER", str.strip, "local[*]"),
            spark_remote=read("SONIK_SPARK_REMOTE", _spark_remote, ""),
            spark_jars=read("SONIK_SPARK_JARS", _names, ""),
            spark_packages=read("SONIK_SPARK_PACKAGES", _names, ""),
            spark_conf=read("SONIK_SPARK_CONF", _spark_conf, ""),
        )
        if problems:
            raise SettingsError("\n".join(problems))
        return settings
