"""The stores' contract (``tests/store_contract.py``) against real servers: the SQL store on
PostgreSQL (a database of its own per test), the S3 artifact store on moto's S3 server (a
bucket of its own per test). Then what only a real server shows: a lease row locked by a fenced
commit, processes racing for a lease, a connection the server drops."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.config.sql.base import fence
from openanomaly.adapters.config.sql.schema import leases
from openanomaly.errors import StoreUnavailable
from tests.cluster_servers import Postgres
from tests.store_contract import (
    Backend,
    Clock,
    JobHistoryContract,
    LeaseContract,
    OutcomeContract,
    RegistryContract,
    SourcedPipelineStoreContract,
    pipeline,
)


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


class TestPostgres(
    SourcedPipelineStoreContract,
    RegistryContract,
    LeaseContract,
    OutcomeContract,
    JobHistoryContract,
):
    @pytest.fixture
    def backend(self, postgres: Postgres) -> Iterator[Backend]:
        b = Backend(lambda clock: SqlStore(postgres.url, clock=clock))
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
