import datetime as dt
from pathlib import Path

import pytest
from pyiceberg.io import ARROW_FILE_IO, SCHEMA_TO_FILE_IO

from sonik_pipeline.settings import DEFAULT_EVENTS_PER_DAY, OBJECT_STORE_SCHEMES, Settings, SettingsError

TODAY = dt.date(2026, 5, 1)  # the clock, fixed: SONIK_START_DATE is checked against it


def test_defaults_follow_the_tutorial_layout_under_sonik_home(tmp_path: Path) -> None:
    settings = Settings.from_env({}, cwd=tmp_path)

    assert settings.home == tmp_path / "lakehouse"
    assert settings.catalog_uri == f"sqlite:///{tmp_path}/lakehouse/catalog.db"
    assert settings.warehouse == f"file://{tmp_path}/lakehouse/warehouse"
    assert settings.source == "synthetic"
    assert settings.events_per_day == DEFAULT_EVENTS_PER_DAY


def test_relative_sonik_home_is_made_absolute(tmp_path: Path) -> None:
    settings = Settings.from_env({"SONIK_HOME": "data/lh"}, cwd=tmp_path)

    assert settings.home == tmp_path / "data" / "lh"
    assert settings.home.is_absolute()


def test_production_uris_override_without_code_changes(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {
            "SONIK_CATALOG_URI": "postgresql+psycopg://sonik@db:5432/catalog",
            "SONIK_WAREHOUSE": "s3://sonik-lake/warehouse",
            "SONIK_SOURCE": "landing",
            "SONIK_LANDING_DIR": "/mnt/landing",
        },
        cwd=tmp_path,
    )

    assert settings.catalog_uri == "postgresql+psycopg://sonik@db:5432/catalog"
    assert settings.warehouse == "s3://sonik-lake/warehouse"
    assert settings.source == "landing"
    assert settings.landing_dir == "/mnt/landing"


def test_a_landing_zone_may_be_a_relative_folder_or_an_object_store_uri(tmp_path: Path) -> None:
    relative = Settings.from_env({"SONIK_LANDING_DIR": "drops"}, cwd=tmp_path)
    remote = Settings.from_env({"SONIK_LANDING_DIR": "s3://sonik-landing/app"}, cwd=tmp_path)
    default = Settings.from_env({"SONIK_HOME": "lh"}, cwd=tmp_path)

    assert relative.landing_dir == str(tmp_path.resolve() / "drops")
    assert remote.landing_dir == "s3://sonik-landing/app"
    assert default.landing_dir == str(tmp_path.resolve() / "lh" / "landing")


def test_unknown_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^SONIK_SOURCE='kafka': expected one of synthetic, landing$"):
        Settings.from_env({"SONIK_SOURCE": "kafka"}, cwd=tmp_path)


def _problems(env: dict[str, str], tmp_path: Path) -> list[str]:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env, cwd=tmp_path, today=TODAY)
    return str(raised.value).splitlines()


def test_every_bad_variable_is_one_line_naming_it_its_value_and_what_is_expected(tmp_path: Path) -> None:
    env = {
        "SONIK_HOME": "s3://bucket/home",
        "SONIK_CATALOG_URI": "garbage://x",
        "SONIK_WAREHOUSE": "ftp://host/warehouse",
        "SONIK_SOURCE": "kafka",
        "SONIK_LANDING_DIR": "s3://",
        "SONIK_EVENTS_PER_DAY": "abc",
        "SONIK_START_DATE": "2099-01-01",
    }

    problems = _problems(env, tmp_path)

    assert [p.split(": expected ", 1)[0] for p in problems] == [f"{name}={value!r}" for name, value in env.items()]
    assert problems[5] == "SONIK_EVENTS_PER_DAY='abc': expected a positive whole number of events per day, e.g. 50000"
    assert problems[6] == (
        "SONIK_START_DATE='2099-01-01': expected a day before today (2026-05-01 UTC), "
        "so that there is a complete day to ingest"
    )
    assert "sqlite:///path/to/catalog.db, postgresql+psycopg://" in problems[1]
    assert "s3://bucket/path" in problems[2] and "expected s3://BUCKET/path" in problems[4]


@pytest.mark.parametrize(
    ("text", "events"), [("50000", 50_000), ("1_000_000", 1_000_000), (" 7 ", 7), ("", DEFAULT_EVENTS_PER_DAY)]
)
def test_events_per_day_is_a_positive_whole_number_underscores_allowed(tmp_path: Path, text: str, events: int) -> None:
    assert Settings.from_env({"SONIK_EVENTS_PER_DAY": text}, cwd=tmp_path, today=TODAY).events_per_day == events


