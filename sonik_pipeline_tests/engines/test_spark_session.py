"""The Spark engine's session configuration, from the same settings PyIceberg opens the catalog with (no JVM)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from sonik_pipeline.engines import spark_session
from sonik_pipeline.engines.spark_session import SparkNotReady, catalog_conf, session_conf
from sonik_pipeline.settings import Settings, SettingsError

C = "spark.sql.catalog.sonik"


def test_sqlite_and_postgres_catalogs_become_iceberg_jdbc_catalogs_of_the_same_name() -> None:
    sqlite = catalog_conf("sonik", "sqlite:////data/lake/catalog.db", "file:///data/lake/warehouse", {})
    assert sqlite[C] == "org.apache.iceberg.spark.SparkCatalog"
    assert (sqlite[f"{C}.type"], sqlite[f"{C}.uri"]) == ("jdbc", "jdbc:sqlite:/data/lake/catalog.db")
    assert sqlite[f"{C}.warehouse"] == "file:///data/lake/warehouse"
    assert sqlite[f"{C}.cache-enabled"] == "false"

    postgres = catalog_conf("sonik", "postgresql+psycopg://sonik:s3cret@db.internal:6432/lake", "s3://lake/wh", {})
    assert postgres[f"{C}.uri"] == "jdbc:postgresql://db.internal:6432/lake"
    assert (postgres[f"{C}.jdbc.user"], postgres[f"{C}.jdbc.password"]) == ("sonik", "s3cret")
    assert postgres[f"{C}.io-impl"] == "org.apache.iceberg.aws.s3.S3FileIO"


def test_a_rest_catalog_keeps_its_credential_and_pyicebergs_s3_settings() -> None:
    properties = {"credential": "id:secret", "s3.endpoint": "http://127.0.0.1:8333", "s3.region": "us-east-1"}
    rest = catalog_conf("sonik", "http://127.0.0.1:8181", "s3://lake", properties)
    assert (rest[f"{C}.type"], rest[f"{C}.uri"], rest[f"{C}.credential"]) == (
        "rest",
        "http://127.0.0.1:8181",
        "id:secret",
    )
    assert (rest[f"{C}.s3.endpoint"], rest[f"{C}.client.region"]) == ("http://127.0.0.1:8333", "us-east-1")

    # A warehouse the catalog's settings name (catalog_properties' "warehouse") is the Spark catalog's too;
    # the files are still on S3 under SONIK_WAREHOUSE, so Iceberg's S3FileIO reads them
    named = catalog_conf("sonik", "http://127.0.0.1:8181", "s3://lake", {**properties, "warehouse": "lake"})
    assert (named[f"{C}.warehouse"], named[f"{C}.io-impl"]) == ("lake", "org.apache.iceberg.aws.s3.S3FileIO")


def test_spark_connect_names_the_server_and_no_jars_while_packages_replace_the_offline_jars() -> None:
    common = {"catalog_name": "sonik", "catalog_uri": "sqlite:////l/catalog.db", "warehouse": "file:///l/w"}
    remote = session_conf(
        **common, properties={}, master="local[*]", remote="sc://spark:15002", jars=[], packages=[], extra={}
    )
    assert remote["spark.remote"] == "sc://spark:15002"
    assert "spark.master" not in remote and "spark.jars" not in remote
    packaged = session_conf(
        **common,
        properties={},
        master="yarn",
        remote=None,
        jars=[],
        packages=[spark_session.RUNTIME_PACKAGE],
        extra={"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "400"},
    )
    assert (packaged["spark.master"], packaged["spark.jars.packages"]) == ("yarn", spark_session.RUNTIME_PACKAGE)
    assert "spark.jars" not in packaged
    assert (packaged["spark.executor.memory"], packaged["spark.sql.shuffle.partitions"]) == ("4g", "400")


def test_a_missing_runtime_or_driver_is_one_line_naming_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(spark_session, "SYSTEM_JARS", tmp_path)
    with pytest.raises(SparkNotReady, match=r"apt-get install libpostgresql-jdbc-java"):
        spark_session.offline_jars("postgresql+psycopg://localhost/lake")
    monkeypatch.setattr(spark_session, "RUNTIME_JAR", "iceberg-spark-runtime-0.0.jar")
    with pytest.raises(SparkNotReady, match=r"pip install 'snowpark-connect-deps-iceberg==1\.0\.2'"):
        spark_session.offline_jars("sqlite:////l/catalog.db")


def test_the_engine_settings_are_checked_at_load() -> None:
    spark = Settings.from_env(
        {"SONIK_ENGINE": "spark", "SONIK_SPARK_PACKAGES": "a:b:1, c:d:2", "SONIK_SPARK_CONF": '{"spark.x": 1}'}
    )
    assert (spark.engine, spark.spark_packages, spark.spark_conf) == ("spark", ("a:b:1", "c:d:2"), (("spark.x", "1"),))
    assert Settings.from_env({}).engine == "local"
    with pytest.raises(SettingsError) as refused:
        Settings.from_env({"SONIK_ENGINE": "flink", "SONIK_SPARK_REMOTE": "http://x", "SONIK_SPARK_CONF": "[]"})
    assert str(refused.value).splitlines() == [
        "SONIK_ENGINE='flink': expected one of local, spark",
        "SONIK_SPARK_REMOTE='http://x': expected a Spark Connect URL, e.g. sc://spark-connect.internal:15002",
        """SONIK_SPARK_CONF='[]': expected a JSON object of Spark settings, e.g. {"spark.executor.memory": "4g"}""",
    ]


def _jar(path: Path, *entries: str) -> str:
    with zipfile.ZipFile(path, "w") as jar:
        for entry in entries:
            jar.writestr(entry, b"")
    return str(path)


def test_an_s3_warehouse_without_the_aws_sdk_on_a_local_class_path_is_one_line_naming_the_jar(tmp_path: Path) -> None:
    # Given a REST catalog with its warehouse on S3, and the runtime jar alone (as the offline wheel gives it)
    runtime = _jar(tmp_path / spark_session.RUNTIME_JAR, "org/apache/iceberg/aws/s3/S3FileIO.class")
    rest = {
        "catalog_name": "sonik",
        "catalog_uri": "http://127.0.0.1:8181",
        "warehouse": "s3://lake",
        "properties": {"warehouse": "lake", "s3.endpoint": "http://127.0.0.1:8333"},
        "remote": None,
        "packages": [],
        "extra": {},
    }

    # When a local session is configured, Then it is refused before any JVM starts, naming the jar and the package
    with pytest.raises(SparkNotReady) as refused:
        session_conf(**rest, master="local[2]", jars=[runtime])
    assert str(refused.value) == (
        "an s3:// warehouse on the Spark engine needs Iceberg's AWS bundle iceberg-aws-bundle-1.10.2.jar (S3FileIO's "
        "AWS SDK), which no PyPI wheel ships: name org.apache.iceberg:iceberg-aws-bundle:1.10.2 in "
        "SONIK_SPARK_PACKAGES, or its jar in SONIK_SPARK_JARS"
    )

    # And with the bundle's jar, its package, on a cluster or through Spark Connect, the session is configured
    bundle = _jar(tmp_path / "iceberg-aws-bundle-1.10.2.jar", "software/amazon/awssdk/services/s3/S3Client.class")
    assert session_conf(**rest, master="local[2]", jars=[runtime, bundle])[f"{C}.io-impl"] == spark_session.S3_FILE_IO
    packaged = {**rest, "packages": [spark_session.RUNTIME_PACKAGE, spark_session.AWS_BUNDLE_PACKAGE]}
    assert session_conf(**packaged, master="local[2]", jars=[])["spark.jars.packages"].endswith("aws-bundle:1.10.2")
    assert session_conf(**rest, master="yarn", jars=[runtime])["spark.master"] == "yarn"
    assert session_conf(**{**rest, "remote": "sc://spark:15002"}, master="local[2]", jars=[])["spark.remote"]
    # a local warehouse needs no S3FileIO, so nothing more
    local = {**rest, "warehouse": (tmp_path / "wh").as_uri(), "properties": {}}
    assert f"{C}.io-impl" not in session_conf(**local, master="local[2]", jars=[runtime])
    # ... nor with S3 settings for a landing zone on S3: each path is read by its scheme's FileIO
    landing_on_s3 = {**local, "properties": rest["properties"]}
    assert session_conf(**landing_on_s3, master="local[2]", jars=[runtime])[f"{C}.io-impl"] == (
        spark_session.RESOLVING_FILE_IO
    )


def test_a_local_master_gets_2_gib_of_heap_a_task_slot_within_half_the_memory_and_a_cluster_none() -> None:
    assert spark_session.local_driver_memory("local[2]", memory_mib=64_000) == "4096m"
    assert spark_session.local_driver_memory("local", memory_mib=64_000) == "2048m"
    assert spark_session.local_driver_memory("local[*]", cores=8, memory_mib=64_000) == "16384m"
    assert spark_session.local_driver_memory("local[4,3]", memory_mib=64_000) == "8192m"
    assert spark_session.local_driver_memory("local[8]", memory_mib=8_000) == "4000m"  # half of a small machine
    assert spark_session.local_driver_memory("local[1]", memory_mib=1_000) == "1024m"  # never below Spark's own
    assert spark_session.local_driver_memory("yarn") is None
    assert spark_session.local_driver_memory("spark://host:7077") is None


def test_the_local_heap_is_in_the_session_conf_and_the_users_own_setting_wins(tmp_path: Path) -> None:
    runtime = tmp_path / "iceberg-spark-runtime.jar"
    runtime.write_bytes(b"")
    base = {
        "catalog_name": "sonik",
        "catalog_uri": "http://127.0.0.1:8181",
        "warehouse": str(tmp_path),
        "properties": {},
        "remote": None,
        "packages": [],
    }
    ours = session_conf(**base, master="local[2]", jars=[str(runtime)], extra={})
    assert ours["spark.driver.memory"] == spark_session.local_driver_memory("local[2]")
    theirs = session_conf(**base, master="local[2]", jars=[str(runtime)], extra={"spark.driver.memory": "6g"})
    assert theirs["spark.driver.memory"] == "6g"
    assert "spark.driver.memory" not in session_conf(**base, master="yarn", jars=[str(runtime)], extra={})
