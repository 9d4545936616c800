"""The same assertions against the in-memory fakes and the real storage adapters.

PipelineStore: MemoryPipelineStore, YamlPipelineStore, SqlStore (SQLite file).
ModelRegistry + CheckpointStore: MemoryRegistry, SqlStore.
ArtifactStore: MemoryArtifactStore, LocalArtifactStore.
"""

from __future__ import annotations

import os
import random
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest

from openanomaly.adapters.artifacts.local import LocalArtifactStore
from openanomaly.adapters.artifacts.noop import NoOpArtifactStore
from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.config.yaml_file import (
    PipelineFileError,
    ReadOnlyFile,
    YamlPipelineStore,
)
from openanomaly.adapters.memory import MemoryArtifactStore, MemoryPipelineStore, MemoryRegistry
from openanomaly.domain.records import ModelVersion
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import (
    ConfigError,
    Conflict,
    NotFound,
    PipelineBusy,
    StoreError,
    StoreUnavailable,
)
from openanomaly.ports import (
    ArtifactStore,
    CheckpointStore,
    LeaseStore,
    ModelRegistry,
    PipelineStore,
)


class Registry(ModelRegistry, CheckpointStore, Protocol):
    """Both ports, as MemoryRegistry and SqlStore implement them."""


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


def sql_store(tmp_path: Path) -> SqlStore:
    return SqlStore(f"sqlite:///{tmp_path / 'openanomaly.db'}")


@pytest.fixture(params=["memory", "sql"])
def pipeline_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PipelineStore]:
    # The YAML store is read-only: its own tests below.
    if request.param == "memory":
        yield MemoryPipelineStore()
    else:
        store = sql_store(tmp_path)
        yield store
        store.close()


@pytest.fixture(params=["memory", "sql"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    if request.param == "memory":
        yield MemoryRegistry()
    else:
        store = sql_store(tmp_path)
        yield store
        store.close()


@pytest.fixture(params=["memory", "local"])
def artifacts(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "memory":
        return MemoryArtifactStore()
    return LocalArtifactStore(tmp_path / "artifacts")


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


def test_a_new_pipeline_store_is_empty(pipeline_store: PipelineStore) -> None:
    assert pipeline_store.list() == []


def test_put_then_get_returns_an_equal_pipeline(pipeline_store: PipelineStore) -> None:
    rich, plain = pipeline("rich", **RICH), pipeline("plain")

    pipeline_store.put(rich)
    pipeline_store.put(plain)

    assert pipeline_store.get("rich") == rich
    assert pipeline_store.get("plain") == plain


def test_list_is_sorted_by_id(pipeline_store: PipelineStore) -> None:
    for pid in ("charlie", "alpha", "bravo"):
        pipeline_store.put(pipeline(pid))

    assert [p.id for p in pipeline_store.list()] == ["alpha", "bravo", "charlie"]


def test_put_replaces_only_its_pipeline(pipeline_store: PipelineStore) -> None:
    pipeline_store.put(pipeline("a"))
    pipeline_store.put(pipeline("b"))

    pipeline_store.put(pipeline("a", enabled=False))

    assert pipeline_store.list() == [pipeline("a", enabled=False), pipeline("b")]


def test_get_unknown_raises_not_found(pipeline_store: PipelineStore) -> None:
    pipeline_store.put(pipeline("a"))

    with pytest.raises(NotFound) as caught:
        pipeline_store.get("b")
    assert (caught.value.kind, caught.value.ident) == ("pipeline", "b")


def test_delete_removes_only_its_pipeline(pipeline_store: PipelineStore) -> None:
    pipeline_store.put(pipeline("a"))
    pipeline_store.put(pipeline("b"))

    pipeline_store.delete("a")

    assert pipeline_store.list() == [pipeline("b")]
    with pytest.raises(NotFound):
        pipeline_store.get("a")


def test_delete_unknown_raises_not_found(pipeline_store: PipelineStore) -> None:
    with pytest.raises(NotFound):
        pipeline_store.delete("a")


# -- YamlPipelineStore -------------------------------------------------------------------------


USER_FILE = """\
pipelines:
  - id: zeta
    query: up
    train: {window: 14d}
  - id: alpha
    query: up
"""


def test_yaml_store_is_read_only_and_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text("# ours\n" + USER_FILE)
    before = path.stat().st_mtime_ns
    store = YamlPipelineStore(path)

    with pytest.raises(
        ReadOnlyFile, match=rf"{re.escape(str(path))}.*change pipeline 'new' in that file"
    ):
        store.put(pipeline("new"))
    with pytest.raises(ReadOnlyFile) as caught:
        store.delete("alpha")
    with pytest.raises(NotFound):
        store.delete("nope")

    assert isinstance(caught.value, Conflict) and caught.value.path == path
    assert path.read_text() == "# ours\n" + USER_FILE and path.stat().st_mtime_ns == before
    assert [p.id for p in store.list()] == ["alpha", "zeta"]


def test_yaml_store_sees_edits_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(USER_FILE)
    store = YamlPipelineStore(path)
    assert [p.id for p in store.list()] == ["alpha", "zeta"]

    path.write_text(USER_FILE.replace("zeta", "omega"))
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 1_000_000_000))

    assert [p.id for p in store.list()] == ["alpha", "omega"]


def test_yaml_store_refuses_a_broken_file_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    path.write_text(USER_FILE.replace("window: 14d", "window: 14x"))
    store = YamlPipelineStore(path)

    with pytest.raises(PipelineFileError, match=r"pipelines\.yaml:4: pipelines\[0\]\.train"):
        store.list()
    with pytest.raises(ConfigError):
        store.get("alpha")  # never a stale config


# -- SqlStore as PipelineStore -----------------------------------------------------------------


def test_sql_store_keeps_pipelines_across_instances(tmp_path: Path) -> None:
    first = sql_store(tmp_path)
    first.put(pipeline("a", **RICH))
    first.close()

    second = sql_store(tmp_path)
    try:
        assert second.list() == [pipeline("a", **RICH)]
    finally:
        second.close()


def test_sql_store_uses_wal_on_sqlite(tmp_path: Path) -> None:
    store = sql_store(tmp_path)
    try:
        store.list()
        with store.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
    finally:
        store.close()


def test_a_corrupt_sqlite_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "openanomaly.db").write_bytes(b"not a database, " * 64)
    store = sql_store(tmp_path)
    try:
        with pytest.raises(StoreError, match="file is not a database") as caught:
            store.list()
        assert not isinstance(caught.value, StoreUnavailable)
        assert caught.value.store == "database"
        with pytest.raises(StoreError):
            store.record(version("a", "v1"))
    finally:
        store.close()