@pytest.mark.parametrize("text", ["abc", "-5", "0", "5.0", "1e6", "1,000", "1__0", "_1"])
def test_events_per_day_that_is_not_a_positive_whole_number_is_refused(tmp_path: Path, text: str) -> None:
    assert _problems({"SONIK_EVENTS_PER_DAY": text}, tmp_path) == [
        f"SONIK_EVENTS_PER_DAY={text!r}: expected a positive whole number of events per day, e.g. 50000"
    ]


def test_start_date_must_leave_a_complete_utc_day(tmp_path: Path) -> None:
    yesterday = Settings.from_env({"SONIK_START_DATE": "2026-04-30"}, cwd=tmp_path, today=TODAY)

    assert yesterday.start_date == "2026-04-30"
    assert _problems({"SONIK_START_DATE": "2026-05-01"}, tmp_path)[0].startswith(
        "SONIK_START_DATE='2026-05-01': expected a day before today (2026-05-01 UTC)"
    )
    for text in ("20250101", "2025-02-30", "01/02/2025", "2025-01-01T00:00"):
        assert _problems({"SONIK_START_DATE": text}, tmp_path) == [
            f"SONIK_START_DATE={text!r}: expected a date as YYYY-MM-DD, e.g. 2025-01-01"
        ]


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:///relative/catalog.db",
        "sqlite:////abs/catalog.db",
        "postgresql://sonik@db/catalog",
        "postgresql+psycopg://sonik:pw@db:5432/catalog",
        "postgresql+psycopg2://sonik@db/catalog",
        "https://rest.example.com/api/catalog",
        "http://127.0.0.1:8181",
    ],
)
def test_catalog_uris_pyiceberg_can_open_are_accepted(tmp_path: Path, uri: str) -> None:
    assert Settings.from_env({"SONIK_CATALOG_URI": uri}, cwd=tmp_path, today=TODAY).catalog_uri == uri


@pytest.mark.parametrize(
    "uri", ["garbage://x", "postgres://sonik@db/catalog", "postgresql+mysql://db/c", "sqlite://", "https://", "x.db"]
)
def test_other_catalog_uris_are_refused(tmp_path: Path, uri: str) -> None:
    [problem] = _problems({"SONIK_CATALOG_URI": uri}, tmp_path)

    assert problem.startswith(f"SONIK_CATALOG_URI={uri!r}: expected ")


def test_a_catalog_password_is_never_shown(tmp_path: Path) -> None:
    [problem] = _problems({"SONIK_CATALOG_URI": "postgres://sonik:hunter2@db:5432/catalog"}, tmp_path)

    assert problem.startswith("SONIK_CATALOG_URI='postgres://sonik:***@db:5432/catalog': expected an Iceberg catalog")
    assert "hunter2" not in problem


def test_a_warehouse_folder_becomes_a_file_uri_and_object_stores_stay(tmp_path: Path) -> None:
    def warehouse(text: str) -> str:
        return Settings.from_env({"SONIK_WAREHOUSE": text}, cwd=tmp_path, today=TODAY).warehouse

    assert warehouse("wh") == (tmp_path / "wh").as_uri()
    assert warehouse("file://lakehouse/wh") == (tmp_path / "lakehouse" / "wh").as_uri()  # as PyIceberg reads it
    assert warehouse(f"file://{tmp_path}/wh") == (tmp_path / "wh").as_uri()
    assert warehouse("s3a://bucket/warehouse") == "s3a://bucket/warehouse"
    assert warehouse("gs://bucket") == "gs://bucket"


def test_object_store_schemes_are_the_ones_pyiceberg_opens_with_pyarrow() -> None:
    """Contract: a warehouse we accept is one PyIceberg routes to PyArrowFileIO (as DuckDB-readable Parquet)."""
    assert set(OBJECT_STORE_SCHEMES) == {s for s, ios in SCHEMA_TO_FILE_IO.items() if ARROW_FILE_IO in ios} - {"file"}


@pytest.mark.parametrize("value", ["2GB", "512MB", "1.5 GiB", "300mb"])
def test_duckdbs_memory_limit_is_an_amount_of_memory(value: str) -> None:
    assert Settings.from_env({"SONIK_DUCKDB_MEMORY_LIMIT": value}, today=TODAY).duckdb_memory_limit == value


def test_a_memory_limit_that_is_not_an_amount_is_named() -> None:
    with pytest.raises(SettingsError, match=r"SONIK_DUCKDB_MEMORY_LIMIT='lots': expected an amount of memory"):
        Settings.from_env({"SONIK_DUCKDB_MEMORY_LIMIT": "lots"}, today=TODAY)
