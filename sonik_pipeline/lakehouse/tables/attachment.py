"""Which table lives at a location, so a lost or wrong catalog never costs a table's data.

The catalog only points at a table's current ``metadata.json``; the table itself (data, manifests,
every version of its metadata) lives under its location in the warehouse. When the catalog is lost
(``catalog.db`` deleted) or another one is configured (``SONIK_CATALOG_URI`` at an empty database)
while the warehouse stays, the catalog says "no such table" while the table's files are all there.
Creating a new table at the same location would start the table empty and let orphan removal take the
old table's files for orphans. So:

- ``create_table_where_none_lives`` refuses to create a table where a table's metadata already lives;
- ``unattached_tables`` finds tables whose files are in the warehouse but which the catalog lacks;
- ``reattach`` registers such a table's newest metadata in the catalog (Iceberg's ``register_table``),
  which gives the table back exactly as it was, every snapshot and its time travel included.

A location counts as holding a table when a metadata file there has recorded a commit (version 1 or
later in its name, or any snapshot): a version-0 file with no snapshot is a creation that never held
data (a crashed or concurrent first run), and a new table may be created over it.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pyarrow import fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import (
    CommitFailedException,
    NoSuchNamespaceError,
    NoSuchTableError,
    RESTError,
    TableAlreadyExistsError,
)
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.partitioning import PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.serializers import FromInputFile
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata

from sonik_pipeline.lakehouse.tables.catalog import ensure_namespace

_METADATA_NAME = re.compile(r"(\d+)-[^/]*\.metadata\.json")  # what PyIceberg's and Java's location providers write

# Table uuids a re-attached table took the place of (comma-separated): their files at its location are its
# orphans, which orphan removal may take, where any other table's committed files stop it.
SUPERSEDED_TABLES_PROPERTY = "sonik.superseded-table-uuids"

# How long an unreadable version-0 metadata file is given to become a concurrent creation's catalog row.
CREATION_SETTLE_SECONDS = 10.0

REATTACH_HINT = (
    "re-attach it with `sonik reattach` (Iceberg's register_table), or point SONIK_CATALOG_URI at its catalog"
)


class TableLocationTaken(RuntimeError):
    """A table was to be created where another table's metadata lives: nothing was created."""


class AmbiguousMetadata(RuntimeError):
    """Several metadata files share the newest version: which one the catalog pointed at cannot be told."""


@dataclass(frozen=True)
class MetadataFile:
    """A ``*.metadata.json`` found under a table location."""

    location: str
    version: int | None  # from its name; None for a name not in Iceberg's NNNNN-<uuid> form
    modified: dt.datetime


@dataclass(frozen=True)
class Unattached:
    """A table whose files are in the warehouse while the catalog has no such table."""

    identifier: str
    location: str
    metadata: tuple[MetadataFile, ...]

    def describe(self) -> str:
        newest = max(self.metadata, key=lambda f: (f.version or -1, f.modified))
        return (
            f"{self.identifier}: the catalog has no such table, but its files are at {self.location} "
            f"({len(self.metadata)} metadata files, the newest {newest.location.rsplit('/', 1)[-1]} written "
            f"{newest.modified:%Y-%m-%d %H:%M:%S} UTC)"
        )


@dataclass(frozen=True)
class Reattached:
    """What ``reattach`` registered: the table, the metadata file, and what that version holds."""

    identifier: str
    metadata_location: str
    snapshots: int
    current_snapshot_id: int | None
    replaced_uuid: str | None = None  # the table uuid a --replace took out of the catalog (its files stay)


def metadata_version(path: str) -> int | None:
    """The version in a metadata file's name (``00022-<uuid>.metadata.json`` -> 22); None for other names."""
    match = _METADATA_NAME.fullmatch(path.rsplit("/", 1)[-1])
    return int(match.group(1)) if match else None


