"""The run history over the fakes: the rows the Service writes as its jobs start and end, the
queued rows of the dispatcher wrapper, pruning, backtest jobs."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from openanomaly.adapters.dispatch.threads import ThreadPoolDispatcher
from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryJobHistory,
    MemoryMetrics,
    MemoryPipelineStore,
    MemoryRegistry,
    RecordingDispatcher,
)
from openanomaly.bootstrap import Container, bootstrap
from openanomaly.domain.records import BacktestJob, InferWindow, Job, JobRun, TrainJob
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import NoData, NotFound, PipelineBusy
from openanomaly.services.backtest import BacktestResult
from openanomaly.services.history import HistoryDispatcher
from openanomaly.settings import Settings

STEP = 60
T0 = 1_700_006_400
NOW = T0 + 6 * 3600 + 30
WORKER = f"{socket.gethostname()}:{os.getpid()}"


class Clock:
    """A clock the test moves."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def panel(spike: bool = False) -> SeriesBatch:
    ts = np.arange(T0, T0 + 6 * 3600 + 1, STEP)
    rng = np.random.default_rng(0)
    values = 100 + rng.normal(0, 1, size=(3, ts.size))
    if spike:
        values[1, -3] += 50  # in the last 5-minute window
    labels = tuple({"__name__": "m", "host": f"h{i}"} for i in range(3))
    return SeriesBatch(labels, ts, values)


def pipeline(**kw: Any) -> Pipeline:
    base = {
        "id": "p",
        "query": "m",
        "step": "1m",
        "train": {"window": "2h"},
        "infer": {"every": "5m", "context": "30m", "delay": "1s", "max_catchup": "1h"},
    }
    return Pipeline.model_validate({**base, **kw})


def container(
    *,
    tsdb: MemoryMetrics | None = None,
    history: Any = None,
    clock: Clock | None = None,
    store: MemoryRegistry | None = None,
    pipelines: list[Pipeline] | None = None,
    **settings: Any,
) -> Container:
    tsdb = tsdb or MemoryMetrics({"m": panel()})
    store = store or MemoryRegistry()
    return bootstrap(
        Settings(**settings),
        reader=tsdb,
        writer=tsdb,
        pipelines=MemoryPipelineStore([pipeline()] if pipelines is None else pipelines),
        registry=store,
        checkpoints=store,
        artifacts=MemoryArtifactStore(),
        engines=MemoryEngineFactory(),
        dispatcher=RecordingDispatcher(),
        history=history if history is not None else MemoryJobHistory(),
        clock=clock or Clock(NOW),
    )


def infer_window(end: int = T0 + 6 * 3600) -> InferWindow:
    return InferWindow("p", end - 300, end)