def test_a_database_that_cannot_be_opened_is_unavailable(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'no-such-dir' / 'openanomaly.db'}")
    try:
        with pytest.raises(StoreUnavailable, match="unable to open database file"):
            store.last_end("a")
    finally:
        store.close()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "Could not parse"),
        ("nosuchdb://x/y", "nosuchdb"),
        ("mysql://u@h/d", "No module"),
    ],
)
def test_a_bad_database_url_is_a_config_error(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        SqlStore(url)
    assert caught.value.where == "database_url"


# -- ModelRegistry -----------------------------------------------------------------------------


def test_an_unknown_pipeline_has_no_versions(registry: Registry) -> None:
    assert registry.versions("a") == []
    assert registry.active("a") is None


def test_versions_are_newest_first_and_round_trip(registry: Registry) -> None:
    v1 = version("a", "v1", 10.0)
    v2 = version("a", "v2", 20.0, artifact=None, extra={"loss": "0.1", "note": "é"})
    registry.record(v1)
    registry.record(v2)
    registry.record(version("b", "v1", 15.0))

    assert registry.versions("a") == [v2, v1]
    assert registry.active("a") == v2


def test_record_without_activate_keeps_the_active_version(registry: Registry) -> None:
    registry.record(version("a", "v1"))

    registry.record(version("a", "v2"), activate=False)

    assert registry.active("a") == version("a", "v1")
    assert [v.version for v in registry.versions("a")] == ["v2", "v1"]


def test_recording_a_version_again_replaces_it(registry: Registry) -> None:
    # A retried train job refits the same window under the same version id.
    registry.record(version("a", "v1", 10.0))
    registry.record(version("a", "v2", 20.0), activate=False)

    again = version("a", "v1", 30.0, fit_seconds=0.5)
    registry.record(again, activate=False)

    assert registry.versions("a") == [again, version("a", "v2", 20.0)]
    assert registry.active("a") == again


def test_a_first_version_recorded_inactive_leaves_none_active(registry: Registry) -> None:
    registry.record(version("a", "v1"), activate=False)

    assert registry.active("a") is None


def test_activate_moves_the_pointer_back_and_forth(registry: Registry) -> None:
    registry.record(version("a", "v1"))
    registry.record(version("a", "v2"))

    registry.activate("a", "v1")
    assert registry.active("a") == version("a", "v1")
    registry.activate("a", "v2")
    assert registry.active("a") == version("a", "v2")


def test_activate_unknown_raises_not_found_and_changes_nothing(registry: Registry) -> None:
    registry.record(version("a", "v1"))
    registry.record(version("b", "v2"))

    with pytest.raises(NotFound):
        registry.activate("a", "v2")  # a version of another pipeline
    with pytest.raises(NotFound):
        registry.activate("c", "v1")

    assert registry.active("a") == version("a", "v1")
    assert registry.active("c") is None


# -- CheckpointStore ---------------------------------------------------------------------------


def test_an_unknown_checkpoint_is_none(registry: Registry) -> None:
    assert registry.last_end("a") is None


def test_advance_never_moves_backwards(registry: Registry) -> None:
    registry.advance("a", 1_700_000_060)
    registry.advance("a", 1_700_000_000)
    registry.advance("b", 5)

    assert registry.last_end("a") == 1_700_000_060
    registry.advance("a", 1_700_000_120)
    assert registry.last_end("a") == 1_700_000_120
    assert registry.last_end("b") == 5


def test_concurrent_advances_keep_the_maximum(registry: Registry) -> None:
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


def test_sql_checkpoints_are_shared_between_instances(tmp_path: Path) -> None:
    # Like the API and a worker process, each with its own engine on one SQLite file.
    stores = [sql_store(tmp_path) for _ in range(4)]

    def advance_every_fourth(i: int) -> None:
        for end in range(i, 60, 4):
            stores[i].advance("a", end)

    try:
        run_threads(4, advance_every_fourth)
        assert {s.last_end("a") for s in stores} == {59}
    finally:
        for s in stores:
            s.close()


# -- LeaseStore and the window journal ----------------------------------------------------------


class Leased(CheckpointStore, LeaseStore, Protocol):
    """Checkpoints, journal and leases, as MemoryRegistry and SqlStore implement them."""


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", "sql"])
def leased(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Leased, Clock]]:
    clock = Clock()
    if request.param == "memory":
        yield MemoryRegistry(clock=clock), clock
    else:
        store = SqlStore(f"sqlite:///{tmp_path / 'openanomaly.db'}", clock=clock)
        yield store, clock
        store.close()


