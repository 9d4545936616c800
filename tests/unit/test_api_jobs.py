"""The API queues jobs on the dispatcher (202 and where to follow them) and reads the run
history at /api/v1/jobs; here the jobs run on the container's own worker threads."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np
import pytest
from fastapi.testclient import TestClient

from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryMetrics,
    MemoryPipelineStore,
    MemoryRegistry,
)
from openanomaly.api.app import create_app
from openanomaly.bootstrap import Container, bootstrap
from openanomaly.domain.records import JobRun
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.timeparse import iso
from openanomaly.settings import Settings
from tests.unit.test_api import NOW, PIPELINE, TOKEN, auth


@pytest.fixture
def container() -> Iterator[Container]:
    ts = np.arange(NOW - 7200, NOW + 1, 60)
    values = np.ones((2, ts.size))
    values[1, -2] = 40.0  # flagged by any model fitted on ones
    labels = ({"__name__": "m", "i": "0"}, {"__name__": "m", "i": "1"})
    metrics, registry = MemoryMetrics({"m": SeriesBatch(labels, ts, values)}), MemoryRegistry()
    with bootstrap(  # no dispatcher handed in: the thread pool of `openanomaly run`
        Settings(api={"token": TOKEN}, max_range_steps=1000),
        reader=metrics,
        writer=metrics,
        pipelines=MemoryPipelineStore(),
        registry=registry,
        checkpoints=registry,
        artifacts=MemoryArtifactStore(),
        engines=MemoryEngineFactory(),
        clock=lambda: NOW,
    ) as c:
        yield c


@pytest.fixture
def client(container: Container) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as tc:
        assert tc.put("/api/v1/pipelines/p", json=PIPELINE, headers=auth()).status_code == 200
        yield tc


def queue(client: TestClient, route: str, body: dict[str, Any] | None = None) -> str:
    r = client.post(route, json=body, headers=auth())
    assert r.status_code == 202, r.text
    job_id = str(r.json()["job_id"])
    assert r.json() == {"job_id": job_id, "status": "queued"}
    assert r.headers["location"] == f"/api/v1/jobs/{job_id}"
    return job_id


def ended(client: TestClient, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    """The job's row once it has ended (the worker threads run it)."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/v1/jobs/{job_id}", headers=auth())
        assert r.status_code == 200, r.text
        if r.json()["status"] not in ("queued", "running"):
            return dict(r.json())
        assert time.monotonic() < deadline, r.json()
        time.sleep(0.02)


def test_train_and_infer_are_queued_and_their_rows_reach_ok(client: TestClient) -> None:
    trained = ended(client, queue(client, "/api/v1/pipelines/p/train"))
    assert (trained["status"], trained["kind"], trained["pipeline_id"]) == ("ok", "train", "p")
    assert trained["series"] == 2 and trained["attempts"] == 1 and trained["error"] is None
    assert trained["submitted_at"] == trained["started_at"] == trained["ended_at"] == iso(NOW)
    assert trained["end"] == iso(NOW - 60) and trained["worker"]
    inferred = ended(client, queue(client, "/api/v1/pipelines/p/infer"))
    assert (inferred["status"], inferred["series"], inferred["anomalies"]) == ("ok", 2, 1)
    assert inferred["points"] == 2 * 60  # a first run catches up max_catchup: 1h of 1m steps
    again = client.post("/api/v1/pipelines/p/infer", headers=auth())
    assert (again.status_code, again.json()) == (200, {"status": "nothing new to score"})


def test_a_backtest_is_queued_with_times_as_the_cli_takes_them(client: TestClient) -> None:
    body = {"from": "-30m", "to": iso(NOW), "write": True}
    row = ended(client, queue(client, "/api/v1/pipelines/p/backtest", body))
    assert (row["status"], row["kind"]) == ("ok", "backtest")
    assert (row["start"], row["end"]) == (iso(NOW - 1800), iso(NOW))
    assert (row["series"], row["points"], row["anomalies"]) == (2, 60, 1)
    for bad, where in (
        ({"from": "yesterday"}, "not a time"),
        ({"from": "-30d"}, "steps"),  # over max_range_steps
        ({"to": "now"}, "from"),
        ({"from": "-1h", "writ": True}, "writ"),
    ):
        r = client.post("/api/v1/pipelines/p/backtest", json=bad, headers=auth())
        assert r.status_code == 422 and where in r.text, (bad, r.text)
    r = client.post("/api/v1/pipelines/nope/backtest", json={"from": "-1h"}, headers=auth())
    assert r.status_code == 404


def test_a_failed_job_shows_its_error_and_an_unknown_one_is_404(client: TestClient) -> None:
    client.put(
        "/api/v1/pipelines/e", json={**PIPELINE, "id": "e", "query": "absent"}, headers=auth()
    )
    row = ended(client, queue(client, "/api/v1/pipelines/e/train"))
    assert row["status"] == "error" and row["error"].startswith("no data for 'absent'")
    r = client.get("/api/v1/jobs/nope", headers=auth())
    assert r.status_code == 404
    assert r.json() == {
        "error": {"type": "NotFound", "message": "job not found: nope", "details": []}
    }


def test_the_list_filters_and_bounds_its_limit(container: Container, client: TestClient) -> None:
    for i in range(5):
        kind: Literal["train", "infer"] = "train" if i % 2 else "infer"
        container.history.record_run(
            JobRun(f"j{i}", "q" if i < 3 else "r", kind, "ok", submitted_at=NOW - 100 + i)
        )
    container.history.record_run(JobRun("j5", "r", "infer", "error", submitted_at=NOW - 50))

    def ids(**params: Any) -> list[str]:
        r = client.get("/api/v1/jobs", params=params, headers=auth())
        assert r.status_code == 200, r.text
        return [row["job_id"] for row in r.json()]

    assert ids() == ["j5", "j4", "j3", "j2", "j1", "j0"]  # newest first
    assert ids(pipeline="q") == ["j2", "j1", "j0"]
    assert ids(kind="train") == ["j3", "j1"]
    assert ids(status="error") == ["j5"]
    assert ids(pipeline="r", kind="infer", status="ok") == ["j4"]
    assert ids(limit=2) == ["j5", "j4"]
    assert ids(limit=1000)[:1] == ["j5"]
    for params in ({"limit": 1001}, {"limit": 0}, {"kind": "dance"}, {"status": "lost"}):
        r = client.get("/api/v1/jobs", params=params, headers=auth())
        assert r.status_code == 422 and r.json()["error"]["type"] == "ValidationError", params
    row = client.get("/api/v1/jobs", params={"limit": 1}, headers=auth()).json()[0]
    assert row["submitted_at"] == iso(NOW - 50) and row["started_at"] is None


def test_the_jobs_routes_need_the_token(client: TestClient) -> None:
    job_id = queue(client, "/api/v1/pipelines/p/train")
    for path in ("/api/v1/jobs", f"/api/v1/jobs/{job_id}"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401
    for route in ("train", "infer", "backtest"):
        assert client.post(f"/api/v1/pipelines/p/{route}", json={"from": "-1h"}).status_code == 401
    ended(client, job_id)
