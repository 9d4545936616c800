"""The stores' contract (``tests/store_contract.py``) against the in-memory fakes, SQLite and
mongomock; then what is particular to each store (the YAML file, SQLite, local files, NoOp).

PostgreSQL and S3 (moto's server) run the same contract in
``tests/integration/test_store_contract.py``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openanomaly.adapters.artifacts.local import LocalArtifactStore
from openanomaly.adapters.artifacts.noop import NoOpArtifactStore
from openanomaly.adapters.config.mongo import MongoStore
from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.config.yaml_file import (
    PipelineFileError,
    ReadOnlyFile,
    YamlPipelineStore,
)
from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryJobHistory,
    MemoryPipelineStore,
    MemoryRegistry,
)
from openanomaly.errors import (
    ConfigError,
    Conflict,
    NotFound,
    StoreError,
    StoreUnavailable,
)
from openanomaly.services.health import _InProcessOutcomes
from tests.store_contract import (
    ArtifactContract,
    Backend,
    Clock,
    Interleave,
    InterleavedLeaseContract,
    JobHistoryContract,
    LeaseContract,
    MissingArtifactContract,
    OutcomeContract,
    PipelineStoreContract,
    RegistryContract,
    SourcedPipelineStoreContract,
    mongo_interleave,
    pipeline,
    sql_interleave,
    version,
)


def sql_store(tmp_path: Path) -> SqlStore:
    return SqlStore(f"sqlite:///{tmp_path / 'openanomaly.db'}")


def backend(open_store: object, interleave: Interleave | None = None) -> Iterator[Backend]:
    b = Backend(open_store, interleave=interleave)  # type: ignore[arg-type]
    yield b
    b.close()


# -- memory ------------------------------------------------------------------------------------


class TestMemoryPipelines(PipelineStoreContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        store = MemoryPipelineStore()
        yield from backend(lambda _clock: store)


class TestMemoryRegistry(RegistryContract, LeaseContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        # One instance stands for the shared database: it follows the clock of the last open.
        clock = [Clock()]
        store = MemoryRegistry(clock=lambda: clock[0]())  # noqa: PLW0108 (late binding)

        def open_store(given: Clock) -> MemoryRegistry:
            clock[0] = given
            return store

        yield from backend(open_store)


class TestMemoryOutcomes(OutcomeContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        store = _InProcessOutcomes()
        yield from backend(lambda _clock: store)


class TestMemoryJobHistory(JobHistoryContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        store = MemoryJobHistory()
        yield from backend(lambda _clock: store)


class TestMemoryArtifacts(ArtifactContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        store = MemoryArtifactStore()
        yield from backend(lambda _clock: store)


class TestLocalArtifacts(ArtifactContract):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        yield from backend(lambda _clock: LocalArtifactStore(tmp_path / "artifacts"))


class TestNoOpArtifacts(MissingArtifactContract):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield from backend(lambda _clock: NoOpArtifactStore())

    def test_noop_store_keeps_nothing(self, artifacts: NoOpArtifactStore) -> None:
        artifacts.save("pipelines/a/v1.bin", b"x")
        artifacts.delete("pipelines/a/v1.bin")

        with pytest.raises(NotFound):
            artifacts.load("pipelines/a/v1.bin")


# -- SQLite ------------------------------------------------------------------------------------


class TestSqlite(
    SourcedPipelineStoreContract,
    RegistryContract,
    LeaseContract,
    InterleavedLeaseContract,
    OutcomeContract,
    JobHistoryContract,
):
    @pytest.fixture
    def backend(self, tmp_path: Path) -> Iterator[Backend]:
        url = f"sqlite:///{tmp_path / 'openanomaly.db'}"
        yield from backend(lambda clock: SqlStore(url, clock=clock), sql_interleave)


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


# -- ArtifactStore -----------------------------------------------------------------------------


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


# -- MongoDB (mongomock) -----------------------------------------------------------------------


class TestMongomock(
    SourcedPipelineStoreContract,
    RegistryContract,
    LeaseContract,
    InterleavedLeaseContract,
    OutcomeContract,
    JobHistoryContract,
):
    @pytest.fixture
    def backend(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[Backend]:
        import mongomock

        _atomic_operations(monkeypatch, mongomock.Collection)
        client: Any = mongomock.MongoClient()  # one "server": every store opened shares it
        yield from backend(
            lambda clock: MongoStore(client=client, database="oa", clock=clock), mongo_interleave
        )


def _atomic_operations(monkeypatch: pytest.MonkeyPatch, collection: type) -> None:
    """Make each of mongomock's collection operations atomic, as a MongoDB server applies one
    operation on a document: mongomock runs ``find_one_and_update`` as a find then an update in
    Python, so two threads racing for a lease could both match the free document (seen in CI:
    ``[0, 3] all hold the lease``). Two operations in a row still interleave, as they do on a
    server, so a store that read and then wrote would still lose the race test."""
    lock = threading.RLock()  # reentrant: an operation may call another one inside it
    for name in (
        "find_one_and_update",
        "find_one_and_replace",
        "find_one_and_delete",
        "update_one",
        "update_many",
        "replace_one",
        "insert_one",
        "insert_many",
        "delete_one",
        "delete_many",
        "find_one",
        "count_documents",
        "bulk_write",
    ):
        original = getattr(collection, name)

        def atomic(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return _original(*args, **kwargs)

        monkeypatch.setattr(collection, name, atomic)


def test_a_released_claim_leaves_no_mongo_document_and_a_pipeline_keeps_its_own() -> None:
    import mongomock

    client: Any = mongomock.MongoClient()
    store = MongoStore(client=client, database="oa")
    for key in ("job:infer:p#0:120", "p"):
        assert store.acquire(key, "a", ttl=60)
    store.begin("p", 60, 120, owner="a")
    store.advance("p", 120, owner="a")
    for key in ("job:infer:p#0:120", "p"):
        store.release(key, "a")
    assert [d["_id"] for d in client["oa"].windows.find()] == ["p"]
    assert store.state("p").last_end == 120 and store.state("p").owner is None


def test_mongo_store_errors_name_the_database_without_its_password() -> None:
    store = MongoStore("mongodb://oa:mongo-secret@127.0.0.1:1/oa?serverSelectionTimeoutMS=200")
    try:
        with pytest.raises(StoreUnavailable) as caught:
            store.list()
        message = str(caught.value)
        assert "mongodb://oa:***@127.0.0.1:1/oa" in message and "mongo-secret" not in message
        assert caught.value.store == "database"
    finally:
        store.close()


def test_a_bad_mongo_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        MongoStore("mongodb://")
    assert caught.value.where == "database_url"
