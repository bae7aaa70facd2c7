"""``sonik user``: a user's stats as a person or a program reads them, and its one-line usage errors."""

import datetime as dt
import json

import duckdb
import pytest
from pyiceberg.catalog import Catalog

from sonik_pipeline.cli import main
from sonik_pipeline.cli.common import UsageError
from sonik_pipeline.cli.user import stats_days
from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.marts.queries import USER_TRACK_DAYS
from sonik_pipeline.lakehouse.marts.run import run_marts
from sonik_pipeline.lakehouse.reads.user_stats import user_stats
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_events
from sonik_pipeline.settings import Settings

DAYS = [dt.date(2026, 12, 31), dt.date(2027, 1, 1)]


@pytest.fixture
def lakehouse(settings: Settings, catalog: Catalog, monkeypatch: pytest.MonkeyPatch) -> Catalog:
    monkeypatch.setenv("SONIK_HOME", str(settings.home))
    monkeypatch.setenv("SONIK_CATALOG_URI", settings.catalog_uri)
    for day in DAYS:
        ingest_day(catalog, day, synthetic_events(day, 2_000))
    list(run_marts(catalog, duckdb.connect(), [USER_TRACK_DAYS], DAYS))
    return catalog


def _busiest_user(catalog: Catalog) -> int:
    rows = catalog.load_table(USER_TRACK_DAYS.table.identifier).scan().to_arrow()
    counts = rows.group_by("user_id").aggregate([("plays", "sum")]).sort_by([("plays_sum", "descending")])
    return counts.column("user_id")[0].as_py()


def test_sonik_user_prints_the_stats_for_people_and_programs(lakehouse: Catalog, capsys) -> None:
    user_id = _busiest_user(lakehouse)
    expected = user_stats(lakehouse, user_id, dt.date(2027, 1, 1), dt.date(2027, 12, 31))

    assert main(["user", str(user_id), "--year", "2027", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    wanted = expected.as_dict()
    reads = printed.pop("reads")
    wanted.pop("reads")  # the same read, but warm: no footer read again
    assert printed == wanted
    assert (reads["files_planned"], reads["files_read"], reads["snapshot_id"]) == (1, 1, expected.reads.snapshot_id)
    assert (printed["first_day"], printed["last_day"], printed["active_days"]) == ("2027-01-01", "2027-12-31", 1)

    assert main(["user", str(user_id), "--top", "3"]) == 0
    text = capsys.readouterr().out
    everything = user_stats(lakehouse, user_id)
    assert text.startswith(
        f"user {user_id}, all days: {everything.plays:,} plays, {everything.minutes:,.2f} minutes, 2 active days\n"
    )
    assert "top artists" in text and "year in review" in text and "2026-12" in text and "2027-01" in text
    assert f"top artist: {everything.review.top_artist.artist} " in text
    assert "row groups in 1 of 1 planned files" in text  # the user's bucket

    assert main(["user", "999999999", "--start", "2027-01-01"]) == 0
    assert capsys.readouterr().out.startswith("user 999999999, 2027-01-01..last day: 0 plays, 0.00 minutes")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--year", "2027", "--start", "2027-01-01"], "give either --year or --start/--end, not both"),
        (["--start", "2027-02-01", "--end", "2027-01-01"], "--end 2027-01-01 is before --start 2027-02-01"),
    ],
)
def test_bad_ranges_are_one_line_errors(args: list[str], message: str, capsys) -> None:
    assert main(["user", "1", *args]) == 2
    assert capsys.readouterr().err == f"sonik: error: {message}\n"


def test_the_days_asked_for() -> None:
    assert stats_days(None, None, 2026) == (dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    assert stats_days(dt.date(2026, 3, 1), None, None) == (dt.date(2026, 3, 1), None)
    assert stats_days(None, None, None) == (None, None)
    with pytest.raises(UsageError, match="not a year"):
        stats_days(None, None, 20260)