def _located(scheme: str, netloc: str, key: str, like: str) -> str:
    """A listed key as a location again, written as ``like`` is (PyArrow lists ``/abs/path`` locally, ``bucket/key``
    on S3; a table location reads ``file:///abs/path`` when the warehouse was given so)."""
    if scheme == "file":
        return f"file://{key}" if like.startswith("file:") else key
    return f"{scheme}://{netloc}{key}" if scheme in ("hdfs", "viewfs") else f"{scheme}://{key}"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def metadata_files_at(catalog: Catalog, location: str) -> list[MetadataFile]:
    """The metadata JSON files under ``<location>/metadata``, by version then time (oldest first)."""
    scheme, netloc, path = PyArrowFileIO.parse_location(location)
    filesystem = PyArrowFileIO(dict(catalog.properties)).fs_by_scheme(scheme, netloc)
    infos = filesystem.get_file_info(pafs.FileSelector(path.rstrip("/") + "/metadata", allow_not_found=True))
    found = [
        MetadataFile(_located(scheme, netloc, info.path, location), metadata_version(info.path), info.mtime or _now())
        for info in infos
        if info.type == pafs.FileType.File and info.path.endswith(".metadata.json")
    ]
    return sorted(found, key=lambda f: (f.version if f.version is not None else -1, f.modified))


def read_metadata(catalog: Catalog, location: str) -> TableMetadata:
    return FromInputFile.table_metadata(PyArrowFileIO(dict(catalog.properties)).new_input(location))


class Holding(enum.Enum):
    """What a location's metadata files say about a table living there."""

    NONE = "none"  # no file, or version-0 files without a snapshot: a creation that never held data
    TABLE = "table"  # a commit was recorded: a table with data (or history) lives there
    UNSURE = "unsure"  # only unreadable version-0 files: a creation being written right now, or a damaged one


def holding(catalog: Catalog, files: Sequence[MetadataFile]) -> Holding:
    """Whether these metadata files record a commit, and how sure that is."""
    verdict = Holding.NONE
    for file in files:
        if file.version != 0:  # a later version, or a name we cannot read a version from: assume a table
            return Holding.TABLE
        try:
            if read_metadata(catalog, file.location).snapshots:
                return Holding.TABLE
        except Exception:  # half-written by a concurrent creation, or damaged: told apart by waiting
            verdict = Holding.UNSURE
    return verdict


def holds_a_table(catalog: Catalog, files: Sequence[MetadataFile]) -> bool:
    """Whether these metadata files record a commit; an unreadable file counts, as it cannot be told apart."""
    return holding(catalog, files) is not Holding.NONE


def expected_location(catalog: Catalog, identifier: str) -> str | None:
    """Where the catalog would put a new table ``identifier`` (asked by staging a create, committing nothing).

    A namespace the catalog lacks is answered by PyIceberg's convention for SQL catalogs,
    ``<warehouse>/<namespace>/<table>``; None when the catalog cannot say (a REST server that does not
    stage creates, a warehouse that is a name rather than a place).
    """
    try:
        return catalog.create_table_transaction(identifier, Schema()).table_metadata.location.rstrip("/")
    except NoSuchNamespaceError:
        warehouse = catalog.properties.get("warehouse", "")
        if "://" not in warehouse and not warehouse.startswith("/"):
            return None
        namespace, _, name = identifier.rpartition(".")
        return f"{warehouse.rstrip('/')}/{namespace}/{name}"
    except Exception:  # a catalog that cannot stage a create simply cannot tell
        return None


def create_table_where_none_lives(
    catalog: Catalog, identifier: str, schema: Schema, partition_spec: PartitionSpec, properties: dict[str, str]
) -> Table:
    """Create ``identifier``, unless the location it would get holds another table's metadata.

    A concurrent run that created the same table meanwhile is found in the catalog and used, as
    ``create_table_if_not_exists`` would; only a table the catalog does not know stops the creation.
    """
    try:
        create = catalog.create_table_transaction(
            identifier, schema=schema, partition_spec=partition_spec, properties=properties
        )
    except (NotImplementedError, RESTError):  # a REST server without staged creates chooses the location itself
        return catalog.create_table_if_not_exists(
            identifier, schema=schema, partition_spec=partition_spec, properties=properties
        )
    location = create.table_metadata.location.rstrip("/")
    settle_by = time.monotonic() + CREATION_SETTLE_SECONDS
    while (verdict := holding(catalog, existing := metadata_files_at(catalog, location))) is not Holding.NONE:
        try:
            return catalog.load_table(identifier)  # created by a concurrent run after we looked
        except NoSuchTableError:
            # A concurrent creation writes its version-0 file before the catalog row: while that file
            # cannot be read yet, wait for the row rather than take the creation for a lost table.
            if verdict is Holding.TABLE or time.monotonic() > settle_by:
                raise TableLocationTaken(
                    f"cannot create {Unattached(identifier, location, tuple(existing)).describe()}: the catalog was "
                    f"lost or is not the one this warehouse was written with; nothing was created; {REATTACH_HINT}"
                ) from None
            time.sleep(0.1)
    try:
        create.commit_transaction()
    except (TableAlreadyExistsError, CommitFailedException):
        # A concurrent run created it first (PyIceberg's SQL catalog says so with a failed assert-create):
        # use theirs; any other failed commit is raised.
        if not catalog.table_exists(identifier):
            raise
    return catalog.load_table(identifier)


