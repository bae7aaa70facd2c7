"""The lakehouse tables as code: every table's name, schema, partition spec and properties, and how a
table follows its code.

The code is the source of truth. ``ensure_table`` creates a missing table (never where a table the
catalog lost still lives: see ``attachment``), and evolves an existing one additively when the code
gained optional columns; any change that is not safe to apply without rewriting data (a narrowing, a
new required column) fails before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchNamespaceError, NoSuchTableError
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.sorting import UNSORTED_SORT_ORDER, NullOrder, SortDirection, SortField, SortOrder
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform
from pyiceberg.types import (
    DateType,
    DecimalType,
    DoubleType,
    FloatType,
    IcebergType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestampType,
    TimestamptzType,
)

from sonik_pipeline.lakehouse.tables.attachment import create_table_where_none_lives
from sonik_pipeline.lakehouse.tables.catalog import ensure_namespace
from sonik_pipeline.lakehouse.tables.iceberg_internals import DICTIONARY_COLUMNS_PROPERTY
from sonik_pipeline.lakehouse.tables.migrations import MIGRATIONS, Migration, apply_migrations

MUSIC = "music"
MARTS = "music_marts"
# Every namespace of the lakehouse: what `sonik tables`, time travel and maintenance go through.
NAMESPACES = (MUSIC, MARTS)

TARGET_FILE_SIZE_BYTES = 128 * 1024 * 1024

# Shared by every table: v2, zstd Parquet, a target file size, and commit retries that ride out
# concurrent writers (PyIceberg re-applies the change on the refreshed table, with backoff).
COMMON_PROPERTIES: dict[str, str] = {
    "format-version": "2",
    "write.format.default": "parquet",
    "write.parquet.compression-codec": "zstd",
    "write.target-file-size-bytes": str(TARGET_FILE_SIZE_BYTES),
    "commit.retry.num-retries": "20",
    "commit.retry.min-wait-ms": "50",
    "commit.retry.max-wait-ms": "5000",
    "commit.retry.total-timeout-ms": "300000",
    # Iceberg's retention properties, which expiry_job reads unless its config overrides them (and other
    # engines' expire_snapshots too): 30 days of time travel, and never fewer than the newest 5 snapshots.
    "history.expire.max-snapshot-age-ms": str(30 * 24 * 3600 * 1000),
    "history.expire.min-snapshots-to-keep": "5",
    # Bounded metadata in daily operation, set on purpose: metadata.json lists the last 100 versions of
    # itself (a few KB), and older metadata files are deleted by expiry_job, which checks every deletion
    # against the table's location and the warehouse (lakehouse/tables/deletion.py); PyIceberg's own clean-up
    # at commit (delete-after-commit) would bypass that check, so it stays off.
    "write.metadata.previous-versions-max": "100",
    "write.metadata.delete-after-commit.enabled": "false",
    # Manifests: manifests_job packs them to this size each night. Merging on commit only applies to
    # PyIceberg's merge_append, and the pipeline's commits are overwrites, so it would change nothing.
    "commit.manifest.target-size-bytes": str(8 * 1024 * 1024),
    "commit.manifest-merge.enabled": "false",
}


@dataclass(frozen=True)
class TableDef:
    """A table as the code wants it."""

    namespace: str
    name: str
    schema: Schema
    spec: PartitionSpec
    properties: dict[str, str] = field(default_factory=lambda: dict(COMMON_PROPERTIES))
    # How rows are ordered within files: the writers sort so, and compaction keeps it (unsorted: its own order).
    sort_order: SortOrder = UNSORTED_SORT_ORDER

    @property
    def identifier(self) -> str:
        return f"{self.namespace}.{self.name}"


SUBSCRIPTION_TIERS = ("Free", "Premium", "Family")

# The tutorial's schema, field for field (ids 1-9; played_at holds UTC wall time), plus the column its
# schema-evolution step adds. Tables created before it gain it on their next write; old rows read null.
PLAYS_SCHEMA = Schema(
    NestedField(1, "play_id", StringType(), required=True),
    NestedField(2, "user_id", LongType(), required=True),
    NestedField(3, "track_id", LongType(), required=True),
    NestedField(4, "artist", StringType(), required=True),
    NestedField(5, "title", StringType(), required=True),
    NestedField(6, "played_at", TimestampType(), required=True),
    NestedField(7, "duration_seconds", IntegerType()),
    NestedField(8, "country", StringType()),
    NestedField(9, "device", StringType()),
    NestedField(10, "subscription_tier", StringType(), doc="Free, Premium, or Family"),
)

# Column statistics in the manifests: every reader decodes them for every data file it plans (DuckDB
# 1.5.5 for all of a table's files, see docs/performance.md, "What grows with age"), so only bounds that prune are kept:
# played_at (the day checks read them), and compaction's sort keys artist and track_id. The other
# columns keep value and null counts; a UUID's or a title's min/max prunes nothing.
PLAYS_METRICS: dict[str, str] = {
    "write.metadata.metrics.default": "counts",
    "write.metadata.metrics.column.played_at": "full",
    "write.metadata.metrics.column.artist": "truncate(16)",
    "write.metadata.metrics.column.track_id": "full",
}

# Dictionaries for the columns whose values repeat within a row group; not for ids and times, nearly all
# distinct (a day of plays writes 40% faster and 8% smaller so).
PLAYS_DICTIONARY_COLUMNS = {
    DICTIONARY_COLUMNS_PROPERTY: "track_id,artist,title,duration_seconds,country,device,subscription_tier"
}

PLAYS = TableDef(
    namespace=MUSIC,
    name="plays",
    schema=PLAYS_SCHEMA,
    spec=PartitionSpec(PartitionField(source_id=6, field_id=1000, transform=DayTransform(), name="played_day")),
    properties={**COMMON_PROPERTIES, **PLAYS_METRICS, **PLAYS_DICTIONARY_COLUMNS},
)

# Quarantine: every event that failed validation, with its raw payload and why, per ingested day.
PLAYS_REJECTED = TableDef(
    namespace=MUSIC,
    name="plays_rejected",
    schema=Schema(
        NestedField(1, "ingest_day", DateType(), required=True, doc="The partition being ingested"),
        NestedField(2, "play_id", StringType(), doc="The event's play_id, when it could be read"),
        NestedField(3, "reason", StringType(), required=True, doc="Why the event was rejected"),
        NestedField(4, "payload", StringType(), required=True, doc="The raw event as received (JSON)"),
        NestedField(5, "source_file", StringType(), required=True, doc="File (or source) it came from"),
        NestedField(6, "source_line", LongType(), doc="1-based line in a JSON Lines file"),
        NestedField(7, "rejected_at", TimestampType(), required=True, doc="UTC time of the ingest"),
        NestedField(8, "dagster_run_id", StringType(), doc="The run that quarantined it"),
    ),
    spec=PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="ingest_day")),
)


# What each day's last ingest read from the landing zone, file by file: the landing sensor compares the
# landing zone against it, and a re-ingest tells late files from those read before. Written after the
# day's plays commit, so a crash in between makes the day look changed (re-ingested), never unchanged.
PLAYS_SOURCES = TableDef(
    namespace=MUSIC,
    name="plays_sources",
    schema=Schema(
        NestedField(1, "day", DateType(), required=True, doc="The day (partition of plays) the file was read for"),
        NestedField(2, "source_file", StringType(), required=True, doc="Landing file: a local path or a full URI"),
        NestedField(3, "size_bytes", LongType(), required=True, doc="Its size when listed, before it was read"),
        NestedField(4, "modified_at", TimestamptzType(), required=True, doc="Its modification time when listed"),
        NestedField(5, "events", LongType(), required=True, doc="Events (lines or rows) read from it"),
        NestedField(6, "first_read_at", TimestamptzType(), required=True, doc="When this version was first read"),
        NestedField(7, "ingested_at", TimestamptzType(), required=True, doc="When the day was last ingested"),
        NestedField(8, "dagster_run_id", StringType(), doc="The run of that ingest"),
    ),
    spec=PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="day")),
)


def _mart_table(name: str, *fields: NestedField) -> TableDef:
    """A mart partitioned by its day (identity), so replacing a day is one partition swap."""
    day = NestedField(1, "day", DateType(), required=True, doc="The UTC day the figures are for")
    return TableDef(
        namespace=MARTS,
        name=name,
        schema=Schema(day, *fields),
        spec=PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="day")),
    )


def _f(field_id: int, name: str, kind: IcebergType, doc: str, required: bool = False) -> NestedField:
    return NestedField(field_id, name, kind, required=required, doc=doc)


def _plays(i: int) -> NestedField:
    return _f(i, "plays", LongType(), "Number of plays", True)


def _seconds(i: int) -> NestedField:
    return _f(i, "seconds_played", LongType(), "Total listening time in seconds (exact)", True)


def _minutes(i: int) -> NestedField:
    return _f(i, "minutes_played", DoubleType(), "Total listening time in minutes (rounded to 0.01)", True)


def _rank(i: int) -> NestedField:
    return _f(i, "rank", IntegerType(), "1 = most played", True)


def _totals(i: int) -> tuple[NestedField, ...]:
    """plays, unique_listeners, seconds_played and minutes_played, with field ids from ``i`` on."""
    listeners = _f(i + 1, "unique_listeners", LongType(), "Distinct users who played", True)
    return _plays(i), listeners, _seconds(i + 2), _minutes(i + 3)


def _ranked_tracks() -> tuple[NestedField, ...]:
    """rank, track_id, artist and title (field ids 2-5): the head of every ranked-tracks mart."""
    return (
        _rank(2),
        _f(3, "track_id", LongType(), "Track", True),
        _f(4, "artist", StringType(), "Artist", True),
        _f(5, "title", StringType(), "Title", True),
    )


def _ranked_artists_table(name: str) -> TableDef:
    return _mart_table(name, _rank(2), _f(3, "artist", StringType(), "Artist", True), *_totals(4))


def _totals_by(name: str, column: str, doc: str) -> TableDef:
    """A mart of plays, listeners and listening time per value of one column."""
    return _mart_table(name, _f(2, column, StringType(), doc), *_totals(3))


# The marts' tables (their queries are in lakehouse/marts/queries.py); every figure is per UTC day.
DAILY_TOP_TRACKS_TABLE = _mart_table("daily_top_tracks", *_ranked_tracks(), *_totals(6))
DAILY_TOP_ARTISTS_TABLE = _ranked_artists_table("daily_top_artists")
DAILY_COUNTRY_LISTENING_TABLE = _totals_by(
    "daily_country_listening", "country", "Two-letter country code (null: unknown)"
)
DAILY_TIER_LISTENING_TABLE = _totals_by(
    "daily_tier_listening", "subscription_tier", "Free, Premium or Family (null: played before tiers were recorded)"
)
DAILY_DEVICE_MIX_TABLE = _mart_table(
    "daily_device_mix",
    _f(2, "device", StringType(), "Device type (null: unknown)"),
    _plays(3),
    _seconds(4),
    _minutes(5),
    _f(6, "share", DoubleType(), "Share of the day's plays (0..1)", True),
)
DAILY_USER_STATS_TABLE = _mart_table(
    "daily_user_stats",
    _f(2, "user_id", LongType(), "User", True),
    _plays(3),
    _seconds(4),
    _minutes(5),
    _f(6, "distinct_tracks", LongType(), "Different tracks played", True),
    _f(7, "distinct_artists", LongType(), "Different artists played", True),
    _f(8, "favourite_artist", StringType(), "Most played artist (ties: alphabetical)", True),
    _f(9, "first_play_at", TimestampType(), "First play of the day (UTC)", True),
    _f(10, "last_play_at", TimestampType(), "Last play of the day (UTC)", True),
)
TOP_ARTISTS_7D_TABLE = _ranked_artists_table("top_artists_7d")
TRENDING_TRACKS_TABLE = _mart_table(
    "trending_tracks",
    *_ranked_tracks(),
    _f(6, "plays_7d", LongType(), "Plays in the 7 days ending on day", True),
    _f(7, "plays_prev_7d", LongType(), "Plays in the 7 days before those", True),
    _f(8, "change", LongType(), "plays_7d - plays_prev_7d", True),
    _f(9, "change_ratio", DoubleType(), "change / plays_prev_7d (null when new)"),
)
# A play shorter than this is a skip: the user moved on within the track's first half minute. A play of
# unknown duration is not counted as one.
SKIP_UNDER_SECONDS = 30
USER_TRACK_INTERACTIONS_TABLE = _mart_table(
    "user_track_interactions",
    _f(2, "user_id", LongType(), "User", True),
    _f(3, "track_id", LongType(), "Track", True),
    _plays(4),
    _seconds(5),
    _f(6, "first_played_at", TimestampType(), "The user's first play of the track in the window (UTC)", True),
    _f(7, "last_played_at", TimestampType(), "The user's last play of the track in the window (UTC)", True),
    _f(8, "skips", LongType(), f"Plays of under {SKIP_UNDER_SECONDS} seconds (unknown durations are not skips)", True),
)

# Each user's plays per day and track: what personal stats (lakehouse/reads/user_stats.py) read. Built for
# one user's reads across years, where daily_user_stats makes a reader open one file per day with every
# user in one row group: partitioned by a bucket of user_id, so a user's whole history is in one partition,
# which compaction merges into one file however many years it holds (a partition per year was measured too:
# a file per year to open, 1.9x the 30-day time at 3 years, against 1.4x); rows sorted by user_id (the
# table's sort order, which compaction keeps) in small row groups, so the file's row-group statistics on
# user_id leave one or two row groups to read. The price: the daily run writes a file per bucket, and a
# re-run of a day already compacted rewrites the buckets' files without it (copy-on-write). Per day and
# track rather than per month: any range of days, and top artists and tracks over it, is exact.
USER_TRACK_DAYS_BUCKETS = 4
USER_TRACK_DAYS_ROW_GROUP_ROWS = 4096
USER_TRACK_DAYS_SCHEMA = Schema(
    NestedField(1, "day", DateType(), required=True, doc="The UTC day the plays are of"),
    _f(2, "user_id", LongType(), "User", True),
    _f(3, "track_id", LongType(), "Track", True),
    _f(4, "artist", StringType(), "Artist", True),
    _f(5, "title", StringType(), "Title", True),
    _plays(6),
    _seconds(7),
)
USER_TRACK_DAYS_TABLE = TableDef(
    namespace=MARTS,
    name="user_track_days",
    schema=USER_TRACK_DAYS_SCHEMA,
    spec=PartitionSpec(
        PartitionField(
            source_id=2, field_id=1000, transform=BucketTransform(USER_TRACK_DAYS_BUCKETS), name="user_id_bucket"
        )
    ),
    properties={
        **COMMON_PROPERTIES,
        "write.parquet.row-group-limit": str(USER_TRACK_DAYS_ROW_GROUP_ROWS),
        # Bounds only where they prune: day (the range asked for) and user_id (compacted files split at the
        # target size hold disjoint ranges of users).
        "write.metadata.metrics.default": "counts",
        "write.metadata.metrics.column.day": "full",
        "write.metadata.metrics.column.user_id": "full",
    },
    sort_order=SortOrder(
        *(SortField(source_id=i, transform=IdentityTransform(), null_order=NullOrder.NULLS_LAST) for i in (2, 1, 3))
    ),
)

MART_TABLES = (
    DAILY_TOP_TRACKS_TABLE,
    DAILY_TOP_ARTISTS_TABLE,
    DAILY_COUNTRY_LISTENING_TABLE,
    DAILY_TIER_LISTENING_TABLE,
    DAILY_DEVICE_MIX_TABLE,
    DAILY_USER_STATS_TABLE,
    TOP_ARTISTS_7D_TABLE,
    TRENDING_TRACKS_TABLE,
    USER_TRACK_INTERACTIONS_TABLE,
    USER_TRACK_DAYS_TABLE,
)
# Every table the code defines: time travel and `sonik tables` show each (empty before its first write).
CODE_TABLES = (PLAYS, PLAYS_REJECTED, PLAYS_SOURCES, *MART_TABLES)


class SchemaEvolutionError(ValueError):
    """The code's schema differs from the table's in a way that cannot be applied safely."""


# Iceberg's allowed type promotions: (table type, code type) pairs that widen without a rewrite.
_SAFE_PROMOTIONS: set[tuple[type[IcebergType], type[IcebergType]]] = {
    (IntegerType, LongType),
    (FloatType, DoubleType),
}


def _is_safe_promotion(current: IcebergType, wanted: IcebergType) -> bool:
    if isinstance(current, DecimalType) and isinstance(wanted, DecimalType):
        return current.scale == wanted.scale and wanted.precision >= current.precision
    return (type(current), type(wanted)) in _SAFE_PROMOTIONS


@dataclass(frozen=True)
class SchemaChanges:
    """What ``ensure_table`` changed (or would change) on an existing table."""

    added: tuple[str, ...] = ()
    widened: tuple[str, ...] = ()
    made_optional: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.added or self.widened or self.made_optional)

    def describe(self) -> str:
        parts = [
            f"{label}: {', '.join(names)}"
            for label, names in (
                ("added", self.added),
                ("widened", self.widened),
                ("made optional", self.made_optional),
            )
            if names
        ]
        return "; ".join(parts) or "none"


def plan_schema_changes(current: Schema, wanted: Schema, table_name: str) -> SchemaChanges:
    """Compare the table's schema with the code's, top-level columns by name; raise if unsafe."""
    added, widened, made_optional = [], [], []
    for wanted_field in wanted.fields:
        try:
            current_field = current.find_field(wanted_field.name)
        except ValueError:
            if wanted_field.required:
                raise SchemaEvolutionError(
                    f"{table_name}: cannot add required column '{wanted_field.name}': existing rows have "
                    "no value for it; add it as optional (required=False)"
                ) from None
            added.append(wanted_field.name)
            continue
        if current_field.field_type != wanted_field.field_type:
            if not _is_safe_promotion(current_field.field_type, wanted_field.field_type):
                raise SchemaEvolutionError(
                    f"{table_name}: cannot change column '{wanted_field.name}' from "
                    f"{current_field.field_type} to {wanted_field.field_type}: only widening "
                    "(int->long, float->double, wider decimal) is safe"
                )
            widened.append(wanted_field.name)
        if wanted_field.required and not current_field.required:
            raise SchemaEvolutionError(
                f"{table_name}: cannot make column '{wanted_field.name}' required: existing rows may hold nulls"
            )
        if current_field.required and not wanted_field.required:
            made_optional.append(wanted_field.name)
    wanted_names = {f.name for f in wanted.fields}
    for current_field in current.fields:
        if current_field.name not in wanted_names and current_field.required:
            raise SchemaEvolutionError(
                f"{table_name}: required column '{current_field.name}' is missing from the code's schema; "
                "drops and renames go through an explicit migration"
            )
    return SchemaChanges(tuple(added), tuple(widened), tuple(made_optional))


def _apply_schema_changes(table: Table, wanted: Schema, changes: SchemaChanges) -> None:
    with table.update_schema() as update:
        for name in changes.added:
            wanted_field = wanted.find_field(name)
            update.add_column(name, wanted_field.field_type, doc=wanted_field.doc)
        for name in changes.widened:
            update.update_column(name, field_type=wanted.find_field(name).field_type)
        for name in changes.made_optional:
            update.update_column(name, required=False)


def ensure_table(
    catalog: Catalog, table_def: TableDef, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[Table, SchemaChanges]:
    """Load the table, creating it on first use, applying pending migrations, then evolving it additively."""
    ensure_namespace(catalog, table_def.namespace)
    try:
        table = catalog.load_table(table_def.identifier)
    except NoSuchTableError:
        # Never over a lost table's files: a catalog that lost it gets it back with `sonik reattach`.
        table = create_table_where_none_lives(
            catalog, table_def.identifier, table_def.schema, table_def.spec, table_def.properties
        )
        _ensure_sort_order(table, table_def)
        return table, SchemaChanges()
    apply_migrations(table, migrations)
    changes = plan_schema_changes(table.schema(), table_def.schema, table_def.identifier)
    if changes:
        _apply_schema_changes(table, table_def.schema, changes)
    stale = {k: v for k, v in table_def.properties.items() if table.properties.get(k) != v}
    stale.pop("format-version", None)
    if stale:
        with table.transaction() as txn:
            txn.set_properties(stale)
    _ensure_sort_order(table, table_def)
    return table, changes


def _sort_key(order: SortOrder) -> list[tuple]:
    return [(f.source_id, f.transform, f.direction, f.null_order) for f in order.fields]


def _ensure_sort_order(table: Table, table_def: TableDef) -> None:
    """Give the table the code's sort order (only where the code has one: other tables keep theirs)."""
    wanted = table_def.sort_order
    for _ in range(3):  # another process may be setting it right now (a first run of two days at once)
        if wanted.is_unsorted or _sort_key(table.sort_order()) == _sort_key(wanted):
            return
        try:
            with table.update_sort_order() as update:
                for sort_field in wanted.fields:
                    name = table_def.schema.find_column_name(sort_field.source_id)
                    add = update.asc if sort_field.direction == SortDirection.ASC else update.desc
                    add(name, sort_field.transform, sort_field.null_order)
        except CommitFailedException:
            table.refresh()
            continue
        return
    raise CommitFailedException(f"{table_def.identifier}: could not set its sort order after 3 attempts")


def lakehouse_table_names(catalog: Catalog) -> list[str]:
    """Every table of the lakehouse's namespaces (``music.plays``, ``music_marts.daily_top_tracks``, ...), sorted."""
    names = []
    for namespace in NAMESPACES:
        try:
            names += [".".join(identifier) for identifier in catalog.list_tables(namespace)]
        except NoSuchNamespaceError:
            continue
    return sorted(names)