def wait_for(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_training_and_an_inference_record_their_counts() -> None:
    with container(tsdb=MemoryMetrics({"m": panel(spike=True)})) as c:
        train = TrainJob("p", T0 + 5 * 3600)
        version = c.service.run(train)
        window = infer_window()
        c.service.run(window)
        trained, inferred = c.history.get_run(train.id), c.history.get_run(window.id)

    assert trained == JobRun(
        train.id,
        "p",
        "train",
        "ok",
        start=T0 + 3 * 3600,  # the train window, learnt from the pipeline
        end=T0 + 5 * 3600,
        started_at=NOW,
        ended_at=NOW,
        series=3,
        worker=WORKER,
        attempts=1,
    )
    assert getattr(version, "series", None) == 3
    assert (inferred.status, inferred.series, inferred.points) == ("ok", 3, 15)
    assert inferred.anomalies == 1 and inferred.error is None
    assert (inferred.start, inferred.end) == (window.start, window.end)


def test_a_failure_records_its_message_with_credentials_masked() -> None:
    class Leaky(MemoryMetrics):
        def query_range(
            self, query: str, start: int, end: int, step: int, *, recent: bool = False
        ) -> SeriesBatch:
            raise RuntimeError("connect to http://admin:hunter2@tsdb:9090 failed")

    with container(tsdb=Leaky()) as c:
        job = TrainJob("p", T0 + 5 * 3600)
        with pytest.raises(RuntimeError):
            c.service.run(job)
        row = c.history.get_run(job.id)
    assert row.status == "error" and row.ended_at == NOW
    assert row.error == "RuntimeError: connect to http://admin:***@tsdb:9090 failed"

    with container(tsdb=MemoryMetrics()) as c:  # our own error: its message as it is
        job = TrainJob("p", T0 + 5 * 3600)
        with pytest.raises(NoData):
            c.service.run(job)
        row = c.history.get_run(job.id)
    assert row.status == "error" and row.error is not None and row.error.startswith("no data for")


def test_a_held_lease_is_busy_a_deleted_pipeline_and_a_written_window_skipped() -> None:
    store = MemoryRegistry()
    store.acquire("p", "someone-else", ttl=600)
    with container(store=store) as c:
        busy = infer_window()
        with pytest.raises(PipelineBusy):
            c.service.run(busy)
        assert c.history.get_run(busy.id).status == "busy"
        assert c.history.get_run(busy.id).error is None

    with container() as c:
        first, again = infer_window(), infer_window()
        c.service.run(first)
        c.service.run(again)  # the checkpoint is past it already: nothing to do
        assert c.history.get_run(first.id).status == "ok"
        assert c.history.get_run(again.id).status == "skipped"
        c.service.pipelines.delete("p")
        gone = TrainJob("p", T0 + 5 * 3600)
        c.service.run_logged(gone)
        assert c.history.get_run(gone.id).status == "skipped"
        other = InferWindow("p", T0, T0 + 300)
        with pytest.raises(NotFound):
            c.service.run(other)
        assert c.history.get_run(other.id).status == "skipped"


def test_a_redelivered_job_updates_its_own_row() -> None:
    clock = Clock(NOW)
    with container(clock=clock) as c:
        job = TrainJob("p", T0 + 5 * 3600)
        c.dispatcher.submit(job)  # the recording dispatcher only queues it
        clock.now += 5
        c.service.run(job)
        clock.now += 60
        c.service.run(job)  # delivered again: a worker died before acknowledging it
        rows = c.history.runs()
    assert [r.job_id for r in rows] == [job.id]
    assert rows[0].attempts == 2 and rows[0].status == "ok"
    assert (rows[0].submitted_at, rows[0].started_at) == (NOW, NOW + 65)


def test_a_job_goes_queued_running_ok() -> None:
    go, reading, release = threading.Event(), threading.Event(), threading.Event()

    class Slow(MemoryMetrics):
        def query_range(
            self, query: str, start: int, end: int, step: int, *, recent: bool = False
        ) -> SeriesBatch:
            reading.set()
            assert release.wait(10)
            return super().query_range(query, start, end, step)

    with container(tsdb=Slow({"m": panel()})) as c:

        def handler(job: Job) -> None:
            assert go.wait(10)
            c.service.run_logged(job)

        inner = ThreadPoolDispatcher(handler, workers=1)
        dispatcher = HistoryDispatcher(inner, c.history, clock=c.service.clock)
        job = TrainJob("p", T0 + 5 * 3600)
        assert dispatcher.submit(job) == job.id
        queued = c.history.get_run(job.id)
        assert (queued.status, queued.submitted_at, queued.started_at) == ("queued", NOW, None)
        go.set()
        assert reading.wait(10)
        running = c.history.get_run(job.id)
        assert (running.status, running.submitted_at, running.started_at) == ("running", NOW, NOW)
        assert running.worker == WORKER and running.attempts == 1
        release.set()
        wait_for(lambda: c.history.get_run(job.id).status == "ok")
        dispatcher.close()
        assert c.history.get_run(job.id).series == 3


def test_a_duplicate_the_dispatcher_refuses_gets_no_row_and_the_first_ones_id() -> None:
    history, go = MemoryJobHistory(), threading.Event()

    def held(job: Job) -> None:
        assert go.wait(10)

    inner = ThreadPoolDispatcher(held, workers=1)
    dispatcher = HistoryDispatcher(inner, history)
    first, same = TrainJob("p", 600), TrainJob("p", 600)
    assert first.id != same.id and first == same
    assert dispatcher.submit(first) == first.id
    assert dispatcher.submit(same) == first.id  # the same work, queued already
    assert [r.job_id for r in history.runs()] == [first.id]
    with pytest.raises(NotFound):
        history.get_run(same.id)
    go.set()
    dispatcher.close()
    after = TrainJob("p", 1200)
    dispatcher.submit(after)  # closed: not taken, so no row saying it is queued
    assert [r.job_id for r in history.runs()] == [first.id]


def test_a_failing_history_never_fails_the_job(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(MemoryJobHistory):
        def record_run(self, run: JobRun) -> None:
            raise OSError("disk full")

    with container(history=Broken()) as c, caplog.at_level(logging.WARNING):
        job = TrainJob("p", T0 + 5 * 3600)
        assert getattr(c.service.run(job), "series", None) == 3
        assert c.dispatcher.submit(TrainJob("p", T0)) is not None
    assert "not recorded" in caplog.text and "disk full" in caplog.text


def test_old_runs_are_pruned_at_most_once_an_hour() -> None:
    clock, history = Clock(NOW), MemoryJobHistory()
    day = 86400.0

    def row(job_id: str, status: Any, at: float, *, ended: bool = True) -> JobRun:
        return JobRun(
            job_id,
            "p",
            "infer",
            status,
            submitted_at=at,
            started_at=at if status != "queued" else None,
            ended_at=at if ended else None,
        )

    history.record_run(row("old", "ok", NOW - 3 * day))
    history.record_run(row("recent", "ok", NOW - 1 * day))
    history.record_run(row("lost", "running", NOW - 3 * day, ended=False))
    history.record_run(row("dropped", "queued", NOW - 3 * day, ended=False))
    history.record_run(row("waiting", "queued", NOW - 60, ended=False))
    with container(history=history, clock=clock, job_history_days=2) as c:
        c.service.run(TrainJob("p", T0 + 5 * 3600))  # ends a job: prunes
        left = {r.job_id: r for r in history.runs()}
        assert {"recent", "lost", "dropped", "waiting"} <= set(left) and "old" not in left
        lost, dropped = left["lost"], left["dropped"]
        assert (lost.status, lost.ended_at) == ("error", NOW) and "did not end" in str(lost.error)
        assert (dropped.status, dropped.ended_at) == ("skipped", NOW)
        assert left["waiting"].status == "queued"

        history.record_run(row("older", "ok", NOW - 3 * day))
        clock.now += 1800  # within the hour: not pruned again
        c.service.run(TrainJob("p", T0 + 5 * 3600))
        assert "older" in {r.job_id for r in history.runs()}
        clock.now += 1801
        c.service.run(TrainJob("p", T0 + 5 * 3600))
        assert "older" not in {r.job_id for r in history.runs()}
        assert {"recent", "lost", "dropped"} <= {r.job_id for r in history.runs()}


def test_a_backtest_job_writes_its_outputs_and_records_what_it_flagged() -> None:
    tsdb = MemoryMetrics({"m": panel(spike=True)})
    with container(tsdb=tsdb) as c:
        job = BacktestJob("p", T0 + 5 * 3600, T0 + 6 * 3600, write=True)
        result = c.service.run(job)
        assert isinstance(result, BacktestResult) and result.written is not None
        row = c.history.get_run(job.id)
        sent = len(tsdb.written)
        same = c.service.run(BacktestJob("p", T0 + 5 * 3600, T0 + 6 * 3600))
    assert (row.status, row.kind, row.start, row.end) == ("ok", "backtest", job.start, job.end)
    assert (row.series, row.points, row.anomalies) == (3, 180, result.anomalies)
    assert result.anomalies >= 1 and row.error is None
    assert result.written.sent == tsdb.duplicates() + sum(len(s) for s in tsdb.stored.values())
    assert result.written.sent == 4 * 180  # score, pred, lower, upper at each point
    assert isinstance(same, BacktestResult) and same.written is None
    assert len(tsdb.written) == sent  # nothing more written without ``write``