def unattached_tables(catalog: Catalog, identifiers: Sequence[str]) -> list[Unattached]:
    """Of ``identifiers``, the tables the catalog lacks whose metadata is in the warehouse."""
    found = []
    for identifier in identifiers:
        if catalog.table_exists(identifier):
            continue
        location = expected_location(catalog, identifier)
        files = metadata_files_at(catalog, location) if location else []
        if files and holds_a_table(catalog, files):
            found.append(Unattached(identifier, location, tuple(files)))
    return found


def newest_metadata(table: Unattached) -> str:
    """The metadata file the catalog last pointed at: the one of the highest version.

    Two files of that version mean a commit race whose loser left its file, and nothing in the files
    says which one won; then ``AmbiguousMetadata`` lists them and the caller names one.
    """
    versioned = [f for f in table.metadata if f.version is not None]
    if not versioned:
        raise AmbiguousMetadata(f"{table.identifier}: no metadata file at {table.location} has a version in its name")
    top = max(f.version for f in versioned)
    newest = [f.location for f in versioned if f.version == top]
    if len(newest) > 1:
        raise AmbiguousMetadata(
            f"{table.identifier}: {len(newest)} metadata files share the newest version {top} ("
            + ", ".join(newest)
            + "); one lost a commit race; name the one to re-attach with --metadata"
        )
    return newest[0]


def reattach(catalog: Catalog, identifier: str, metadata_location: str, replace: bool = False) -> Reattached:
    """Register ``metadata_location`` as table ``identifier`` in the catalog (Iceberg's ``register_table``).

    With ``replace``, a table the catalog has under that name (one created over the lost table) is
    dropped from the catalog first; its files are kept, and its uuid is recorded on the re-attached table
    (``SUPERSEDED_TABLES_PROPERTY``), so orphan removal treats them as its orphans once past the safety window.
    """
    metadata = read_metadata(catalog, metadata_location)  # refuse an unreadable file before touching the catalog
    namespace = identifier.rpartition(".")[0]
    ensure_namespace(catalog, namespace)
    replaced = None
    if replace and catalog.table_exists(identifier):
        current = catalog.load_table(identifier)
        if str(current.metadata.table_uuid) == str(metadata.table_uuid):
            raise TableAlreadyExistsError(f"{identifier} is already that table (uuid {metadata.table_uuid})")
        from pyiceberg.catalog.rest import RestCatalog  # here: it pulls in requests, which nothing else needs

        if isinstance(catalog, RestCatalog):
            raise TableAlreadyExistsError(
                f"{identifier}: --replace is refused on a REST catalog: it would drop the catalog's table, and "
                f"REST catalogs such as SeaweedFS and S3 Tables delete a dropped table's files, which at "
                f"{current.location()} are the lost table's too; nothing was changed. Unregister the new table "
                f"with the catalog's own tools, keeping its files, then run sonik reattach {identifier}"
            )
        replaced = str(current.metadata.table_uuid)
        catalog.drop_table(identifier)  # the catalog entry only: a SQL catalog's drop_table purges nothing
    table = catalog.register_table(identifier, metadata_location)
    if replaced:
        superseded = [u for u in table.properties.get(SUPERSEDED_TABLES_PROPERTY, "").split(",") if u]
        with table.transaction() as txn:
            txn.set_properties({SUPERSEDED_TABLES_PROPERTY: ",".join([*superseded, replaced])})
    return Reattached(
        identifier,
        metadata_location,
        len(table.metadata.snapshots),
        table.metadata.current_snapshot_id,
        replaced,
    )
