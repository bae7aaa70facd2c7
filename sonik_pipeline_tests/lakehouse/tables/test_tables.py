from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform
from pyiceberg.types import IntegerType, LongType, NestedField, StringType, TimestampType

from sonik_pipeline.lakehouse.tables.definitions import PLAYS, SchemaEvolutionError, TableDef, ensure_table


def _data_files(table) -> set[str]:
    return {task.file.file_path for task in table.scan().plan_files()}


def _with_field(table_def: TableDef, new_field: NestedField) -> TableDef:
    return TableDef(table_def.namespace, table_def.name, Schema(*table_def.schema.fields, new_field), table_def.spec)


def test_plays_is_created_with_the_tutorial_schema_and_day_partitioning(catalog: Catalog) -> None:
    table, changes = ensure_table(catalog, PLAYS)

    expected = [
        (1, "play_id", StringType(), True),
        (2, "user_id", LongType(), True),
        (3, "track_id", LongType(), True),
        (4, "artist", StringType(), True),
        (5, "title", StringType(), True),
        (6, "played_at", TimestampType(), True),
        (7, "duration_seconds", IntegerType(), False),
        (8, "country", StringType(), False),
        (9, "device", StringType(), False),
        (10, "subscription_tier", StringType(), False),  # the tutorial's schema-evolution step
    ]
    assert [(f.field_id, f.name, f.field_type, f.required) for f in table.schema().fields] == expected
    assert table.spec() == PartitionSpec(
        PartitionField(source_id=6, field_id=1000, transform=DayTransform(), name="played_day"), spec_id=0
    )
    assert table.format_version == 2
    assert table.properties["write.parquet.compression-codec"] == "zstd"
    assert table.properties["write.target-file-size-bytes"] == str(128 * 1024 * 1024)
    assert table.properties["commit.retry.num-retries"] == "20"
    assert not changes
    assert catalog.list_tables("music") == [("music", "plays")]


def test_ensure_table_twice_changes_nothing(catalog: Catalog) -> None:
    first, _ = ensure_table(catalog, PLAYS)

    second, changes = ensure_table(catalog, PLAYS)

    assert not changes
    assert second.metadata_location == first.metadata_location


def test_new_optional_column_in_code_is_added_without_rewriting_data(catalog: Catalog, tmp_path: Path) -> None:
    # Given a table holding data
    table, _ = ensure_table(catalog, PLAYS)
    rows = pa.Table.from_pylist(
        [
            {
                "play_id": "p1",
                "user_id": 1,
                "track_id": 2,
                "artist": "Drake",
                "title": "One Dance",
                "played_at": pa.scalar(1_776_643_200_000_000, pa.timestamp("us")).as_py(),
                "duration_seconds": 100,
                "country": "US",
                "device": "tv",
            }
        ],
        schema=table.schema().as_arrow(),
    )
    table.append(rows)
    files_before = _data_files(table)

    # When the code gains an optional column
    evolved = _with_field(PLAYS, NestedField(11, "listening_context", StringType(), doc="Playlist, album or radio"))
    table, changes = ensure_table(catalog, evolved)

    # Then the table has it (with its doc), old rows read null, and no data file was rewritten
    assert changes.added == ("listening_context",)
    assert "added: listening_context" in changes.describe()
    field = table.schema().find_field("listening_context")
    assert (field.required, field.doc) == (False, "Playlist, album or radio")
    assert table.scan().to_arrow().column("listening_context").to_pylist() == [None]
    assert _data_files(table) == files_before
    assert len(table.snapshots()) == 1


@pytest.mark.parametrize(
    ("new_field", "message"),
    [
        (
            NestedField(11, "listening_context", StringType(), required=True),
            "cannot add required column 'listening_context'",
        ),
        (NestedField(7, "duration_seconds", StringType()), "cannot change column 'duration_seconds'"),
    ],
)
def test_unsafe_schema_change_fails_before_writing_anything(catalog: Catalog, new_field, message) -> None:
    table, _ = ensure_table(catalog, PLAYS)
    fields = [f for f in PLAYS.schema.fields if f.name != new_field.name] + [new_field]
    unsafe = TableDef(PLAYS.namespace, PLAYS.name, Schema(*fields), PLAYS.spec)

    with pytest.raises(SchemaEvolutionError, match=message):
        ensure_table(catalog, unsafe)

    assert catalog.load_table("music.plays").metadata_location == table.metadata_location


def test_narrowing_long_to_int_is_refused(catalog: Catalog) -> None:
    ensure_table(catalog, PLAYS)
    fields = [
        NestedField(2, "user_id", IntegerType(), required=True) if f.name == "user_id" else f
        for f in PLAYS.schema.fields
    ]

    with pytest.raises(SchemaEvolutionError, match="cannot change column 'user_id' from long to int"):
        ensure_table(catalog, TableDef(PLAYS.namespace, PLAYS.name, Schema(*fields), PLAYS.spec))


def test_widening_int_to_long_is_applied(catalog: Catalog) -> None:
    ensure_table(catalog, PLAYS)
    fields = [
        NestedField(7, "duration_seconds", LongType()) if f.name == "duration_seconds" else f
        for f in PLAYS.schema.fields
    ]

    table, changes = ensure_table(catalog, TableDef(PLAYS.namespace, PLAYS.name, Schema(*fields), PLAYS.spec))

    assert changes.widened == ("duration_seconds",)
    assert table.schema().find_field("duration_seconds").field_type == LongType()


def test_a_first_run_that_loses_the_race_to_create_the_namespace_carries_on(catalog: Catalog, monkeypatch) -> None:
    """Two first runs at once both find the namespace missing and both create it: the catalog's database
    refuses the second insert, and the run that lost carries on with the namespace the other made."""
    catalog.create_namespace(PLAYS.namespace)  # the other run got there first...
    really_exists, looked = catalog.namespace_exists, []

    def exists_but_not_yet_at_the_first_look(namespace) -> bool:  # ...just after this run looked
        looked.append(namespace)
        return len(looked) > 1 and really_exists(namespace)

    monkeypatch.setattr(catalog, "namespace_exists", exists_but_not_yet_at_the_first_look)

    table, _ = ensure_table(catalog, PLAYS)

    assert catalog.load_table(PLAYS.identifier).metadata.table_uuid == table.metadata.table_uuid
    assert len(looked) > 1  # the first look said "missing": the race did happen in this test
