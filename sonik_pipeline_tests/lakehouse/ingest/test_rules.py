"""The rules of a valid play, each written once: ingest's Arrow masks and the checks' SQL read them alike."""

import datetime as dt

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from sonik_pipeline.lakehouse.ingest.rules import DURATION_IN_RANGE, PLAY_RULES, PLAYED_AT_IN_DAY, REQUIRED_FIELDS
from sonik_pipeline.lakehouse.ingest.validation import reason_group
from sonik_pipeline.lakehouse.tables.definitions import PLAYS_SCHEMA

DAY = dt.date(2026, 4, 20)


def _in_arrow(rule, rows: pa.Table) -> list[bool]:
    """Whether each row breaks ``rule``, as ingest tests it (on any of the fields it looks at)."""
    broken = pa.array([False] * rows.num_rows)
    for failing in rule.test.failing(rows, PLAYS_SCHEMA.fields, DAY):
        broken = pc.or_(broken, pc.fill_null(failing.mask, False))
    return broken.to_pylist()


def _in_sql(rule, rows: pa.Table) -> list[bool]:
    """Whether each row breaks ``rule``, as the checks count it on committed rows."""
    predicate = rule.test.sql(PLAYS_SCHEMA.fields)
    with duckdb.connect() as con:
        con.register("plays", rows)
        return [broken for (broken,) in con.execute(f"SELECT coalesce({predicate}, false) FROM plays").fetchall()]


def test_a_duration_breaks_the_range_rule_alike_in_arrow_and_in_sql() -> None:
    rows = pa.table({"duration_seconds": pa.array([-1, 0, 1, 86_399, 86_400, 86_401, None], pa.int32())})

    assert _in_arrow(DURATION_IN_RANGE, rows) == _in_sql(DURATION_IN_RANGE, rows)
    assert _in_arrow(DURATION_IN_RANGE, rows) == [True, False, False, False, False, True, False]


def test_a_missing_required_field_breaks_the_rule_alike_in_arrow_and_in_sql() -> None:
    good = {
        "play_id": "p",
        "user_id": 1,
        "track_id": 2,
        "artist": "a",
        "title": "t",
        "played_at": dt.datetime(2026, 4, 20),
    }
    rows = pa.Table.from_pylist(
        [good, {**good, "artist": None}, {**good, "played_at": None}, {**good, "play_id": None, "title": None}]
    )

    assert _in_arrow(REQUIRED_FIELDS, rows) == _in_sql(REQUIRED_FIELDS, rows) == [False, True, True, True]


def test_a_data_file_leaves_its_day_when_either_bound_does() -> None:
    bounds = {
        "inside": [dt.datetime(2026, 4, 20), dt.datetime(2026, 4, 20, 23, 59, 59, 999_999)],
        "before": [dt.datetime(2026, 4, 19, 23, 59, 59), dt.datetime(2026, 4, 20, 12)],
        "after": [dt.datetime(2026, 4, 20, 12), dt.datetime(2026, 4, 21)],
    }

    outside = {
        name: pc.any(PLAYED_AT_IN_DAY.test.mask(pa.array(values, pa.timestamp("us")), DAY)).as_py()
        for name, values in bounds.items()
    }

    assert outside == {"inside": False, "before": True, "after": True}


def test_every_rules_reason_is_the_group_the_quarantine_counts_it_by() -> None:
    # A reject's reason is the rule's, then ": " and the value it quotes; what comes before is its group.
    for rule in PLAY_RULES:
        reason = rule.reason_for("title", DAY)
        assert reason_group(f"{reason}: a value") == reason, rule.name


def test_every_rule_has_its_own_name_and_reason() -> None:
    assert len({rule.name for rule in PLAY_RULES}) == len({rule.reason for rule in PLAY_RULES}) == len(PLAY_RULES)
