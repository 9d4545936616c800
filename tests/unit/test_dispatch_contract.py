"""The JobDispatcher contract on the fake (RecordingDispatcher, jobs run in the caller's thread)
and on ThreadPoolDispatcher (jobs run on worker threads)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from openanomaly.adapters.dispatch.threads import ThreadPoolDispatcher
from openanomaly.adapters.memory import RecordingDispatcher
from openanomaly.domain.records import InferWindow, Job, TrainJob
from openanomaly.ports import JobDispatcher

Handler = Callable[[Job], None]
JOBS: list[Job] = [InferWindow("p", 60 * i, 60 * (i + 1)) for i in range(8)]
JOBS.append(TrainJob("p", 0))


@pytest.fixture(params=["memory", "threads"])
def dispatcher(request: pytest.FixtureRequest) -> Callable[[Handler], JobDispatcher]:
    """A factory: the dispatcher under test, running ``handler``."""

    def make(handler: Handler) -> JobDispatcher:
        if request.param == "memory":
            return RecordingDispatcher(handler)
        return ThreadPoolDispatcher(handler, workers=2)

    return make


class Recorder:
    """A handler that records the jobs it started and ran; slow enough that jobs queue up on
    workers."""

    def __init__(self, fail: Job | None = None) -> None:
        self.started: list[Job] = []
        self.ran: list[Job] = []
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, job: Job) -> None:
        with self._lock:
            self.started.append(job)
        time.sleep(0.005)
        if job == self.fail:
            raise RuntimeError("boom")
        with self._lock:
            self.ran.append(job)


def wait_for(recorder: Recorder, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(recorder.ran) < count and time.monotonic() < deadline:
        time.sleep(0.005)


def test_every_submitted_job_runs_once(dispatcher: Callable[[Handler], JobDispatcher]) -> None:
    recorder = Recorder()
    d = dispatcher(recorder)
    for job in JOBS:
        d.submit(job)
    wait_for(recorder, len(JOBS))
    d.close()
    assert sorted(recorder.ran, key=JOBS.index) == JOBS


def test_close_finishes_the_jobs_it_started_and_starts_no_other(
    dispatcher: Callable[[Handler], JobDispatcher],
) -> None:
    recorder = Recorder()
    d = dispatcher(recorder)
    for job in JOBS:
        d.submit(job)
    d.close()  # what is still queued is left to the checkpoint (not drained)
    started = list(recorder.started)
    d.submit(InferWindow("p", 6000, 6060))
    time.sleep(0.05)
    assert recorder.started == started and sorted(recorder.ran, key=JOBS.index) == started


def test_a_failing_job_is_logged_and_the_next_ones_still_run(
    dispatcher: Callable[[Handler], JobDispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    recorder = Recorder(fail=JOBS[0])
    d = dispatcher(recorder)
    for job in JOBS:
        d.submit(job)  # the failure does not reach the caller
    wait_for(recorder, len(JOBS) - 1)
    d.close()
    assert sorted(recorder.ran, key=JOBS.index) == JOBS[1:]
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [
        f"job {JOBS[0]} raised RuntimeError('boom')"
    ]


def test_close_releases_every_thread_it_started(
    dispatcher: Callable[[Handler], JobDispatcher],
) -> None:
    before = set(threading.enumerate())
    d = dispatcher(Recorder())
    for job in JOBS:
        d.submit(job)
    d.close()
    assert [t for t in threading.enumerate() if t not in before] == []


def test_the_thread_pool_queues_a_slow_first_training_once_whatever_the_ticks_end() -> None:
    # Each tick asks for a training on the window ending at its own time (work_key).
    go, ran = threading.Event(), Recorder()

    def held(job: Job) -> None:
        assert go.wait(10)
        ran(job)

    d = ThreadPoolDispatcher(held, workers=2)
    first = TrainJob("p", 600)
    assert d.submit(first) == first.id
    assert d.submit(TrainJob("p", 660)) == first.id
    window = InferWindow("p", 0, 600)
    assert d.submit(window) == window.id
    assert d.submit(InferWindow("p", 300, 600)) == window.id  # same end: the same window
    go.set()
    wait_for(ran, 2)
    d.close()
    assert sorted(ran.ran, key=[first, window].index) == [first, window]
