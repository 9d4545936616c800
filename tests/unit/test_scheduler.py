"""The APScheduler adapter against the JobPlanner port: what it submits, and when it stops."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from openanomaly.adapters.memory import (
    MemoryEngineFactory,
    MemoryJobPlanner,
    MemoryMetrics,
    MemoryPipelineStore,
    RecordingDispatcher,
)
from openanomaly.adapters.schedule.aps import ApsScheduler
from openanomaly.bootstrap import bootstrap
from openanomaly.domain.records import InferWindow, Job, TrainJob
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import Pipeline
from openanomaly.settings import Settings

NOW = 1_800_000_000


def pipeline(pid: str, **fields: object) -> Pipeline:
    spec = {"id": pid, "query": "m", "step": "1s", "infer": {"every": "1s"}, "train": {}}
    return Pipeline.model_validate(spec | fields)


def wait_for(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_untrained_pipelines_are_trained_at_once_and_due_windows_submitted() -> None:
    window = InferWindow("a", 0, 60)
    planner = MemoryJobPlanner(
        [pipeline("a"), pipeline("b"), pipeline("off", enabled=False)],
        untrained={"b"},
        due={"a": window},
        now=600,
    )
    dispatcher = RecordingDispatcher()
    scheduler = ApsScheduler(planner, dispatcher, sync_every=60)
    scheduler.start()
    try:
        assert dispatcher.submitted == [TrainJob("b", 600)]  # before any tick
        wait_for(lambda: window in dispatcher.submitted)
    finally:
        scheduler.stop()
    jobs: list[Job] = list(dispatcher.submitted)
    assert {j.pipeline_id for j in jobs} == {"a", "b"}  # never the disabled one
    assert jobs.count(window) == 1  # due once, submitted once


def test_stop_stops_submitting_and_is_safe_twice() -> None:
    planner = MemoryJobPlanner([pipeline("a")], untrained={"a"})
    dispatcher = RecordingDispatcher()
    scheduler = ApsScheduler(planner, dispatcher, sync_every=60)
    scheduler.start()
    wait_for(lambda: len(dispatcher.submitted) >= 2)  # the first train, then a tick's
    scheduler.stop()
    scheduler.stop()
    count = len(dispatcher.submitted)
    time.sleep(1.5)
    assert len(dispatcher.submitted) == count


def test_a_stopped_scheduler_never_started_is_fine_and_sync_every_is_checked() -> None:
    ApsScheduler(MemoryJobPlanner(), RecordingDispatcher()).stop()
    with pytest.raises(ValueError, match="sync_every"):
        ApsScheduler(MemoryJobPlanner(), RecordingDispatcher(), sync_every=0)


def test_a_pipeline_deleted_while_running_stops_without_a_traceback(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    ts = np.arange(NOW - 3600, NOW + 1, 1)
    metrics = MemoryMetrics({"m": SeriesBatch(({"__name__": "m"},), ts, np.ones((1, ts.size)))})
    store = MemoryPipelineStore([pipeline("p", train={"window": "10m"})])
    db = SecretStr(f"sqlite:///{tmp_path / 'oa.db'}")  # registry and checkpoints
    settings = Settings(  # the ticks run on between syncs
        pipeline_sync_every=3600, database_url=db, artifacts_dir=tmp_path / "artifacts"
    )
    with bootstrap(
        settings,
        reader=metrics,
        writer=metrics,
        pipelines=store,
        engines=MemoryEngineFactory(),
        clock=lambda: NOW,
    ) as c:
        caplog.set_level(logging.INFO)
        c.scheduler.start()
        wait_for(lambda: c.service.registry.active("p") is not None)
        c.service.pipelines.delete("p")
        wait_for(lambda: "inference tick is skipped" in caplog.text)  # the tick's, before a sync
        c.service.run_logged(InferWindow("p", NOW - 60, NOW))  # a job queued before the delete
        c.scheduler.sync(c.service.enabled_pipelines())
        assert c.service.health.reason("p") is None  # deleted, not broken
        page = c.telemetry.exposition()[0].decode()

    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    skipped = [r for r in caplog.records if "job for pipeline=p skipped" in r.getMessage()]
    assert [r.levelno for r in skipped] == [logging.INFO]
    assert 'openanomaly_failures_total{stage="tick"} 0.0' in page
