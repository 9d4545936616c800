"""The composition root: what it builds from the settings, and that closing the container
releases all of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryMetrics,
    MemoryPipelineStore,
    MemoryRegistry,
    RecordingTelemetry,
)
from openanomaly.adapters.schedule.aps import ApsScheduler
from openanomaly.bootstrap import bootstrap
from openanomaly.domain.records import InferWindow, TrainJob
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import NoData
from openanomaly.services.validation import ValidatingPipelineStore
from openanomaly.settings import Settings

NOW = 1_800_000_000


def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=SecretStr(f"sqlite:///{tmp_path / 'oa.db'}"),
        artifacts_dir=tmp_path / "artifacts",
        pipeline_sync_every=3.0,
    )


def test_close_releases_the_client_the_database_the_workers_and_the_scheduler(
    tmp_path: Path,
) -> None:
    c = bootstrap(settings(tmp_path))
    checked = c.service.pipelines
    assert isinstance(checked, ValidatingPipelineStore)  # puts checked against the engines
    store = checked.inner
    assert isinstance(store, SqlStore) and isinstance(c.scheduler, ApsScheduler)
    assert c.scheduler._sync_every == 3.0
    assert c.claims is None  # leases in the store, but threads dispatch: no cluster to claim in
    store.list()
    assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    client = c.reader._client  # type: ignore[attr-defined]
    assert client is c.writer._client  # type: ignore[attr-defined]  # one client for both
    c.scheduler.start()

    c.close()
    c.close()  # twice is harmless

    assert client.is_closed
    assert store.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    assert not c.scheduler._aps.running
    c.dispatcher.submit(TrainJob("p", NOW))  # after close: left to the checkpoint, not run
    assert c.dispatcher.inner._pending == {}  # type: ignore[attr-defined]


def test_the_service_records_its_jobs_in_the_telemetry_handed_in() -> None:
    ts = np.arange(NOW - 7200, NOW + 1, 60)
    batch = SeriesBatch(({"__name__": "m"},), ts, np.ones((1, ts.size)))
    metrics, registry, telemetry = (
        MemoryMetrics({"m": batch}),
        MemoryRegistry(),
        RecordingTelemetry(),
    )
    spec = {"id": "p", "query": "m", "step": "1m", "train": {"window": "1h"}}
    absent = {**spec, "id": "q", "query": "absent"}
    pipelines = MemoryPipelineStore(
        [Pipeline.model_validate(spec), Pipeline.model_validate(absent)]
    )
    with bootstrap(
        Settings(),
        reader=metrics,
        writer=metrics,
        pipelines=pipelines,
        registry=registry,
        checkpoints=registry,
        artifacts=MemoryArtifactStore(),
        engines=MemoryEngineFactory(),
        telemetry=telemetry,
        clock=lambda: NOW,
    ) as c:
        c.service.run(c.service.train_job("p"))
        result = c.service.run(InferWindow("p", NOW - 600, NOW))
        with pytest.raises(NoData):
            c.service.run(c.service.train_job("q"))
    assert [j[:3] for j in telemetry.jobs] == [
        ("train", "p", "ok"),
        ("infer", "p", "ok"),
        ("train", "q", "error"),
    ]
    assert telemetry.inferences == [result]
    body, content_type = telemetry.exposition()
    assert b"job infer p ok\n" in body and content_type.startswith("text/plain")


def test_config_store_mongo_plays_every_store_role(tmp_path: Path) -> None:
    from openanomaly.adapters.config.mongo import MongoStore

    s = Settings(
        config_store="mongo",
        database_url=SecretStr("mongodb://oa:pw@127.0.0.1:1/oa"),  # never reached: lazy client
        artifacts_dir=tmp_path / "artifacts",
    )
    with bootstrap(s) as c:
        store = c.service.pipelines.inner  # type: ignore[attr-defined]
        assert isinstance(store, MongoStore)
        assert c.service.registry is store and c.service.checkpoints is store
        assert c.service.leases is store and c.history is store


def test_config_store_postgres_is_the_sql_store_with_its_history(tmp_path: Path) -> None:
    s = Settings(
        config_store="postgres",
        database_url=SecretStr("postgresql+psycopg://oa:pw@127.0.0.1:1/oa"),
        artifacts_dir=tmp_path / "artifacts",
    )
    with bootstrap(s) as c:
        store = c.service.pipelines.inner  # type: ignore[attr-defined]
        assert isinstance(store, SqlStore) and store.engine.dialect.name == "postgresql"
        assert c.history is store and c.service.registry is store


def test_history_is_kept_in_the_process_without_a_database() -> None:
    from openanomaly.adapters.memory import MemoryJobHistory

    with bootstrap(
        Settings(),
        reader=MemoryMetrics({}),
        writer=MemoryMetrics({}),
        pipelines=MemoryPipelineStore(),
        registry=MemoryRegistry(),
        checkpoints=MemoryRegistry(),
        artifacts=MemoryArtifactStore(),
        engines=MemoryEngineFactory(),
    ) as c:
        assert isinstance(c.history, MemoryJobHistory)


def test_artifact_store_s3_is_built_from_the_s3_section(tmp_path: Path) -> None:
    from openanomaly.adapters.artifacts.s3 import S3ArtifactStore

    s = Settings(
        database_url=SecretStr(f"sqlite:///{tmp_path / 'oa.db'}"),
        artifact_store="s3",
        s3={"bucket": "models", "prefix": "oa/", "endpoint_url": "http://127.0.0.1:9000"},
    )
    with bootstrap(s) as c:
        artifacts = c.service.trainer._artifacts
        assert isinstance(artifacts, S3ArtifactStore)
        assert (artifacts.bucket, artifacts.prefix) == ("models", "oa/")
        assert artifacts._client.meta.endpoint_url == "http://127.0.0.1:9000"
