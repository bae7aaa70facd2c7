from pathlib import Path

import pytest

from sonik_pipeline.settings import DEFAULT_EVENTS_PER_DAY, Settings


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
    with pytest.raises(ValueError, match="SONIK_SOURCE must be one of synthetic, landing"):
        Settings.from_env({"SONIK_SOURCE": "kafka"}, cwd=tmp_path)
