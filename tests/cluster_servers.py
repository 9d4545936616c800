"""The cluster's real servers for tests: PostgreSQL, Redis, RabbitMQ (started before the session
on this kind of machine, or by ``scripts/setup --services``) and an S3 endpoint (moto's server,
started here on a free port). Each test run keeps to its own database, Redis database and key
prefix, RabbitMQ vhost and S3 bucket, and removes them afterwards.

A server that does not answer fails the test with the command that installs and starts it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import redis

from tests.servers import free_port

SETUP = "scripts/setup --services (apt-get install -y postgresql redis-server rabbitmq-server)"
HOST = "127.0.0.1"
PORTS = {"postgresql": 5432, "redis": 6379, "rabbitmq": 5672}


def require(name: str) -> None:
    """Fail (not skip) when ``name`` does not answer on its loopback port."""
    try:
        with socket.create_connection((HOST, PORTS[name]), timeout=3):
            return
    except OSError as exc:
        pytest.fail(f"{name} does not answer on {HOST}:{PORTS[name]} ({exc}): {SETUP}", False)


def run_id() -> str:
    return uuid.uuid4().hex[:10]


# --- PostgreSQL -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Postgres:
    """A database of its own: ``url`` for the SQL store (``postgresql+psycopg://``)."""

    name: str
    url: str


def _admin() -> psycopg.Connection[Any]:
    return psycopg.connect(
        f"host={HOST} port={PORTS['postgresql']} user=postgres dbname=postgres", autocommit=True
    )


def create_postgres_database() -> Postgres:
    require("postgresql")
    name = f"oa_test_{run_id()}"
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    return Postgres(name, f"postgresql+psycopg://postgres@{HOST}:{PORTS['postgresql']}/{name}")


def drop_postgres_database(db: Postgres) -> None:
    with _admin() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)'.encode())


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A fresh PostgreSQL database, dropped after the test."""
    db = create_postgres_database()
    yield db
    drop_postgres_database(db)


# --- Redis ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redis:
    """``url`` of the shared Redis and a ``prefix`` every key of this test starts with (queue
    names, RedBeat's keys); ``clean()`` deletes them."""

    url: str
    prefix: str

    def keys(self) -> list[str]:
        client = redis.Redis.from_url(self.url)
        try:
            return sorted(k.decode() for k in client.scan_iter(match=f"*{self.prefix}*"))
        finally:
            client.close()

    def clean(self) -> None:
        client = redis.Redis.from_url(self.url)
        try:
            for key in client.scan_iter(match=f"*{self.prefix}*"):
                client.delete(key)
        finally:
            client.close()


@pytest.fixture
def redis_server() -> Iterator[Redis]:
    require("redis")
    r = Redis(f"redis://{HOST}:{PORTS['redis']}/0", f"oa-test-{run_id()}")
    yield r
    r.clean()


# --- RabbitMQ ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RabbitMQ:
    """A vhost of its own on the shared broker: ``url`` is ``amqp://guest:guest@.../<vhost>``."""

    vhost: str
    url: str


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def rabbitmq() -> Iterator[RabbitMQ]:
    require("rabbitmq")
    vhost = f"oa-test-{run_id()}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield RabbitMQ(vhost, f"amqp://guest:guest@{HOST}:{PORTS['rabbitmq']}/{vhost}")
    _rabbitmqctl("delete_vhost", vhost)


# --- S3 (moto's server) -----------------------------------------------------------------------


@dataclass
class S3Server:
    """moto's S3 server on a free loopback port; ``bucket()`` makes a fresh bucket."""

    endpoint_url: str
    process: subprocess.Popen[bytes] = field(repr=False)
    access_key_id: str = "testing"
    secret_access_key: str = "testing"
    region: str = "us-east-1"

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=self.region,
        )

    def bucket(self) -> str:
        name = f"oa-test-{run_id()}"
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_s3() -> S3Server:
    port = free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"moto's S3 server exited with {process.returncode}: uv sync --dev", False)
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return S3Server(f"http://{HOST}:{port}", process)
        except OSError:
            time.sleep(0.2)
    process.kill()
    pytest.fail("moto's S3 server did not start in 30 s", False)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3()
    yield server
    server.stop()


# --- private servers a test may stop and start ------------------------------------------------


def _listens(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class PrivateServer:
    """A server of the test's own on a free port, which it may ``restart()`` under load without
    disturbing the shared one."""

    name: str
    port: int
    workdir: Path
    argv: list[str]
    user: str | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    home: Path | None = None  # removed by ``stop(remove=True)``
    ready: Callable[[int], bool] = field(default=_listens, repr=False)
    """Whether the server on this port serves: by default, that it accepts a connection."""

    def start(self) -> None:
        argv = ["runuser", "-u", self.user, "--", *self.argv] if self.user else self.argv
        with (self.workdir / f"{self.name}.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited: {self.log()}", False)
            if self.ready(self.port):
                return
            time.sleep(0.1)
        pytest.fail(f"{self.name} did not serve on {self.port} in 60 s: {self.log()}", False)

    def stop(self, *, remove: bool = False) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        if remove and self.home is not None:
            shutil.rmtree(self.home, ignore_errors=True)

    def restart(self, down: float = 0.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()

    def log(self) -> str:
        path = self.workdir / f"{self.name}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def start_private_redis(workdir: Path) -> PrivateServer:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(f"redis-server is not installed: {SETUP}", False)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = PrivateServer(
        "redis",
        port,
        workdir,
        [binary, "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no"],
    )
    server.start()
    return server


def start_private_postgres(workdir: Path) -> PrivateServer:
    """A PostgreSQL cluster in ``workdir`` (trust auth, user ``postgres``); as root it runs as
    the ``postgres`` system user, as PostgreSQL requires."""
    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.fail(f"PostgreSQL is not installed: {SETUP}", False)
    bindir = bins[-1].parent
    user = "postgres" if os.geteuid() == 0 else None
    workdir.mkdir(parents=True, exist_ok=True)
    # pytest's temp folders are private to root: the postgres user gets a folder of its own.
    home = Path(tempfile.mkdtemp(prefix="oa-pg-"))
    home.chmod(0o755)
    data = home / "pgdata"
    data.mkdir()
    if user:
        shutil.chown(home, user)
        shutil.chown(data, user)
    init = [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust"]
    subprocess.run(
        ["runuser", "-u", user, "--", *init] if user else init,
        check=True,
        capture_output=True,
        timeout=120,
    )
    port = free_port()
    server = PrivateServer(
        "postgres",
        port,
        workdir,
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(home),
            "-c",
            f"listen_addresses={HOST}",
            "-c",
            "fsync=off",
        ],
        user=user,
        home=home,
        # It listens before it serves: "the database system is starting up".
        ready=_postgres_serves,
    )
    server.start()
    return server


def _postgres_serves(port: int) -> bool:
    try:
        with psycopg.connect(
            f"host={HOST} port={port} user=postgres dbname=postgres", connect_timeout=2
        ):
            return True
    except psycopg.OperationalError:
        return False
