"""Opening the Iceberg catalog from a URI and a warehouse, the same way for SQLite, Postgres or REST."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pydantic
import sqlalchemy.event
import sqlalchemy.exc
from pydantic import ValidationError
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.exceptions import AuthorizationExpiredError, ForbiddenError, OAuthError, RESTError, UnauthorizedError
from pyiceberg.exceptions import ValidationError as MetadataValidationError
from pyiceberg.table import Table
from pyiceberg.utils.config import Config
from sqlalchemy.engine import URL, ExceptionContext, make_url

# SQLite serialises writers; waiting for the lock beats failing a commit with "database is locked".
SQLITE_BUSY_TIMEOUT_SECONDS = 60
SQL_DRIVERS = ("", "psycopg", "psycopg2", "pg8000")  # postgresql[+driver]://; "" is SQLAlchemy's default
# Our own catalog property (PyIceberg ignores it): SONIK_WAREHOUSE, the root every table's files must lie under,
# kept apart from the catalog's ``warehouse``, which a REST catalog may take as a name rather than a place.
STORAGE_ROOT = "sonik.storage-root"


class CatalogUnavailable(Exception):
    """The catalog cannot be opened (bad URI, server down, unusable SQLite path): one line saying what to do."""


class CatalogLocked(CatalogUnavailable):
    """The SQLite catalog stayed locked by another process past its busy timeout: one line with the wait."""


class TableUnreadable(Exception):
    """A table the catalog has whose metadata cannot be read (missing, truncated, damaged): one line naming it."""


def redact(uri: str) -> str:
    """``uri`` with any password replaced by ``***``, fit for messages and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def catalog_uri_problem(uri: str) -> str | None:
    """What is wrong with a catalog URI (PyIceberg infers SQL or REST from its scheme), or None."""
    expected = (
        "expected an Iceberg catalog URI: sqlite:///path/to/catalog.db, "
        "postgresql+psycopg://user:password@host:5432/database or https://host/path (REST)"
    )
    scheme, sep, rest = uri.partition("://")
    scheme = scheme.lower()
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return expected
    if not sep:
        return expected
    if scheme == "sqlite":
        return None if rest.startswith("/") and len(rest) > 1 else "expected sqlite:///path/to/catalog.db"
    if scheme == "postgresql" or scheme.startswith("postgresql+"):
        driver = scheme.partition("+")[2]
        if driver not in SQL_DRIVERS:
            return f"expected postgresql://, or postgresql+DRIVER:// with DRIVER one of {', '.join(SQL_DRIVERS[1:])}"
        return None
    if scheme in ("http", "https"):
        return None if parts.netloc else "expected a REST catalog URL such as https://host/path"
    return expected


def _with_sqlite_busy_timeout(uri: str) -> str:
    if not uri.startswith("sqlite") or "timeout=" in uri:
        return uri
    return f"{uri}{'&' if urlsplit(uri).query else '?'}timeout={SQLITE_BUSY_TIMEOUT_SECONDS}"


def catalog_properties(name: str, uri: str, warehouse: str) -> dict[str, str]:
    """PyIceberg's configuration of catalog ``name`` as it stands now, with our URI and storage root on top.

    That is ``~/.pyiceberg.yaml`` and ``PYICEBERG_CATALOG__<NAME>__*`` variables, such as
    ``PYICEBERG_CATALOG__SONIK__S3__ENDPOINT`` for ``s3.endpoint``: object-storage endpoints and
    credentials stay in PyIceberg's standard settings, never in Dagster config. ``load_catalog`` reads
    the environment once, at import; reading it here too means a changed environment is always seen.

    ``warehouse`` (``SONIK_WAREHOUSE``) is where the files live: the storage root the deletion rule holds
    every table to, kept as ``STORAGE_ROOT``. It is also the catalog's own ``warehouse`` unless PyIceberg's
    configuration names one (``PYICEBERG_CATALOG__SONIK__WAREHOUSE``): REST catalogs such as Polaris,
    Lakekeeper, Nessie or S3 Tables want a warehouse's name or ARN there, not a storage URI.
    """
    configured = {k: str(v) for k, v in (Config().get_catalog_config(name) or {}).items()}
    return {
        **configured,
        "uri": _with_sqlite_busy_timeout(uri),
        "warehouse": configured.get("warehouse") or warehouse,
        STORAGE_ROOT: warehouse,
    }


