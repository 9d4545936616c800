"""The APScheduler adapter against the JobPlanner port: what it submits, and when it stops."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from openanomaly.adapters.memory import MemoryJobPlanner, RecordingDispatcher
from openanomaly.adapters.schedule.aps import ApsScheduler
from openanomaly.domain.records import InferWindow, Job, TrainJob
from openanomaly.domain.spec import Pipeline


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
