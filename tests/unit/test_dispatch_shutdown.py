"""The thread dispatcher's shutdown: queued windows are left to the checkpoint, the running one
finishes within the grace period, and one that does not is not waited for."""

from __future__ import annotations

import threading
import time

from openanomaly.adapters.dispatch.threads import ThreadPoolDispatcher
from openanomaly.domain.records import InferWindow, Job


class SlowHandler:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.started: list[Job] = []
        self.finished: list[Job] = []
        self.running = threading.Event()

    def __call__(self, job: Job) -> None:
        self.started.append(job)
        self.running.set()
        time.sleep(self.seconds)
        self.finished.append(job)


def windows(n: int) -> list[InferWindow]:
    return [InferWindow("p", 60 * i, 60 * (i + 1)) for i in range(n)]


def test_close_finishes_the_running_job_and_drops_the_backlog() -> None:
    handler = SlowHandler(0.5)
    dispatcher = ThreadPoolDispatcher(handler, workers=1, grace=10)
    for job in windows(50):  # 25 s of work if the backlog were drained
        dispatcher.submit(job)
    assert handler.running.wait(5)

    began = time.monotonic()
    dispatcher.close()

    assert time.monotonic() - began < 2
    assert handler.finished == handler.started == windows(1)
    dispatcher.submit(windows(51)[-1])  # after close: not taken
    time.sleep(0.2)
    assert handler.started == windows(1)


def test_close_gives_up_on_a_job_running_past_the_grace_period() -> None:
    handler = SlowHandler(30)
    dispatcher = ThreadPoolDispatcher(handler, workers=2, grace=0.5)
    dispatcher.submit(windows(1)[0])
    assert handler.running.wait(5)

    began = time.monotonic()
    dispatcher.close()

    assert 0.4 < time.monotonic() - began < 2
    assert handler.finished == []


def test_a_job_queued_twice_runs_once() -> None:
    handler = SlowHandler(0.1)
    dispatcher = ThreadPoolDispatcher(handler, workers=1, grace=5)
    job = windows(1)[0]
    for _ in range(3):
        dispatcher.submit(job)
    time.sleep(0.5)
    dispatcher.close()
    assert handler.finished == [job]