def storage_root(properties: Mapping[str, str]) -> str:
    """Where a catalog's tables are stored: ``STORAGE_ROOT``, or for a catalog opened without it, its warehouse."""
    return properties.get(STORAGE_ROOT) or properties.get("warehouse", "")


# A REST catalog that answers but refuses who we are: its credential or token is wrong, expired or lacks rights.
REST_REFUSALS = (OAuthError, UnauthorizedError, ForbiddenError, AuthorizationExpiredError)


def _what_to_do(uri: str, exc: BaseException, name: str) -> str:
    if isinstance(exc, REST_REFUSALS):
        # The credential is never in the URI: it is PyIceberg's own setting, from the environment.
        variables = f"PYICEBERG_CATALOG__{name.upper()}__"
        return f"check the REST catalog's credential ({variables}CREDENTIAL, or {variables}TOKEN) and its rights"
    if uri.startswith("sqlite"):
        return "check that SONIK_HOME (or the SONIK_CATALOG_URI path) is a writable folder and the catalog path a file"
    if uri.startswith("postgresql"):
        return "check SONIK_CATALOG_URI and that the PostgreSQL server is running and accepts connections"
    return "check SONIK_CATALOG_URI and that the REST catalog is running"


def _first_line(exc: BaseException, password: str | None) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # SQLAlchemy prefixes the driver's exception class: "(psycopg.OperationalError) connection failed: ..."
    text = text.split(") ", 1)[1] if text.startswith("(") and ") " in text else text
    return text.replace(password, "***") if password else text


def _is_locked(exc: BaseException) -> bool:
    """SQLite's "database is locked": another connection held the lock past the busy timeout."""
    return "database is locked" in str(getattr(exc, "orig", None) or exc)


def locked_message(url: URL) -> str:
    """What a SQLite catalog locked past its busy timeout says: the file, the wait, and what to do."""
    waited = url.query.get("timeout") or "5"  # Python's sqlite3 default, for a URI opened without ours
    waited = waited if isinstance(waited, str) else waited[-1]
    return (
        f"the SQLite catalog {url.database} stayed locked by another process for {waited} s (its busy timeout): "
        f"a long write holds it; re-run when that has finished (`lsof {url.database}` lists the processes using it)"
    )


def _name_a_locked_catalog(context: ExceptionContext) -> BaseException | None:
    """SQLAlchemy's ``handle_error`` hook: "database is locked" becomes ``CatalogLocked``, chained to the original.

    On the catalog's engine, so every catalog operation is covered in one place: a commit, a table load,
    ``ensure_table``, a sensor's read, a ``sonik`` command.
    """
    if _is_locked(context.original_exception):
        return CatalogLocked(locked_message(context.engine.url))
    return None


@functools.cache
def _catalog(name: str, properties: tuple[tuple[str, str], ...]) -> Catalog:
    """One catalog per configuration and process: its SQL engine and connection pool are reused by every
    step, check and command rather than opened (and left to the garbage collector) each time. A changed
    configuration (URI, warehouse, ``s3.*`` settings) is another key, so it is always seen."""
    catalog = load_catalog(name, **dict(properties))
    engine = getattr(catalog, "engine", None)  # SQL catalogs only
    if engine is not None and engine.dialect.name == "sqlite":
        sqlalchemy.event.listen(engine, "handle_error", _name_a_locked_catalog)
    return catalog


