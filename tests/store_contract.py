"""The stores' contract: the same assertions against every store of a role.

Each class holds the tests of one role and needs one fixture, ``backend``: a ``Backend`` whose
``new(clock)`` opens a store over the same data (memory: the same object; SQLite: another engine
on the same file; PostgreSQL: another pool on the same database; mongomock: another store on
the same client), as processes sharing a database see it. Each tier subclasses the classes
with its backends: memory, SQLite and mongomock in ``tests/unit/test_stores_contract.py``,
PostgreSQL and S3 (moto's server) in ``tests/integration/test_store_contract.py``.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
import sqlalchemy as sa

from openanomaly.domain.records import JobRun, ModelVersion
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import NotFound, PipelineBusy
from openanomaly.ports import (
    ArtifactStore,
    CheckpointStore,
    JobHistory,
    LeaseStore,
    ModelRegistry,
    OutcomeStore,
    PipelineStore,
)


class Registry(ModelRegistry, CheckpointStore, Protocol):
    """Both ports, as MemoryRegistry and the database stores implement them."""


class Leased(CheckpointStore, LeaseStore, Protocol):
    """Checkpoints, journal and leases, as MemoryRegistry and the database stores do."""


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


Interleave = Callable[[Any, Callable[[], object]], Callable[[], None]]
"""``interleave(store, action)``: run ``action`` (another process's write) right after the next
write statement ``store`` sends; returns what undoes it and waits for ``action`` to end."""


@dataclass
class Backend:
    """Opens stores over one set of data; closes what it opened at the end of the test.
    ``interleave``: how to land a write between two of a store's statements (None: the store
    has no such point, e.g. one lock around every call)."""

    open: Callable[[Clock], Any]
    closing: list[Any] = field(default_factory=list)
    interleave: Interleave | None = None

    def new(self, clock: Clock | None = None) -> Any:
        store = self.open(clock or Clock())
        self.closing.append(store)
        return store

    def close(self) -> None:
        for store in self.closing:
            close = getattr(store, "close", None)
            if close is not None:
                close()


def pipeline(pid: str, **fields: Any) -> Pipeline:
    return Pipeline.model_validate({"id": pid, "query": f"rate({pid}_total[5m])", **fields})


RICH = {
    "step": "1m",
    "train": {"window": "14d", "every": None, "cron": "0 3 * * *"},
    "infer": {"every": "5m", "context": "1d", "delay": "30s"},
    "model": {"engine": "statsforecast", "name": "AutoETS", "params": {"season_length": 1440}},
    "scoring": {"direction": "above", "interval": 0.95, "data_range": [0, None]},
    "outputs": {"labels": {"team": "payments"}, "pred": None},
    "enabled": False,
}


def version(pid: str, name: str, created_at: float = 1.0, **fields: Any) -> ModelVersion:
    values: dict[str, Any] = {
        "engine": "builtin",
        "model": "profile",
        "spec_hash": "abc123",
        "series": 12,
        "artifact": f"pipelines/{pid}/{name}.bin",
        "train_start": 1_700_000_000,
        "train_end": 1_701_209_600,
        "fit_seconds": 0.25,
        "extra": {},
    }
    return ModelVersion(pid, name, created_at, **(values | fields))


def sql_interleave(store: Any, action: Callable[[], object]) -> Callable[[], None]:
    """``Backend.interleave`` of the SQL store: ``action`` starts in a thread after the first
    write statement and is given a moment; a lock this store's transaction holds makes it
    wait for the commit, and nothing else would."""
    engine, threads = store.engine, list[threading.Thread]()

    def after(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if threads or not statement.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE")):
            return
        threads.append(threading.Thread(target=action))
        threads[0].start()
        threads[0].join(0.5)

    sa.event.listen(engine, "after_cursor_execute", after)

    def undo() -> None:
        sa.event.remove(engine, "after_cursor_execute", after)
        for t in threads:
            t.join(30)

    return undo


def mongo_interleave(store: Any, action: Callable[[], object]) -> Callable[[], None]:
    """``Backend.interleave`` of the MongoDB store: ``action`` runs right after the first write
    to the ``windows`` collection (each write is atomic; between two, anything may land)."""
    real, fired = store._db, list[object]()

    class Windows:
        def __getattr__(self, name: str) -> Any:
            method = getattr(real.windows, name)
            if name not in ("update_one", "update_many", "find_one_and_update", "delete_one"):
                return method

            def write(*args: Any, **kwargs: Any) -> Any:
                out = method(*args, **kwargs)
                if not fired:
                    fired.append(action())
                return out

            return write

    class Database:
        windows = Windows()

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    store._db = Database()

    def undo() -> None:
        store._db = real

    return undo


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``count`` threads started together; re-raise the first failure."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            target(i)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# -- PipelineStore -----------------------------------------------------------------------------


class PipelineStoreContract:
    @pytest.fixture
    def store(self, backend: Backend) -> PipelineStore:
        store: PipelineStore = backend.new()
        return store

    def test_a_new_pipeline_store_is_empty(self, store: PipelineStore) -> None:
        assert store.list() == []

    def test_put_then_get_returns_an_equal_pipeline(self, store: PipelineStore) -> None:
        rich, plain = pipeline("rich", **RICH), pipeline("plain")

        store.put(rich)
        store.put(plain)

        assert store.get("rich") == rich
        assert store.get("plain") == plain

    def test_list_is_sorted_by_id(self, store: PipelineStore) -> None:
        for pid in ("charlie", "alpha", "bravo"):
            store.put(pipeline(pid))

        assert [p.id for p in store.list()] == ["alpha", "bravo", "charlie"]

    def test_put_replaces_only_its_pipeline(self, store: PipelineStore) -> None:
        store.put(pipeline("a"))
        store.put(pipeline("b"))

        store.put(pipeline("a", enabled=False))

        assert store.list() == [pipeline("a", enabled=False), pipeline("b")]

    def test_get_unknown_raises_not_found(self, store: PipelineStore) -> None:
        store.put(pipeline("a"))

        with pytest.raises(NotFound) as caught:
            store.get("b")
        assert (caught.value.kind, caught.value.ident) == ("pipeline", "b")

    def test_delete_removes_only_its_pipeline(self, store: PipelineStore) -> None:
        store.put(pipeline("a"))
        store.put(pipeline("b"))

        store.delete("a")

        assert store.list() == [pipeline("b")]
        with pytest.raises(NotFound):
            store.get("a")

    def test_delete_unknown_raises_not_found(self, store: PipelineStore) -> None:
        with pytest.raises(NotFound):
            store.delete("a")


class SourcedPipelineStoreContract(PipelineStoreContract):
    """The database stores also know where each pipeline came from (``run --pipelines``)."""

    def test_replace_source_writes_and_deletes_only_its_own(self, backend: Backend) -> None:
        store = backend.new()
        store.put(pipeline("from-api"))
        assert store.replace_source("a.yaml", [pipeline("x"), pipeline("y")]) == []

        gone = store.replace_source("a.yaml", [pipeline("y", enabled=False)], keep=["z"])

        assert gone == ["x"]
        assert store.list() == [pipeline("from-api"), pipeline("y", enabled=False)]

    def test_replace_source_takes_over_an_id_from_another_source(self, backend: Backend) -> None:
        store = backend.new()
        store.put(pipeline("a"))

        store.replace_source("f.yaml", [pipeline("a", enabled=False)])

        assert store.replace_source("f.yaml", []) == ["a"]
        assert store.list() == []

    def test_pipelines_are_seen_by_another_instance(self, backend: Backend) -> None:
        backend.new().put(pipeline("a", **RICH))

        assert backend.new().list() == [pipeline("a", **RICH)]


# -- ModelRegistry -----------------------------------------------------------------------------


class RegistryContract:
    @pytest.fixture
    def registry(self, backend: Backend) -> Registry:
        registry: Registry = backend.new()
        return registry

    def test_an_unknown_pipeline_has_no_versions(self, registry: Registry) -> None:
        assert registry.versions("a") == []
        assert registry.active("a") is None

    def test_versions_are_newest_first_and_round_trip(self, registry: Registry) -> None:
        v1 = version("a", "v1", 10.0)
        v2 = version("a", "v2", 20.0, artifact=None, extra={"loss": "0.1", "note": "é"})
        registry.record(v1)
        registry.record(v2)
        registry.record(version("b", "v1", 15.0))

        assert registry.versions("a") == [v2, v1]
        assert registry.active("a") == v2

    def test_record_without_activate_keeps_the_active_version(self, registry: Registry) -> None:
        registry.record(version("a", "v1"))

        registry.record(version("a", "v2"), activate=False)

        assert registry.active("a") == version("a", "v1")
        assert [v.version for v in registry.versions("a")] == ["v2", "v1"]

    def test_recording_a_version_again_replaces_it(self, registry: Registry) -> None:
        # A retried train job refits the same window under the same version id.
        registry.record(version("a", "v1", 10.0))
        registry.record(version("a", "v2", 20.0), activate=False)

        again = version("a", "v1", 30.0, fit_seconds=0.5)
        registry.record(again, activate=False)

        assert registry.versions("a") == [again, version("a", "v2", 20.0)]
        assert registry.active("a") == again

    def test_a_first_version_recorded_inactive_leaves_none_active(self, registry: Registry) -> None:
        registry.record(version("a", "v1"), activate=False)

        assert registry.active("a") is None

    def test_activate_moves_the_pointer_back_and_forth(self, registry: Registry) -> None:
        registry.record(version("a", "v1"))
        registry.record(version("a", "v2"))

        registry.activate("a", "v1")
        assert registry.active("a") == version("a", "v1")
        assert [v.version for v in registry.versions("a")] == ["v2", "v1"]  # history kept
        registry.activate("a", "v2")
        assert registry.active("a") == version("a", "v2")

    def test_activate_unknown_raises_not_found_and_changes_nothing(
        self, registry: Registry
    ) -> None:
        registry.record(version("a", "v1"))
        registry.record(version("b", "v2"))

        with pytest.raises(NotFound):
            registry.activate("a", "v2")  # a version of another pipeline
        with pytest.raises(NotFound):
            registry.activate("c", "v1")

        assert registry.active("a") == version("a", "v1")
        assert registry.active("c") is None

    # -- CheckpointStore -----------------------------------------------------------------------

    def test_an_unknown_checkpoint_is_none(self, registry: Registry) -> None:
        assert registry.last_end("a") is None

    def test_advance_never_moves_backwards(self, registry: Registry) -> None:
        registry.advance("a", 1_700_000_060)
        registry.advance("a", 1_700_000_000)
        registry.advance("b", 5)

        assert registry.last_end("a") == 1_700_000_060
        registry.advance("a", 1_700_000_120)
        assert registry.last_end("a") == 1_700_000_120
        assert registry.last_end("b") == 5

    def test_concurrent_advances_keep_the_maximum(self, registry: Registry) -> None:
        ends = list(range(1, 41))
        seen: list[list[int]] = [[] for _ in range(6)]

        def advance_in_random_order(i: int) -> None:
            order = ends[:]
            random.Random(i).shuffle(order)
            for end in order:
                registry.advance("a", end)
                seen[i].append(registry.last_end("a") or 0)

        run_threads(6, advance_in_random_order)

        assert registry.last_end("a") == 40
        assert all(s == sorted(s) for s in seen)  # no thread ever saw it move backwards

    def test_checkpoints_are_shared_between_instances(self, backend: Backend) -> None:
        # Like the API and a worker process, each with its own connection to one database.
        stores = [backend.new() for _ in range(4)]

        def advance_every_fourth(i: int) -> None:
            for end in range(i, 60, 4):
                stores[i].advance("a", end)

        run_threads(4, advance_every_fourth)
        assert {s.last_end("a") for s in stores} == {59}


# -- LeaseStore and the window journal ----------------------------------------------------------


class LeaseContract:
    @pytest.fixture
    def leased(self, backend: Backend) -> tuple[Leased, Clock]:
        clock = Clock()
        return backend.new(clock), clock

    def test_a_lease_has_one_owner_until_it_expires(self, leased: tuple[Leased, Clock]) -> None:
        store, clock = leased
        assert store.acquire("p", "a", ttl=60)
        assert not store.acquire("p", "b", ttl=60)
        assert store.acquire("p", "a", ttl=60)  # renewal
        assert store.acquire("q", "b", ttl=60)  # another pipeline, another lease
        clock.now += 61
        assert store.acquire("p", "b", ttl=60)  # expired: taken over
        assert not store.acquire("p", "a", ttl=60)
        assert store.state("p").owner == "b" and store.state("p").expires == clock.now + 60

    def test_the_holder_is_the_owner_until_the_lease_expires_or_is_released(
        self, backend: Backend
    ) -> None:
        # What the Celery dispatcher asks of a claim another process took (WorkClaims).
        clock = Clock()
        store, other = backend.new(clock), backend.new(clock)
        assert store.holder("job:infer:p#all:600") is None
        assert store.acquire("job:infer:p#all:600", "job-1", ttl=60)
        assert other.holder("job:infer:p#all:600") == "job-1"
        assert other.holder("p") is None  # a key of its own
        clock.now += 61
        assert other.holder("job:infer:p#all:600") is None  # expired: its worker died
        assert other.acquire("job:infer:p#all:600", "job-2", ttl=60)
        other.release("job:infer:p#all:600", "job-2")
        assert store.holder("job:infer:p#all:600") is None

    def test_a_lease_is_replaced_only_from_the_owner_named(
        self, leased: tuple[Leased, Clock]
    ) -> None:
        store, _ = leased
        store.acquire("p", "dead", ttl=60)
        assert not store.acquire("p", "b", ttl=60, replace="someone-else")
        assert store.acquire("p", "b", ttl=60, replace="dead")
        assert not store.acquire("p", "c", ttl=60, replace="dead")  # "b" holds it now
        assert store.state("p").owner == "b"

    def test_release_frees_only_the_owners_lease(self, leased: tuple[Leased, Clock]) -> None:
        store, _ = leased
        store.acquire("p", "a", ttl=60)
        store.release("p", "b")
        assert store.state("p").owner == "a"
        store.release("p", "a")
        assert store.state("p").owner is None and store.acquire("p", "b", ttl=60)

    def test_a_journalled_window_stays_pending_until_the_checkpoint_passes_it(
        self, leased: tuple[Leased, Clock]
    ) -> None:
        store, _ = leased
        store.acquire("p", "a", ttl=60)
        store.begin("p", 100, 160, owner="a")
        assert store.state("p").pending == (100, 160) and store.state("p").last_end is None
        store.advance("p", 100, owner="a")
        assert store.state("p").pending == (100, 160)
        store.advance("p", 160, owner="a")
        state = store.state("p")
        assert state.pending is None and state.last_end == 160

    def test_journal_and_checkpoint_are_fenced_by_the_lease(
        self, leased: tuple[Leased, Clock]
    ) -> None:
        store, clock = leased
        store.acquire("p", "a", ttl=60)
        store.begin("p", 100, 160, owner="a")
        clock.now += 61
        store.acquire("p", "b", ttl=60)  # "a" stalled past its lease; "b" took over
        with pytest.raises(PipelineBusy, match="b"):
            store.advance("p", 160, owner="a")
        with pytest.raises(PipelineBusy):
            store.begin("p", 160, 220, owner="a")
        assert store.state("p").last_end is None and store.state("p").pending == (100, 160)

    def test_racing_acquires_have_one_winner(self, backend: Backend) -> None:
        # Each racer has its own store (connection), as processes do; every round the lease
        # is free or expired, so every racer may take it and only one must.
        clock = Clock()
        stores = [backend.new(clock) for _ in range(4)]
        for round_ in range(8):
            won: list[int] = []
            clock.now += 61

            def take(i: int, round_: int = round_, won: list[int] = won) -> None:
                if stores[i].acquire("p", f"owner{i}-{round_}", ttl=60):
                    won.append(i)

            run_threads(4, take)
            assert len(won) == 1, f"round {round_}: {won} all hold the lease"
            assert stores[0].state("p").owner == f"owner{won[0]}-{round_}"


class InterleavedLeaseContract:
    """The database stores, where another process's write can land between two of a store's
    statements (the memory fake holds one lock around every call: there is no such point)."""

    def test_a_fenced_advance_moves_checkpoint_and_journal_together(self, backend: Backend) -> None:
        # "a" stalls past its lease and commits; "b" takes the lease over as early as it can,
        # right after a's first write. Checkpoint and journal must move as one: both or none.
        assert backend.interleave is not None
        clock = Clock()
        store, other = backend.new(clock), backend.new(clock)
        store.acquire("p", "a", ttl=60)
        store.begin("p", 100, 160, owner="a")
        clock.now += 61
        undo = backend.interleave(store, lambda: other.acquire("p", "b", ttl=60))
        try:
            store.advance("p", 160, owner="a")
        except PipelineBusy:
            pass
        finally:
            undo()
        state = other.state("p")
        assert (state.last_end, state.pending) in [(160, None), (None, (100, 160))]
        assert state.owner == "b"


# -- OutcomeStore ------------------------------------------------------------------------------


class OutcomeContract:
    @pytest.fixture
    def outcomes(self, backend: Backend) -> OutcomeStore:
        store: OutcomeStore = backend.new()
        return store

    def test_no_outcome_before_a_job_ends(self, outcomes: OutcomeStore) -> None:
        assert outcomes.outcomes("a") == {}

    def test_the_last_failure_is_kept_after_a_success(self, outcomes: OutcomeStore) -> None:
        outcomes.record_outcome("a", "train", 10.0, "boom")
        outcomes.record_outcome("a", "train", 20.0, None)
        outcomes.record_outcome("a", "infer", 30.0, None)
        outcomes.record_outcome("b", "train", 40.0, "other")

        got = outcomes.outcomes("a")

        assert (got["train"].at, got["train"].ok) == (20.0, True)
        assert (got["train"].error, got["train"].error_at) == ("boom", 10.0)
        assert (got["infer"].ok, got["infer"].error) == (True, None)
        assert set(got) == {"train", "infer"}


# -- JobHistory --------------------------------------------------------------------------------


def job_run(n: int, **fields: Any) -> JobRun:
    values: dict[str, Any] = {
        "job_id": f"{n:032x}",
        "pipeline_id": "a",
        "kind": "infer",
        "status": "ok",
        "start": 1_700_000_000,
        "end": 1_700_000_060,
        "submitted_at": 1_700_000_000.0 + n,
        "started_at": 1_700_000_000.5 + n,
        "ended_at": 1_700_000_001.0 + n,
        "series": 3,
        "points": 180,
        "anomalies": 2,
        "worker": "host:12",
        "attempts": 1,
    }
    return JobRun(**(values | fields))


class JobHistoryContract:
    @pytest.fixture
    def history(self, backend: Backend) -> JobHistory:
        store: JobHistory = backend.new()
        return store

    def test_a_run_round_trips_and_a_redelivery_updates_its_row(self, history: JobHistory) -> None:
        queued = job_run(1, status="queued", started_at=None, ended_at=None, attempts=0)
        history.record_run(queued)
        assert history.get_run(queued.job_id) == queued

        failed = job_run(1, status="error", error="TSDB down: é", attempts=2, start=None)
        history.record_run(failed)

        assert history.get_run(queued.job_id) == failed
        assert history.runs() == [failed]

    def test_an_unknown_run_is_not_found(self, history: JobHistory) -> None:
        with pytest.raises(NotFound) as caught:
            history.get_run("f" * 32)
        assert (caught.value.kind, caught.value.ident) == ("job", "f" * 32)

    def test_runs_are_newest_first_and_filtered(self, history: JobHistory) -> None:
        runs = [
            job_run(1),
            job_run(2, pipeline_id="b"),
            job_run(3, kind="train", status="error", error="x"),
            job_run(4, status="busy"),
            # not submitted through a dispatcher: listed by its start
            job_run(5, submitted_at=None, started_at=1_700_000_010.0, kind="backtest"),
            job_run(6, submitted_at=None, started_at=None, status="queued"),
        ]
        for run in random.Random(7).sample(runs, len(runs)):
            history.record_run(run)

        assert history.runs() == [runs[4], runs[3], runs[2], runs[1], runs[0], runs[5]]
        assert history.runs(pipeline_id="a", kind="infer") == [runs[3], runs[0], runs[5]]
        assert history.runs(status="error") == [runs[2]]
        assert history.runs(pipeline_id="a", status="busy", kind="infer") == [runs[3]]
        assert history.runs(limit=2) == [runs[4], runs[3]]
        assert history.runs(pipeline_id="nope") == []

    def test_prune_deletes_only_runs_that_ended_before(self, history: JobHistory) -> None:
        old, recent = job_run(1, ended_at=100.0), job_run(2, ended_at=200.0)
        running = job_run(3, status="running", ended_at=None)
        for run in (old, recent, running):
            history.record_run(run)

        assert history.prune_runs(200.0) == 1
        assert history.prune_runs(200.0) == 0

        assert history.runs() == [running, recent]
        with pytest.raises(NotFound):
            history.get_run(old.job_id)


# -- ArtifactStore -----------------------------------------------------------------------------


class MissingArtifactContract:
    """What every ArtifactStore answers, the NoOp one included."""

    @pytest.fixture
    def artifacts(self, backend: Backend) -> ArtifactStore:
        store: ArtifactStore = backend.new()
        return store

    def test_load_missing_raises_not_found(self, artifacts: ArtifactStore) -> None:
        key = f"pipelines/a/{uuid.uuid4().hex}.bin"
        with pytest.raises(NotFound) as caught:
            artifacts.load(key)
        assert (caught.value.kind, caught.value.ident) == ("artifact", key)

    def test_deleting_a_missing_artifact_is_fine(self, artifacts: ArtifactStore) -> None:
        artifacts.delete("pipelines/a/never-saved.bin")
        artifacts.delete("pipelines/a/never-saved.bin")


class ArtifactContract(MissingArtifactContract):
    """Stores that keep what they are given."""

    def test_artifacts_round_trip(self, artifacts: ArtifactStore) -> None:
        artifacts.save("pipelines/a/v1.bin", b"\x00model\xff")
        artifacts.save("pipelines/a/v2.bin", b"")

        assert artifacts.load("pipelines/a/v1.bin") == b"\x00model\xff"
        assert artifacts.load("pipelines/a/v2.bin") == b""

    def test_save_overwrites(self, artifacts: ArtifactStore) -> None:
        artifacts.save("pipelines/a/v1.bin", b"old")

        artifacts.save("pipelines/a/v1.bin", b"new")

        assert artifacts.load("pipelines/a/v1.bin") == b"new"

    def test_delete_then_load_raises_not_found(self, artifacts: ArtifactStore) -> None:
        artifacts.save("pipelines/a/v1.bin", b"x")

        artifacts.delete("pipelines/a/v1.bin")
        artifacts.delete("pipelines/a/v1.bin")  # deleting twice is fine

        with pytest.raises(NotFound):
            artifacts.load("pipelines/a/v1.bin")

    def test_a_large_artifact_round_trips(self, artifacts: ArtifactStore) -> None:
        data = random.Random(3).randbytes(9 * 1024 * 1024)  # past S3's multipart threshold

        artifacts.save("pipelines/a/big.bin", data)

        assert artifacts.load("pipelines/a/big.bin") == data

    def test_versions_of_a_model_are_kept_apart(self, backend: Backend) -> None:
        # Keys are per version (the Trainer's pipelines/<id>/<version>.bin): another instance
        # saving v2 leaves v1 as it was, so a rollback finds v1's own bytes.
        first, second = backend.new(), backend.new()
        first.save("pipelines/a/v1.bin", b"one")
        second.save("pipelines/a/v2.bin", b"two")

        assert (first.load("pipelines/a/v2.bin"), second.load("pipelines/a/v1.bin")) == (
            b"two",
            b"one",
        )
