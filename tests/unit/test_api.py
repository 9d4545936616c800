"""The HTTP API over the in-memory fakes: routes, token, error mapping, metrics."""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryMetrics,
    MemoryPipelineStore,
    MemoryRegistry,
    RecordingDispatcher,
)
from openanomaly.api.app import create_app
from openanomaly.bootstrap import Container, bootstrap
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.timeparse import iso
from openanomaly.ports import JobHandler
from openanomaly.settings import Settings

NOW = 1_800_000_000
TOKEN = "t0ken-abc"


def fake_container(
    settings: Settings,
    *,
    tsdb: type[MemoryMetrics] = MemoryMetrics,
    engines: MemoryEngineFactory | None = None,
) -> Container:
    """A container over the fakes, the TSDB holding two hours of one series ``m``."""
    ts = np.arange(NOW - 7200, NOW + 1, 60)
    batch = SeriesBatch(({"__name__": "m", "i": "0"},), ts, np.ones((1, ts.size)))
    metrics, registry = tsdb({"m": batch}), MemoryRegistry()
    handler: list[JobHandler] = []
    c = bootstrap(
        settings,
        reader=metrics,
        writer=metrics,
        pipelines=MemoryPipelineStore(),
        registry=registry,
        checkpoints=registry,
        artifacts=MemoryArtifactStore(),
        engines=engines or MemoryEngineFactory(),
        dispatcher=running_dispatcher(handler),
        clock=lambda: NOW,
    )
    handler.append(c.service.run_logged)
    return c


def running_dispatcher(handler: list[JobHandler]) -> RecordingDispatcher:
    """A dispatcher that runs each job at once in the submitting thread, on ``handler[0]``
    (the container's ``service.run_logged``, appended once bootstrap has built it)."""
    return RecordingDispatcher(lambda job: handler[0](job))  # noqa: PLW0108 (set later)