def test_a_lease_has_one_owner_until_it_expires(leased: tuple[Leased, Clock]) -> None:
    store, clock = leased
    assert store.acquire("p", "a", ttl=60)
    assert not store.acquire("p", "b", ttl=60)
    assert store.acquire("p", "a", ttl=60)  # renewal
    assert store.acquire("q", "b", ttl=60)  # another pipeline, another lease
    clock.now += 61
    assert store.acquire("p", "b", ttl=60)  # expired: taken over
    assert not store.acquire("p", "a", ttl=60)
    assert store.state("p").owner == "b" and store.state("p").expires == clock.now + 60


def test_a_lease_is_replaced_only_from_the_owner_named(leased: tuple[Leased, Clock]) -> None:
    store, _ = leased
    store.acquire("p", "dead", ttl=60)
    assert not store.acquire("p", "b", ttl=60, replace="someone-else")
    assert store.acquire("p", "b", ttl=60, replace="dead")
    assert not store.acquire("p", "c", ttl=60, replace="dead")  # "b" holds it now
    assert store.state("p").owner == "b"


def test_release_frees_only_the_owners_lease(leased: tuple[Leased, Clock]) -> None:
    store, _ = leased
    store.acquire("p", "a", ttl=60)
    store.release("p", "b")
    assert store.state("p").owner == "a"
    store.release("p", "a")
    assert store.state("p").owner is None and store.acquire("p", "b", ttl=60)


