import datetime as dt

import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.schema import Schema
from pyiceberg.types import NestedField, StringType

from sonik_pipeline.lakehouse.ingest.run import ingest_day
from sonik_pipeline.lakehouse.sources.events import ArrowRows
from sonik_pipeline.lakehouse.sources.synthetic import synthetic_batch
from sonik_pipeline.lakehouse.tables.definitions import PLAYS, SchemaEvolutionError, TableDef, ensure_table
from sonik_pipeline.lakehouse.tables.migrations import APPLIED_PROPERTY, Migration

DAY = dt.date(2026, 4, 20)
RENAME = Migration(
    "0001-rename-device", "music.plays", "device is now device_type", lambda s: s.rename_column("device", "device_type")
)
RENAMED = TableDef(
    PLAYS.namespace,
    PLAYS.name,
    Schema(*[NestedField(9, "device_type", StringType()) if f.name == "device" else f for f in PLAYS.schema.fields]),
    PLAYS.spec,
)


def test_a_rename_is_applied_once_by_its_migration_and_keeps_the_data(catalog: Catalog) -> None:
    ingest_day(catalog, DAY, [ArrowRows(synthetic_batch(DAY, 300), "t")])
    devices = catalog.load_table("music.plays").scan().to_arrow().column("device").to_pylist()

    table, changes = ensure_table(catalog, RENAMED, migrations=[RENAME])
    metadata_after_first = table.metadata_location
    again, _ = ensure_table(catalog, RENAMED, migrations=[RENAME])

    assert not changes
    assert table.schema().find_field("device_type").field_id == 9
    assert table.scan().to_arrow().column("device_type").to_pylist() == devices  # no data rewritten or lost
    assert table.properties[APPLIED_PROPERTY] == "0001-rename-device"
    assert again.metadata_location == metadata_after_first  # idempotent: nothing committed the second time


def test_a_rename_is_never_guessed_from_names(catalog: Catalog) -> None:
    ensure_table(catalog, PLAYS)

    table, changes = ensure_table(catalog, RENAMED, migrations=[])

    assert changes.added == ("device_type",)  # a new column; the old one stays untouched
    assert {"device", "device_type"} <= {f.name for f in table.schema().fields}


def test_dropping_a_required_column_without_a_migration_fails(catalog: Catalog) -> None:
    ensure_table(catalog, PLAYS)
    schema = Schema(*[f for f in PLAYS.schema.fields if f.name != "title"])
    without_title = TableDef(PLAYS.namespace, PLAYS.name, schema, PLAYS.spec)

    with pytest.raises(SchemaEvolutionError, match="required column 'title' is missing .* explicit migration"):
        ensure_table(catalog, without_title)
