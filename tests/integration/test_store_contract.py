"""The stores' contract (``tests/store_contract.py``) against real servers: the SQL store on
PostgreSQL (a database of its own per test), the S3 artifact store on moto's S3 server (a
bucket of its own per test). Then what only a real server shows: a lease row locked by a fenced
commit, processes racing for a lease, a connection the server drops."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest

from openanomaly.adapters.artifacts.s3 import S3ArtifactStore
from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.config.sql.base import fence
from openanomaly.adapters.config.sql.schema import leases
from openanomaly.adapters.memory import MemoryEngineFactory, MemoryMetrics, MemoryRegistry
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import StoreError, StoreUnavailable
from openanomaly.services.trainer import Trainer
from tests.cluster_servers import Postgres, S3Server
from tests.integration.test_sql_store import closed_port
from tests.store_contract import (
    ArtifactContract,
    Backend,
    Clock,
    InterleavedLeaseContract,
    JobHistoryContract,
    LeaseContract,
    OutcomeContract,
    RegistryContract,
    SourcedPipelineStoreContract,
    pipeline,
    sql_interleave,
)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


class TestPostgres(
    SourcedPipelineStoreContract,
    RegistryContract,
    LeaseContract,
    InterleavedLeaseContract,
    OutcomeContract,
    JobHistoryContract,
):
    @pytest.fixture
    def backend(self, postgres: Postgres) -> Iterator[Backend]:
        b = Backend(lambda clock: SqlStore(postgres.url, clock=clock), interleave=sql_interleave)
        yield b
        b.close()


def test_a_takeover_waits_for_the_fenced_commit(postgres: Postgres) -> None:
    # "a" checks its lease and commits in one transaction; "b" may take the expired lease only
    # once that transaction has ended, never between the check and the commit.
    clock = Clock()
    a, b = SqlStore(postgres.url, clock=clock), SqlStore(postgres.url, clock=clock)
    try:
        assert a.acquire("p", "a", ttl=60)
        clock.now += 61
        taken: list[bool] = []
        with a._tx(write=True) as conn:
            fence(conn, leases, "p", "a")
            racer = threading.Thread(target=lambda: taken.append(b.acquire("p", "b", ttl=60)))
            racer.start()
            racer.join(timeout=1.0)
            assert racer.is_alive() and taken == []  # blocked on the row lock
        racer.join(timeout=10)
        assert taken == [True] and a.state("p").owner == "b"
    finally:
        a.close()
        b.close()


def _race(url: str, owner: str, start: float, rounds: int, out: Any) -> None:
    clock = Clock()
    store = SqlStore(url, clock=clock)
    won = []
    for round_ in range(rounds):
        clock.now = 1_700_000_000.0 + 100 * round_  # every round the last lease has expired
        while time.time() < start + 0.25 * round_:
            time.sleep(0.001)
        if store.acquire("p", f"{owner}-{round_}", ttl=60):
            won.append(round_)
    store.close()
    out.put((owner, won))


def test_processes_racing_for_a_lease_have_one_winner_per_round(postgres: Postgres) -> None:
    setup = SqlStore(postgres.url)
    setup.list()  # the tables, before the racers start
    setup.close()
    rounds, racers = 12, 4
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    start = time.time() + 20  # spawned interpreters need a moment to import
    procs = [
        ctx.Process(target=_race, args=(postgres.url, f"p{i}", start, rounds, out))
        for i in range(racers)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=10)
    assert [p.exitcode for p in procs] == [0] * racers

    per_round = {r: [o for o, won in results.items() if r in won] for r in range(rounds)}
    assert all(len(w) == 1 for w in per_round.values()), per_round


def test_a_dropped_connection_is_unavailable_once_then_recovered(postgres: Postgres) -> None:
    store = SqlStore(postgres.url)
    try:
        store.put(pipeline("a"))

        # The server drops every connection of the pool (as a restart does) between calls:
        # the pool's ping finds them dead and the next call reconnects without an error.
        _terminate_backends(postgres)
        assert store.list() == [pipeline("a")]

        # Dropped in the middle of a call: that call fails as StoreUnavailable, the next works.
        with (
            pytest.raises(StoreUnavailable, match="terminat") as caught,
            store._tx() as conn,
        ):
            _terminate_backends(postgres)
            conn.exec_driver_sql("SELECT 1")
        assert caught.value.store == "database"
        assert store.list() == [pipeline("a")]
        store.advance("a", 60)
        assert store.last_end("a") == 60
    finally:
        store.close()


def _terminate_backends(postgres: Postgres) -> None:
    with psycopg.connect(_plain(postgres.url).rsplit("/", 1)[0] + "/postgres") as admin:
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (postgres.name,),
        ).fetchall()
    assert killed and all(ok for (ok,) in killed)


# -- S3 (moto's server) ------------------------------------------------------------------------


class TestS3Artifacts(ArtifactContract):
    @pytest.fixture
    def backend(self, s3_server: S3Server) -> Iterator[Backend]:
        bucket = s3_server.bucket()
        b = Backend(lambda _clock: s3_store(s3_server, bucket))
        yield b
        b.close()


def s3_store(server: S3Server, bucket: str, **kwargs: Any) -> S3ArtifactStore:
    values: dict[str, Any] = {
        "prefix": "oa/",
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "access_key_id": server.access_key_id,
        "secret_access_key": server.secret_access_key,
    }
    return S3ArtifactStore(bucket, **(values | kwargs))


def test_s3_keys_are_under_the_prefix(s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    s3_store(s3_server, bucket, prefix="team/oa/").save("pipelines/a/v1.bin", b"x")

    listed = s3_server.client().list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in listed] == ["team/oa/pipelines/a/v1.bin"]


def test_s3_failures_are_store_errors_without_credentials(s3_server: S3Server) -> None:
    missing = s3_store(
        s3_server, "no-such-bucket-" + uuid.uuid4().hex[:8], secret_access_key="s3cr3t"
    )
    with pytest.raises(StoreError, match="NoSuchBucket") as caught:
        missing.save("pipelines/a/v1.bin", b"x")
    assert not isinstance(caught.value, StoreUnavailable) and caught.value.store == "artifacts"
    assert "s3cr3t" not in str(caught.value)

    down = s3_store(s3_server, "b", endpoint_url=f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(StoreUnavailable) as unreachable:
        down.load("pipelines/a/v1.bin")
    assert "testing" not in str(unreachable.value)


def test_a_model_version_keeps_its_own_artifact(s3_server: S3Server) -> None:
    # The Trainer's key carries the version: training again writes another object, and the
    # artifact of the version a rollback goes back to is still the one it saved.
    store = s3_store(s3_server, s3_server.bucket())
    registry = MemoryRegistry()
    t0 = 1_699_999_200
    ts = np.arange(t0, t0 + 6 * 3600, 60)
    values = 100 + np.random.default_rng(0).normal(0, 1, size=(2, ts.size))
    batch = SeriesBatch(({"__name__": "m", "i": "0"}, {"__name__": "m", "i": "1"}), ts, values)
    trainer = Trainer(
        reader=MemoryMetrics({"m": batch}),
        engines=MemoryEngineFactory(),
        artifacts=store,
        registry=registry,
    )
    spec = Pipeline.model_validate(
        {"id": "p", "query": "m", "step": "1m", "train": {"window": "2h"}}
    )

    first = trainer.train(spec, end=t0 + 3 * 3600)
    saved = store.load(first.artifact or "")
    second = trainer.train(spec, end=t0 + 4 * 3600)

    assert first.artifact != second.artifact
    assert store.load(first.artifact or "") == saved
    assert [v.version for v in registry.versions("p")] == [second.version, first.version]
