"""A pipeline reads back the same whether it came from a file or from the API."""

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from openanomaly.adapters.memory import MemoryMetrics, MemoryPipelineStore, RecordingDispatcher
from openanomaly.api.app import create_app
from openanomaly.bootstrap import bootstrap
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import Pipeline, spec_hash
from openanomaly.settings import Settings

BODY = {"id": "p", "query": "m", "step": "1m", "train": {"window": "1h"}}


def _read_back(settings: Settings, *, put: bool) -> dict[str, object]:
    ts = np.arange(0, 3601, 60)
    metrics = MemoryMetrics({"m": SeriesBatch(({"__name__": "m"},), ts, np.ones((1, ts.size)))})
    with (
        bootstrap(
            settings,
            reader=metrics,
            writer=metrics,
            pipelines=MemoryPipelineStore() if put else None,
            dispatcher=RecordingDispatcher(),
        ) as c,
        TestClient(create_app(c)) as client,
    ):
        if put:
            written = client.put("/api/v1/pipelines/p", json=BODY).json()
            assert written == client.get("/api/v1/pipelines/p").json()
        listed = client.get("/api/v1/pipelines").json()
        assert len(listed) == 1
        read: dict[str, object] = client.get("/api/v1/pipelines/p").json()
        assert "status" in listed[0]  # the list adds each pipeline's status to its spec
        assert {k: v for k, v in listed[0].items() if k != "status"} == read
        return read


def test_file_and_api_pipelines_read_back_the_same(tmp_path: Path) -> None:
    file = tmp_path / "pipelines.yaml"
    file.write_text("pipelines:\n  - {id: p, query: m, step: 1m, train: {window: 1h}}\n")
    db = f"sqlite:///{tmp_path / 'oa.db'}"
    from_file = _read_back(
        Settings(config_store="yaml", pipelines_file=file, database_url=db), put=False
    )
    from_api = _read_back(Settings(database_url=db), put=True)
    assert from_file == from_api
    assert from_api["model"] == {
        "engine": "builtin",
        "name": "profile",
        "params": {},
        "band_floor": "profile",
    }


def test_the_default_name_written_or_not_is_one_model(tmp_path: Path) -> None:
    named = Pipeline.model_validate({**BODY, "model": {"engine": "builtin", "name": "profile"}})
    with bootstrap(
        Settings(database_url=f"sqlite:///{tmp_path / 'oa.db'}"),
        reader=MemoryMetrics(),
        writer=MemoryMetrics(),
        pipelines=MemoryPipelineStore(),
        dispatcher=RecordingDispatcher(),
    ) as c:
        c.service.pipelines.put(Pipeline.model_validate(BODY))
        stored = c.service.pipelines.get("p")
    assert stored == named and spec_hash(stored) == spec_hash(named)