def job(client: TestClient, route: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST to a route that queues a job; its run, read back from where the answer points."""
    answer = client.post(route, json=body, headers=auth())
    assert answer.status_code == 202, answer.text
    job_id = answer.json()["job_id"]
    assert answer.json() == {"job_id": job_id, "status": "queued"}
    assert answer.headers["location"] == f"/api/v1/jobs/{job_id}"
    run = client.get(answer.headers["location"], headers=auth())
    assert run.status_code == 200 and run.json()["job_id"] == job_id
    return dict(run.json())


@pytest.fixture
def client() -> Iterator[TestClient]:
    with (
        fake_container(Settings(api={"token": TOKEN})) as c,
        TestClient(create_app(c)) as tc,
    ):
        yield tc


def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


PIPELINE = {"id": "p", "query": "m", "step": "1m", "train": {"window": "1h"}}


def test_token_is_required_for_the_api_but_not_for_health(client: TestClient) -> None:
    assert client.get("/api/v1/pipelines").status_code == 401
    bad = {"Authorization": "Bearer nope"}
    assert client.get("/api/v1/pipelines", headers=bad).status_code == 401
    assert client.get("/api/v1/pipelines", headers=auth()).json() == []
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"tsdb": {"status": "ok"}, "store": {"status": "ok"}}


def test_pipeline_lifecycle_and_jobs(client: TestClient) -> None:
    r = client.put("/api/v1/pipelines/p", json=PIPELINE, headers=auth())
    assert r.status_code == 200 and r.json()["step"] == "1m"
    assert client.get("/api/v1/pipelines/p", headers=auth()).json()["query"] == "m"
    trained = job(client, "/api/v1/pipelines/p/train")
    assert (trained["status"], trained["kind"], trained["series"]) == ("ok", "train", 1)
    assert (trained["started_at"], trained["end"]) == (iso(NOW), iso(NOW - 60))  # RFC 3339
    assert trained["start"] == "2027-01-15T06:59:00Z"  # the train end - 1h
    models = client.get("/api/v1/pipelines/p/models", headers=auth()).json()
    assert [m["active"] for m in models] == [True]
    assert models[0]["train_start"] == "2027-01-15T06:59:00Z"
    inferred = job(client, "/api/v1/pipelines/p/infer")
    assert inferred["status"] == "ok" and inferred["series"] == 1
    assert inferred["points"] > 0 and inferred["anomalies"] == 0
    assert inferred["end"].endswith("Z") and iso(NOW) >= inferred["end"] > inferred["start"]
    again = client.post("/api/v1/pipelines/p/infer", headers=auth())
    assert (again.status_code, again.json()) == (200, {"status": "nothing new to score"})
    metrics = client.get("/metrics").text
    assert 'openanomaly_jobs_total{kind="infer",pipeline="p",status="ok"} 1.0' in metrics
    assert 'openanomaly_points_scored_total{pipeline="p"}' in metrics
    assert client.delete("/api/v1/pipelines/p", headers=auth()).status_code == 204


def test_errors_map_to_http_codes_with_a_message(client: TestClient) -> None:
    r = client.get("/api/v1/pipelines/nope", headers=auth())
    assert r.status_code == 404 and "nope" in r.json()["error"]["message"]
    r = client.put("/api/v1/pipelines/x", json={**PIPELINE, "id": "y"}, headers=auth())
    assert r.status_code == 422 and "differs" in r.json()["error"]["message"]
    r = client.put(
        "/api/v1/pipelines/p", json={**PIPELINE, "scoring": {"interval": 2}}, headers=auth()
    )
    assert r.status_code == 422 and "interval" in r.text
    client.put(
        "/api/v1/pipelines/e", json={**PIPELINE, "id": "e", "query": "absent"}, headers=auth()
    )
    failed = job(client, "/api/v1/pipelines/e/train")
    assert failed["status"] == "error" and "no data" in failed["error"]
    r = client.post("/api/v1/pipelines/nope/train", headers=auth())
    assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"


@pytest.mark.parametrize(
    ("corrupt", "status", "error"), [(False, 503, "StoreUnavailable"), (True, 500, "StoreError")]
)
def test_a_failing_store_is_an_http_error_and_not_ready(
    tmp_path: Path, corrupt: bool, status: int, error: str
) -> None:
    db = tmp_path / "openanomaly.db" if corrupt else tmp_path / "missing" / "openanomaly.db"
    if corrupt:
        db.write_bytes(b"not a database, " * 64)
    metrics = MemoryMetrics()
    settings = Settings(database_url=SecretStr(f"sqlite:///{db}"))
    with (
        bootstrap(settings, reader=metrics, writer=metrics, dispatcher=RecordingDispatcher()) as c,
        TestClient(create_app(c)) as tc,
    ):
        r = tc.get("/api/v1/pipelines")
        assert (r.status_code, r.json()["error"]["type"]) == (status, error)
        ready = tc.get("/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
        checks = ready.json()["checks"]
        assert checks["store"]["status"] == "down" and checks["store"]["error"] == error
        assert checks["tsdb"] == {"status": "ok"}


def test_a_gitops_file_is_read_only_through_the_api(tmp_path: Path) -> None:
    path = tmp_path / "pipelines.yaml"
    text = "pipelines:\n  - {id: p, query: m, step: 1m, train: {window: 1h}}  # ours\n"
    path.write_text(text)
    metrics = MemoryMetrics()
    db = SecretStr(f"sqlite:///{tmp_path / 'openanomaly.db'}")
    settings = Settings(config_store="yaml", pipelines_file=path, database_url=db)
    with (
        bootstrap(settings, reader=metrics, writer=metrics, dispatcher=RecordingDispatcher()) as c,
        TestClient(create_app(c)) as tc,
    ):
        put = tc.put("/api/v1/pipelines/q", json={**PIPELINE, "id": "q"})
        delete = tc.delete("/api/v1/pipelines/p")
        assert tc.get("/api/v1/pipelines/p").status_code == 200
    for r in (put, delete):
        assert r.status_code == 409 and r.json()["error"]["type"] == "ReadOnlyFile"
        assert str(path) in r.json()["error"]["message"]
    assert path.read_text() == text


def test_metrics_carry_the_process_and_no_created_samples(client: TestClient) -> None:
    client.put("/api/v1/pipelines/p", json=PIPELINE, headers=auth())
    client.put("/api/v1/pipelines/e", json={**PIPELINE, "id": "e", "query": "no"}, headers=auth())
    client.post("/api/v1/pipelines/e/train", headers=auth())

    text = client.get("/metrics").text

    assert "process_resident_memory_bytes " in text and "python_info{" in text
    assert "_created" not in text
    assert 'openanomaly_failures_total{stage="job"} 1.0' in text
    assert 'openanomaly_failures_total{stage="sync"} 0.0' in text


def test_status_shows_the_last_jobs_and_survives_a_restart(tmp_path: Path) -> None:
    db = SecretStr(f"sqlite:///{tmp_path / 'openanomaly.db'}")
    ts = np.arange(NOW - 7200, NOW + 1, 60)
    metrics = MemoryMetrics({"m": SeriesBatch(({"__name__": "m"},), ts, np.ones((1, ts.size)))})

    def app() -> Container:
        handler: list[JobHandler] = []
        c = bootstrap(
            Settings(database_url=db),
            reader=metrics,
            writer=metrics,
            artifacts=MemoryArtifactStore(),
            engines=MemoryEngineFactory(),
            dispatcher=running_dispatcher(handler),
            clock=lambda: NOW,
        )
        handler.append(c.service.run_logged)
        return c

    with app() as c, TestClient(create_app(c)) as tc:
        tc.put("/api/v1/pipelines/p", json=PIPELINE)
        tc.put("/api/v1/pipelines/e", json={**PIPELINE, "id": "e", "query": "absent"})
        assert tc.post("/api/v1/pipelines/p/train").status_code == 202
        assert tc.post("/api/v1/pipelines/e/train").status_code == 202
    with app() as c, TestClient(create_app(c)) as tc:  # a restart
        p = tc.get("/api/v1/pipelines/p/status").json()
        listed = {s["id"]: s["status"] for s in tc.get("/api/v1/pipelines").json()}

    assert p["state"] == "ok" and p["ok"] and p["last_infer"] is None
    assert p["last_train"] == {"at": NOW, "ok": True, "error": None, "error_at": None}
    assert p["model"]["series"] == 1 and p["model"]["age_seconds"] == 0
    assert p["flagged_24h"] is None  # the fake TSDB cannot count: unknown, not 0
    e = listed["e"]
    assert e["last_train"]["ok"] is False and e["last_error"].startswith("train: ")
    assert e["last_error_at"] == NOW and e["model"] is None
    assert listed["p"] == p
