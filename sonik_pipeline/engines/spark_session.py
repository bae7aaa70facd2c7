"""How a Spark session reaches this lakehouse: the catalog as Iceberg's Spark catalog named like ours, and the jars.

Pure functions from the project's settings to Spark configuration, so they are tested without a JVM:

- the catalog: SQLite and PostgreSQL through Iceberg's JDBC catalog (it reads and writes the same
  ``iceberg_tables`` rows PyIceberg's SQL catalog does, under the same catalog name), REST as REST; the
  warehouse and PyIceberg's ``s3.*`` settings carried over;
- the jars: in production Maven coordinates (``spark.jars.packages``) or a cluster's own; offline, the
  Iceberg Spark runtime from PyPI's ``snowpark-connect-deps-iceberg`` wheel and the JDBC drivers from
  Debian's ``libpostgresql-jdbc-java`` and ``libxerial-sqlite-jdbc-java``. An ``s3://`` warehouse also needs
  ``iceberg-aws-bundle``, which no PyPI wheel ships: a local session without it is refused before its JVM starts.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import re
import sqlite3
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from sqlalchemy.engine import make_url

ICEBERG_VERSION = "1.10.2"
RUNTIME_JAR = f"iceberg-spark-runtime-3.5_2.12-{ICEBERG_VERSION}.jar"
RUNTIME_PACKAGE = f"org.apache.iceberg:iceberg-spark-runtime-3.5_2.12:{ICEBERG_VERSION}"
OFFLINE_RUNTIME_WHEEL = "snowpark-connect-deps-iceberg==1.0.2"  # 1.0.3 strips shaded classes: it fails
# Iceberg's S3FileIO is in the runtime jar, but the AWS SDK v2 it calls is not: that is iceberg-aws-bundle, which
# no PyPI wheel ships (see docs/production.md), so an s3:// warehouse on Spark needs it from Maven or a jar.
S3_FILE_IO = "org.apache.iceberg.aws.s3.S3FileIO"
# Iceberg's FileIO that picks one by each path's scheme: S3FileIO (and so the AWS SDK) only for s3:// paths.
RESOLVING_FILE_IO = "org.apache.iceberg.io.ResolvingFileIO"
AWS_BUNDLE_JAR = f"iceberg-aws-bundle-{ICEBERG_VERSION}.jar"
AWS_BUNDLE_PACKAGE = f"org.apache.iceberg:iceberg-aws-bundle:{ICEBERG_VERSION}"
_AWS_SDK_S3_CLIENT = "software/amazon/awssdk/services/s3/S3Client.class"  # in the bundle, or the SDK's own jars
SYSTEM_JARS = Path("/usr/share/java")
JDBC_DRIVERS = {  # catalog URI scheme -> (driver jar under /usr/share/java, the Debian package that installs it)
    "sqlite": ("sqlite-jdbc.jar", "libxerial-sqlite-jdbc-java"),
    "postgresql": ("postgresql.jar", "libpostgresql-jdbc-java"),
}
SQLITE_BUSY_TIMEOUT_MS = "30000"  # as PyIceberg's side waits: a catalog briefly locked by another writer is waited for

# PyIceberg's s3.* settings and their names in Iceberg's Java S3FileIO (most are the same).
_S3_PROPERTIES = {
    "s3.endpoint": "s3.endpoint",
    "s3.access-key-id": "s3.access-key-id",
    "s3.secret-access-key": "s3.secret-access-key",
    "s3.session-token": "s3.session-token",
    "s3.path-style-access": "s3.path-style-access",
    "s3.region": "client.region",
}
_REST_PROPERTIES = ("credential", "token", "scope", "oauth2-server-uri", "prefix", "header.X-Iceberg-Access-Delegation")

# Spark's defaults suit a cluster; these suit a maintenance step on one machine and are overridable.
LOCAL_DEFAULTS = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "8",
    "spark.sql.session.timeZone": "UTC",
}


# A local master's JVM is both driver and executor: it gets this much heap a task slot. Spark's default, 1 GiB
# for all the slots together, kept the marts collecting garbage: a 10M-event day's daily marts took 241 s on
# local[1] and 166 s on local[2] with it, 181 s and 103 s with 4 GiB (2026-12-07, benchmarks/engines.py).
LOCAL_HEAP_PER_SLOT_MIB = 2048
_LOCAL_MASTER = re.compile(r"local(?:\[(\d+|\*)(?:,\d+)?\])?")


def local_task_slots(master: str, cores: int | None = None) -> int | None:
    """The task slots of a ``local`` master (``local``: one; ``local[*]``: one a core); None for any other."""
    match = _LOCAL_MASTER.fullmatch(master.strip())
    if not match:
        return None
    threads = match.group(1)
    if threads is None:
        return 1
    return (cores or os.cpu_count() or 1) if threads == "*" else int(threads)


def local_driver_memory(master: str, cores: int | None = None, memory_mib: int | None = None) -> str | None:
    """``spark.driver.memory`` for a ``local`` master: 2 GiB a task slot, at most half the machine's memory
    (never less than Spark's own 1 GiB); None for any other master, whose executors have their own."""
    slots = local_task_slots(master, cores)
    if slots is None:
        return None
    if memory_mib is None:
        memory_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    return f"{max(1024, min(LOCAL_HEAP_PER_SLOT_MIB * slots, memory_mib // 2))}m"


class SparkNotReady(RuntimeError):
    """Something the Spark engine needs is missing: the message names what to install or set."""


def catalog_conf(catalog_name: str, catalog_uri: str, warehouse: str, properties: Mapping[str, str]) -> dict[str, str]:
    """``spark.sql.catalog.<name>.*`` for the catalog PyIceberg opens from the same settings.

    ``warehouse`` is the storage root (``SONIK_WAREHOUSE``); the catalog's own warehouse is the one in
    ``properties`` (``catalog_properties``), a REST catalog's warehouse name when one is configured.
    """
    prefix = f"spark.sql.catalog.{catalog_name}"
    conf = {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.warehouse": properties.get("warehouse") or warehouse,
        # Another engine commits to the same tables: always read the catalog, never a cached table.
        f"{prefix}.cache-enabled": "false",
    }
    scheme = catalog_uri.split(":", 1)[0].split("+", 1)[0]
    if scheme == "sqlite":
        conf |= {
            f"{prefix}.type": "jdbc",
            f"{prefix}.uri": f"jdbc:sqlite:{make_url(catalog_uri).database}",
            f"{prefix}.jdbc.busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
        }
    elif scheme == "postgresql":
        url = make_url(catalog_uri)
        query = "&".join(f"{k}={v}" for k, v in url.query.items())
        conf |= {
            f"{prefix}.type": "jdbc",
            f"{prefix}.uri": f"jdbc:postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database}"
            + (f"?{query}" if query else ""),
        }
        if url.username:
            conf[f"{prefix}.jdbc.user"] = url.username
        if url.password:
            conf[f"{prefix}.jdbc.password"] = url.password
    elif scheme in ("http", "https"):
        conf |= {f"{prefix}.type": "rest", f"{prefix}.uri": catalog_uri}
        conf |= {f"{prefix}.{key}": properties[key] for key in _REST_PROPERTIES if key in properties}
    else:
        raise SparkNotReady(f"the Spark engine cannot reach a catalog at {scheme}://... (SQLite, PostgreSQL or REST)")
    s3 = {java: properties[ours] for ours, java in _S3_PROPERTIES.items() if ours in properties}
    if warehouse.startswith(("s3://", "s3a://")):
        conf[f"{prefix}.io-impl"] = S3_FILE_IO
    elif s3:  # S3 settings beside a local warehouse (a landing zone on S3): each path by its own scheme
        conf[f"{prefix}.io-impl"] = RESOLVING_FILE_IO
    conf |= {f"{prefix}.{key}": value for key, value in s3.items()}
    return conf


def offline_jars(catalog_uri: str) -> list[str]:
    """The runtime jar from the PyPI wheel and the catalog's JDBC driver from the system, each checked present."""
    spec = importlib.util.find_spec("snowpark_connect_deps_iceberg")
    runtime = Path(spec.origin).parent / "jars" / RUNTIME_JAR if spec and spec.origin else None
    if runtime is None or not runtime.is_file():
        raise SparkNotReady(
            f"the Iceberg Spark runtime {RUNTIME_JAR} is not installed: pip install '{OFFLINE_RUNTIME_WHEEL}' "
            f"(in the project: pip install '.[spark]'), or name the package {RUNTIME_PACKAGE} in SONIK_SPARK_PACKAGES"
        )
    scheme = catalog_uri.split(":", 1)[0].split("+", 1)[0]
    if scheme in JDBC_DRIVERS:
        jar, package = JDBC_DRIVERS[scheme]
        if not (SYSTEM_JARS / jar).is_file():
            raise SparkNotReady(
                f"the {scheme} JDBC driver {SYSTEM_JARS / jar} is missing: apt-get install {package} "
                "(or name the driver's jar in SONIK_SPARK_JARS)"
            )
    # Every driver there is, not only this catalog's: Java's DriverManager learns its drivers once per JVM,
    # and a process that opens another catalog later (a test session) keeps the JVM of its first.
    drivers = [str(SYSTEM_JARS / jar) for jar, _ in JDBC_DRIVERS.values() if (SYSTEM_JARS / jar).is_file()]
    return [str(runtime), *drivers]


def session_conf(
    *,
    catalog_name: str,
    catalog_uri: str,
    warehouse: str,
    properties: Mapping[str, str],
    master: str,
    remote: str | None,
    jars: Sequence[str],
    packages: Sequence[str],
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The whole configuration of the engine's session: where it runs, its jars, the catalog, then the user's own."""
    conf = dict(LOCAL_DEFAULTS)
    if remote:  # Spark Connect: the server owns its jars and catalogs' classes; we only name the catalog
        conf["spark.remote"] = remote
    else:
        conf["spark.master"] = master
        if memory := local_driver_memory(master):
            conf["spark.driver.memory"] = memory  # SONIK_SPARK_CONF may set another
        if packages:
            conf["spark.jars.packages"] = ",".join(packages)
        # Jars given or packages named replace the offline ones; with neither, the offline ones are required.
        chosen = list(jars) or ([] if packages else offline_jars(catalog_uri))
        if chosen:
            conf["spark.jars"] = ",".join(chosen)
            # On the driver's own class path too: JDBC drivers must be visible to the system class loader.
            conf["spark.driver.extraClassPath"] = ":".join(chosen)
    conf["spark.sql.extensions"] = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
    conf |= catalog_conf(catalog_name, catalog_uri, warehouse, properties)
    conf |= dict(extra)
    check_s3_file_io(conf)
    return conf


def _holds(jar: str, entry: str) -> bool:
    try:
        with zipfile.ZipFile(jar) as archive:
            archive.getinfo(entry)
    except (OSError, KeyError, zipfile.BadZipFile):
        return False
    return True


def check_s3_file_io(conf: Mapping[str, str]) -> None:
    """Refuse, before a JVM starts, a local session whose catalog uses S3FileIO without the AWS SDK on its class path.

    Without it the session starts and the first table load fails deep in Java (``NoClassDefFoundError:
    software/amazon/awssdk/...``). Only a ``local`` master is checked: a cluster (or a Spark Connect server)
    brings jars of its own that this process cannot see.
    """
    if "spark.remote" in conf or not conf.get("spark.master", "").startswith("local"):
        return
    if not any(key.endswith(".io-impl") and value == S3_FILE_IO for key, value in conf.items()):
        return
    packages = conf.get("spark.jars.packages", "")
    if "iceberg-aws-bundle" in packages or "software.amazon.awssdk:" in packages:
        return
    named = [*conf.get("spark.jars", "").split(","), *conf.get("spark.driver.extraClassPath", "").split(":")]
    jars = {jar for entry in named if entry.strip() for jar in glob.glob(entry.strip().removeprefix("file://"))}
    if any(_holds(jar, _AWS_SDK_S3_CLIENT) for jar in jars):
        return
    raise SparkNotReady(
        f"an s3:// warehouse on the Spark engine needs Iceberg's AWS bundle {AWS_BUNDLE_JAR} (S3FileIO's AWS SDK), "
        f"which no PyPI wheel ships: name {AWS_BUNDLE_PACKAGE} in SONIK_SPARK_PACKAGES, or its jar in SONIK_SPARK_JARS"
    )


def local_executors_use_this_python(master: str, remote: str | None) -> None:
    """Make a local session's Python workers run this interpreter, where the project and its libraries are.

    PySpark starts them with ``PYSPARK_PYTHON`` (else whatever ``python3`` is first on the PATH, which a run
    started as ``.venv/bin/dagster`` without an activated environment does not see). A cluster's executors
    run the Python of their own image: the project must be installed there.
    """
    if not remote and master.startswith("local"):
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def share_sqlite_catalog(catalog_uri: str) -> None:
    """Put a SQLite catalog in WAL mode, so Spark's JDBC readers and PyIceberg's writers never block each other.

    In SQLite's default rollback journal a reader's open statement blocks every writer; Iceberg's JDBC
    catalog keeps one open for as long as the catalog lives. WAL lets one writer and any readers work at
    once, and is kept by the file; PyIceberg and the ``sqlite3`` shell read it as before.
    """
    if not catalog_uri.startswith("sqlite"):
        return
    path = make_url(catalog_uri).database
    if path and Path(path).is_file():
        with sqlite3.connect(path, timeout=float(SQLITE_BUSY_TIMEOUT_MS) / 1000) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
