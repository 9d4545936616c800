"""Model rollback: the CLI and the API move the active pointer back, the Inferencer scores with
the version rolled back to from its next window, and the scheduler does not retrain over it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryMetrics,
    MemoryPipelineStore,
    MemoryRegistry,
    RecordingDispatcher,
)
from openanomaly.api.app import create_app
from openanomaly.bootstrap import Container, bootstrap, engine_factory
from openanomaly.cli import app
from openanomaly.domain.records import InferResult, InferWindow, ModelVersion, TrainJob
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import Pipeline, spec_hash
from openanomaly.errors import ConfigError, NotFound
from openanomaly.services.rollback import rollback
from openanomaly.settings import Settings

NOW = 1_800_000_000 - 1_800_000_000 % 3600
SPEC = {"id": "p", "query": "m", "step": "1m", "train": {"window": "1h"}}


@pytest.fixture
def container() -> Iterator[Container]:
    # The series reads 1.0 for two hours, then 5.0: a model fitted on the first hour before
    # NOW-2h forecasts 1, one fitted on the last hour forecasts 5.
    ts = np.arange(NOW - 4 * 3600, NOW + 1, 60)
    values = np.where(ts <= NOW - 2 * 3600, 1.0, 5.0)[None, :]
    metrics, registry = (
        MemoryMetrics({"m": SeriesBatch(({"__name__": "m"},), ts, values)}),
        (MemoryRegistry()),
    )
    with bootstrap(
        Settings(),
        reader=metrics,
        writer=metrics,
        pipelines=MemoryPipelineStore([Pipeline.model_validate(SPEC)]),
        registry=registry,
        checkpoints=registry,
        artifacts=MemoryArtifactStore(),
        engines=MemoryEngineFactory(),
        dispatcher=RecordingDispatcher(),
        clock=lambda: NOW,
    ) as c:
        yield c


def train_two(c: Container) -> tuple[ModelVersion, ModelVersion]:
    old = c.service.run(TrainJob("p", NOW - 2 * 3600))
    new = c.service.run(TrainJob("p", NOW))
    assert isinstance(old, ModelVersion) and isinstance(new, ModelVersion)
    return old, new


def predicted(c: Container, start: int, end: int) -> tuple[str | None, set[float]]:
    metrics = c.writer
    assert isinstance(metrics, MemoryMetrics)
    before = len(metrics.written)
    result = c.service.run(InferWindow("p", start, end))
    assert isinstance(result, InferResult)
    preds = {
        float(v)
        for s in metrics.written[before:]
        if s.labels["__name__"] == "anomaly_pred"
        for v in s.values
    }
    return result.model_version, preds


def test_after_a_rollback_inference_uses_the_earlier_model(container: Container) -> None:
    c = container
    old, new = train_two(c)
    assert predicted(c, NOW - 600, NOW - 300) == (new.version, {5.0})  # cached now

    back = rollback(c.service.pipelines, c.service.registry, "p")

    assert back == old and c.service.registry.active("p") == old
    assert predicted(c, NOW - 300, NOW) == (old.version, {1.0})
    assert not c.service.needs_training("p")  # the scheduler leaves it in place
    assert [v.version for v in c.service.registry.versions("p")] == [new.version, old.version]


def test_rollback_refuses_when_there_is_nothing_before(container: Container) -> None:
    c = container
    with pytest.raises(ConfigError, match="no model version before no active version"):
        rollback(c.service.pipelines, c.service.registry, "p")
    c.service.run(TrainJob("p", NOW))
    with pytest.raises(ConfigError, match=r"before the active one \(.*\): nothing to roll back"):
        rollback(c.service.pipelines, c.service.registry, "p")
    with pytest.raises(NotFound, match="model version not found: p/nope"):
        rollback(c.service.pipelines, c.service.registry, "p", to="nope")


def test_rollback_refuses_a_version_of_another_spec(container: Container) -> None:
    c = container
    old, new = train_two(c)
    c.service.pipelines.put(Pipeline.model_validate({**SPEC, "query": "m * 2"}))

    with pytest.raises(ConfigError, match="trained for another spec"):
        rollback(c.service.pipelines, c.service.registry, "p", to=old.version)
    assert c.service.registry.active("p") == new


def test_the_api_activates_a_version(container: Container) -> None:
    c = container
    old, new = train_two(c)
    with TestClient(create_app(c)) as client:
        answer = client.post(f"/api/v1/pipelines/p/models/{old.version}/activate")
        assert answer.status_code == 200
        assert (answer.json()["version"], answer.json()["active"]) == (old.version, True)
        models = client.get("/api/v1/pipelines/p/models").json()
        assert [(m["version"], m["active"]) for m in models] == [
            (new.version, False),
            (old.version, True),
        ]
        missing = client.post("/api/v1/pipelines/p/models/nope/activate")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "NotFound"


def test_the_cli_lists_and_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'oa.db'}"
    store = SqlStore(url)
    pipeline = Pipeline.model_validate(SPEC)
    store.put(pipeline)
    # the spec as the CLI reads it: the engine's default model name filled in
    pipeline = pipeline.model_copy(
        update={"model": engine_factory(Settings()).resolve(pipeline.model)}
    )
    for i, name in enumerate(["v1", "v2", "v3"]):
        store.record(version(name, spec_hash(pipeline), float(NOW + i)))
    monkeypatch.setenv("OA_DATABASE_URL", url)
    monkeypatch.setenv("OA_TSDB__FLAVOR", "prometheus")  # no probe of a TSDB
    monkeypatch.setenv("OA_ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    runner = CliRunner()

    listed = runner.invoke(app, ["models", "list", "p"], terminal_width=200)
    assert listed.exit_code == 0, listed.output
    starred = [line for line in listed.output.splitlines() if "*" in line]
    assert len(starred) == 1 and "v3" in starred[0] and "v1" in listed.output

    first = runner.invoke(app, ["models", "rollback", "p"])
    assert first.exit_code == 0, first.output
    assert "active model version v2 (was v3)" in first.output
    second = runner.invoke(app, ["models", "rollback", "p"])
    assert "active model version v1 (was v2)" in second.output
    refused = runner.invoke(app, ["models", "rollback", "p"])
    assert refused.exit_code != 0 and "nothing to roll back to" in str(refused.exception)
    forward = runner.invoke(app, ["models", "rollback", "p", "--to", "v3"])
    assert forward.exit_code == 0, forward.output
    assert store.active("p") is not None and store.active("p").version == "v3"  # type: ignore[union-attr]
    store.close()


def version(name: str, digest: str, created_at: float) -> ModelVersion:
    return ModelVersion("p", name, created_at, "memory", "mean", digest, 1, None, 0, 60, 0.1)
