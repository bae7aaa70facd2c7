"""Explicit schema migrations: renames and drops are never guessed from names, they are written down here.

Additive changes need no migration (``tables.ensure_table`` applies them). A rename or a drop is a
``Migration`` appended to ``MIGRATIONS``; ``ensure_table`` applies each pending one once, in order, in a
single commit that also records its id in the table property ``sonik.migrations-applied``, so running
it again (or from two processes at once) changes nothing. Never edit or reorder an applied migration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.update.schema import UpdateSchema

from sonik_pipeline.lakehouse.tables.catalog import table_name

log = logging.getLogger(__name__)

APPLIED_PROPERTY = "sonik.migrations-applied"


@dataclass(frozen=True)
class Migration:
    id: str  # unique and ordered, e.g. "0001-rename-device-to-device-type"
    table: str  # e.g. "music.plays"
    description: str
    change: Callable[[UpdateSchema], object]  # e.g. lambda s: s.rename_column("device", "device_type")


# The project's migrations, oldest first. Example of an entry:
#   Migration("0001-rename-device", "music.plays", "device is now device_type",
#             lambda schema: schema.rename_column("device", "device_type")),
MIGRATIONS: tuple[Migration, ...] = ()


def applied_migrations(table: Table) -> list[str]:
    return [i for i in table.properties.get(APPLIED_PROPERTY, "").split(",") if i]


def apply_migrations(table: Table, migrations: Sequence[Migration] = MIGRATIONS) -> list[str]:
    """Apply the table's pending migrations, each once, each atomically with its record; return their ids."""
    name = table_name(table)
    newly_applied = []
    for migration in (m for m in migrations if m.table == name):
        for _ in range(3):  # another process may be applying the same migration right now
            table.refresh()
            done = applied_migrations(table)
            if migration.id in done:
                break
            try:
                with table.transaction() as txn:
                    with txn.update_schema(allow_incompatible_changes=True) as schema:
                        migration.change(schema)
                    txn.set_properties({APPLIED_PROPERTY: ",".join([*done, migration.id])})
            except CommitFailedException:
                continue
            log.info("%s: applied migration %s (%s)", name, migration.id, migration.description)
            newly_applied.append(migration.id)
            break
        else:
            raise CommitFailedException(f"{name}: could not apply migration {migration.id} after 3 attempts")
    return newly_applied