def test_a_journalled_window_stays_pending_until_the_checkpoint_passes_it(
    leased: tuple[Leased, Clock],
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


def test_journal_and_checkpoint_are_fenced_by_the_lease(leased: tuple[Leased, Clock]) -> None:
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


def test_racing_acquires_have_one_winner(tmp_path: Path) -> None:
    stores = [sql_store(tmp_path) for _ in range(4)]
    won: list[int] = []

    def take(i: int) -> None:
        if stores[i].acquire("p", f"owner{i}", ttl=60):
            won.append(i)

    try:
        run_threads(4, take)
        assert len(won) == 1 and stores[0].state("p").owner == f"owner{won[0]}"
    finally:
        for s in stores:
            s.close()


# -- ArtifactStore -----------------------------------------------------------------------------


def test_artifacts_round_trip(artifacts: ArtifactStore) -> None:
    artifacts.save("pipelines/a/v1.bin", b"\x00model\xff")
    artifacts.save("pipelines/a/v2.bin", b"")

    assert artifacts.load("pipelines/a/v1.bin") == b"\x00model\xff"
    assert artifacts.load("pipelines/a/v2.bin") == b""


def test_save_overwrites(artifacts: ArtifactStore) -> None:
    artifacts.save("pipelines/a/v1.bin", b"old")

    artifacts.save("pipelines/a/v1.bin", b"new")

    assert artifacts.load("pipelines/a/v1.bin") == b"new"


def test_load_missing_raises_not_found(artifacts: ArtifactStore) -> None:
    with pytest.raises(NotFound) as caught:
        artifacts.load("pipelines/a/v1.bin")
    assert (caught.value.kind, caught.value.ident) == ("artifact", "pipelines/a/v1.bin")


def test_delete_then_load_raises_not_found(artifacts: ArtifactStore) -> None:
    artifacts.save("pipelines/a/v1.bin", b"x")

    artifacts.delete("pipelines/a/v1.bin")
    artifacts.delete("pipelines/a/v1.bin")  # deleting twice is fine

    with pytest.raises(NotFound):
        artifacts.load("pipelines/a/v1.bin")


@pytest.mark.parametrize(
    "key",
    ["../outside.bin", "pipelines/../../outside.bin", "/etc/passwd", "", "a//b", "./a", "a\\b"],
)
def test_local_store_refuses_keys_that_escape_the_root(tmp_path: Path, key: str) -> None:
    store = LocalArtifactStore(tmp_path / "artifacts")

    with pytest.raises(ValueError, match="artifact key"):
        store.save(key, b"x")
    with pytest.raises(ValueError, match="artifact key"):
        store.load(key)
    assert not (tmp_path / "outside.bin").exists()


def test_local_store_refuses_to_follow_a_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "link").symlink_to(tmp_path)
    store = LocalArtifactStore(tmp_path / "artifacts")

    with pytest.raises(ValueError, match="outside the store"):
        store.save("link/outside.bin", b"x")


def test_local_store_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)

    store.save("pipelines/a/v1.bin", b"one")
    store.save("pipelines/a/v1.bin", b"two")

    assert [p.name for p in (tmp_path / "pipelines" / "a").iterdir()] == ["v1.bin"]


def test_local_store_loading_a_directory_is_not_found(tmp_path: Path) -> None:
    store = LocalArtifactStore(tmp_path)
    store.save("pipelines/a/v1.bin", b"x")

    with pytest.raises(NotFound):
        store.load("pipelines/a")


def test_local_store_file_system_failures_are_store_errors(tmp_path: Path) -> None:
    (tmp_path / "root").write_text("a file where the directory should be")
    store = LocalArtifactStore(tmp_path / "root")

    with pytest.raises(StoreError, match=r"artifact 'pipelines/a/v1\.bin'") as caught:
        store.save("pipelines/a/v1.bin", b"x")
    assert caught.value.store == "artifacts" and not isinstance(caught.value, NotFound)
    with pytest.raises(NotFound):  # nothing can be under a file: the artifact is not there
        store.load("pipelines/a/v1.bin")
    with pytest.raises(StoreError, match="File name too long"):
        LocalArtifactStore(tmp_path).load("x" * 300)


def test_yaml_store_file_system_failures_are_store_errors(tmp_path: Path) -> None:
    (tmp_path / "dir").write_text("a file where the directory should be")
    store = YamlPipelineStore(tmp_path / "dir" / "pipelines.yaml")

    with pytest.raises(StoreError, match=r"pipelines\.yaml") as caught:
        store.list()
    assert caught.value.store == "pipelines file"


def test_noop_store_keeps_nothing() -> None:
    store = NoOpArtifactStore()

    store.save("pipelines/a/v1.bin", b"x")
    store.delete("pipelines/a/v1.bin")

    with pytest.raises(NotFound):
        store.load("pipelines/a/v1.bin")
