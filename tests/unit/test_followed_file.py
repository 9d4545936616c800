"""``run --pipelines FILE``: the file's pipelines follow the file, the API's stay."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from openanomaly.adapters.config.followed_file import FollowedFileStore
from openanomaly.adapters.config.sql import SqlStore
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import NotFound


def pipeline(pid: str, query: str = "up") -> Pipeline:
    return Pipeline.model_validate({"id": pid, "query": query})


def write(path: Path, *ids: str, query: str = "up") -> None:
    path.write_text("pipelines:\n" + "".join(f"  - {{id: {i}, query: '{query}'}}\n" for i in ids))
    # A new stamp even within the file system's time resolution.
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


@pytest.fixture
def sql(tmp_path: Path) -> Iterator[SqlStore]:
    store = SqlStore(f"sqlite:///{tmp_path / 'oa.db'}")
    yield store
    store.close()


def test_pipelines_removed_from_the_file_are_deleted_and_the_apis_kept(
    tmp_path: Path, sql: SqlStore
) -> None:
    path = tmp_path / "pipelines.yaml"
    write(path, "a", "b")
    sql.put(pipeline("api"))
    store = FollowedFileStore(sql, path)
    assert [p.id for p in store.list()] == ["a", "api", "b"]

    write(path, "b", query="rate(x[5m])")

    assert [p.id for p in store.list()] == ["api", "b"]
    assert store.get("b").query == "rate(x[5m])"
    with pytest.raises(NotFound):
        sql.get("a")
    # A restart with the same file finds the same store, nothing deleted twice.
    assert FollowedFileStore(sql, path).apply() == []


def test_an_unchanged_file_is_not_reapplied(tmp_path: Path, sql: SqlStore) -> None:
    path = tmp_path / "pipelines.yaml"
    write(path, "a")
    store = FollowedFileStore(sql, path)
    store.list()
    sql.delete("a")  # a delete through the API: the file brings it back only when it changes

    assert store.list() == []
    write(path, "a")
    assert [p.id for p in store.list()] == ["a"]


def test_a_broken_file_or_pipeline_deletes_nothing(
    tmp_path: Path, sql: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "pipelines.yaml"
    write(path, "a", "b")

    def check(p: Pipeline) -> list[tuple[tuple[str, ...], str]]:
        return [(("query",), "refused")] if p.query == "bad" else []

    store = FollowedFileStore(sql, path, check=check)
    store.list()
    caplog.set_level(logging.INFO)

    path.write_text("pipelines:\n  - {id: a, query: up, step: 1x}\n")
    assert [p.id for p in store.list()] == ["a", "b"]
    assert "not applied, serving the stored pipelines" in caplog.text

    path.write_text("pipelines:\n  - {id: a, query: bad}\n  - {id: c, query: up}\n")
    assert [p.id for p in store.list()] == ["a", "c"]  # b went; a kept as it was
    assert sql.get("a").query == "up"
    assert "pipeline a not applied: query: refused" in caplog.text


def test_an_api_put_takes_the_pipeline_out_of_the_file(tmp_path: Path, sql: SqlStore) -> None:
    path = tmp_path / "pipelines.yaml"
    write(path, "a")
    store = FollowedFileStore(sql, path)
    store.list()
    sql.put(pipeline("a", "up2"))  # now the API's
    write(path, "b")

    assert [p.id for p in store.list()] == ["a", "b"]


def test_a_database_from_before_sources_gets_the_column(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TABLE pipelines (id VARCHAR(255) PRIMARY KEY, spec TEXT NOT NULL, "
            "updated_at FLOAT NOT NULL)"
        )
        conn.execute(
            "INSERT INTO pipelines VALUES (?, ?, 0)", ("old", pipeline("old").model_dump_json())
        )
    conn.close()
    store = SqlStore(f"sqlite:///{db}")
    try:
        assert store.replace_source("f.yaml", [pipeline("new")]) == []
        assert [p.id for p in store.list()] == ["new", "old"]
        assert store.replace_source("f.yaml", []) == ["new"]  # the old one is the API's
        assert [p.id for p in store.list()] == ["old"]
    finally:
        store.close()