def open_catalog(name: str, uri: str, warehouse: str) -> Catalog:
    """Load the catalog named ``name``; the URI scheme picks SQL (sqlite, postgresql) or REST (http).

    Failures a user causes and can fix (a bad URI, a server that is down or refuses, a SQLite file
    that cannot be created or opened) are one ``CatalogUnavailable``, naming the URI without its
    password; the original error stays chained for a Dagster run's stack trace.
    """
    shown = redact(uri)
    if problem := catalog_uri_problem(uri):
        raise CatalogUnavailable(f"cannot open the Iceberg catalog {shown}: {problem}")
    try:
        if uri.startswith("sqlite:///"):
            # The embedded default must work on a fresh machine: create the folder the SQLite file lives in.
            # SQLAlchemy's reading: sqlite:///relative/catalog.db is relative, sqlite:////abs/catalog.db absolute.
            path = make_url(uri).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        return _catalog(name, tuple(sorted(catalog_properties(name, uri, warehouse).items())))
    except (
        OSError,  # a folder that cannot be created; requests' ConnectionError is an OSError too
        ModuleNotFoundError,  # postgresql+DRIVER with DRIVER not installed
        sqlalchemy.exc.ArgumentError,  # includes NoSuchModuleError (an unknown dialect or driver)
        sqlalchemy.exc.DBAPIError,  # OperationalError (unreachable, unopenable), ProgrammingError (no rights)
        RESTError,  # a REST catalog that answers with an error
        ValidationError,  # an HTTP server that is not an Iceberg REST catalog
    ) as exc:
        if uri.startswith("sqlite") and _is_locked(exc):
            raise CatalogLocked(locked_message(make_url(catalog_properties(name, uri, warehouse)["uri"]))) from exc
        problem = _first_line(exc, urlsplit(uri).password)
        raise CatalogUnavailable(
            f"cannot open the Iceberg catalog {shown}: {problem}; {_what_to_do(uri, exc, name)}"
        ) from exc


def ensure_namespace(catalog: Catalog, namespace: str) -> None:
    """Create ``namespace`` unless it exists. Two first runs at once both see it missing and both create it:
    the SQL catalog refuses the second insert (a unique-key violation, not PyIceberg's "already exists"),
    and the run that lost finds the namespace made and carries on."""
    try:
        catalog.create_namespace_if_not_exists(namespace)
    except sqlalchemy.exc.IntegrityError:
        if not catalog.namespace_exists(namespace):
            raise


def table_name(table: Table) -> str:
    """A table's name as people write it: ``music.plays``."""
    return ".".join(table.name())


def _metadata_problem(exc: BaseException) -> str:
    """What is wrong with a metadata file PyIceberg could not parse, in a few words."""
    cause = exc.__cause__
    if isinstance(cause, pydantic.ValidationError) and cause.errors():
        return cause.errors()[0]["msg"]
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def load_table(catalog: Catalog, name: str) -> Table:
    """``catalog.load_table``; a current metadata file that cannot be read is one ``TableUnreadable`` naming the table.

    The catalog only points at the file: missing (deleted by hand, a restore that missed it), truncated
    (a full disk) or damaged, the table cannot be read until it is back. ``NoSuchTableError`` and the
    catalog's own errors pass through.
    """
    try:
        return catalog.load_table(name)
    except FileNotFoundError as exc:
        # PyArrow: "[Errno 2] Failed to open local file '/path'. Detail: ..."; name the path alone when it can.
        text = str(exc)
        start, end = text.find("'"), text.rfind("'. Detail")
        where = text[start + 1 : end] if 0 <= start < end else _metadata_problem(exc)
        raise TableUnreadable(
            f"{name}: its current metadata file is missing ({where}); restore it from a backup"
        ) from exc
    except (MetadataValidationError, UnicodeDecodeError) as exc:
        raise TableUnreadable(
            f"{name}: its current metadata file is truncated or damaged ({_metadata_problem(exc)}); "
            "restore it from a backup"
        ) from exc
    except OSError as exc:  # no permission, an object store that refuses
        raise TableUnreadable(f"{name}: its current metadata file cannot be read ({_metadata_problem(exc)})") from exc
