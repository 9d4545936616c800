"""The light dispatcher: worker threads in the same process."""

from __future__ import annotations

import collections
import logging
import threading
import time

from openanomaly.domain.records import Job, work_key
from openanomaly.ports import JobHandler

log = logging.getLogger(__name__)


class ThreadPoolDispatcher:
    """Runs jobs on ``workers`` threads. A job whose work (``work_key``) is already queued or
    running is not queued again (a slow pipeline does not pile up copies of the same window,
    nor a slow first training a copy per tick).

    ``close`` is the shutdown: no new job is taken, the queued ones are dropped (each
    pipeline's checkpoint still has them: the next start scores them), and the running ones get
    ``grace`` seconds to finish. The threads are daemons, so a job still running after that
    does not hold the process; the checkpoint and the write journal recover its window.
    """

    def __init__(self, handler: JobHandler, *, workers: int = 4, grace: float = 25.0) -> None:
        self._handler = handler
        self._workers = workers
        self._grace = grace
        self._queue: collections.deque[Job] = collections.deque()
        self._pending: dict[str, str] = {}  # work_key of a job queued or running -> its id
        self._running = 0
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._cond = threading.Condition()

    def submit(self, job: Job) -> str:
        with self._cond:
            if self._closed:
                log.info("shutting down: %s left to the checkpoint", job)
                return job.id
            key = work_key(job)
            if key in self._pending:
                log.debug("skip duplicate %s", job)
                return self._pending[key]
            self._pending[key] = job.id
            self._queue.append(job)
            if len(self._threads) < min(self._workers, len(self._pending)):
                self._spawn()
            self._cond.notify()
            return job.id

    def close(self) -> None:
        deadline = time.monotonic() + self._grace
        with self._cond:
            self._closed = True
            dropped = len(self._queue)
            for job in self._queue:
                self._pending.pop(work_key(job), None)
            self._queue.clear()
            self._cond.notify_all()
            if dropped:
                log.info("shutdown: %d queued jobs left to the checkpoint", dropped)
            while self._running and (left := deadline - time.monotonic()) > 0:
                self._cond.wait(left)
            running = self._running
        if running:
            log.warning(
                "shutdown: %d jobs still running after the %.0fs grace period; their windows "
                "are recovered from the checkpoint at the next start",
                running,
                self._grace,
            )
            return
        for thread in self._threads:  # idle now: each returns as soon as it sees the close
            thread.join(max(0.0, deadline - time.monotonic()))

    def _spawn(self) -> None:
        thread = threading.Thread(
            target=self._work, name=f"oa-worker-{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                self._running += 1
            try:
                self._handler(job)
            except Exception as exc:  # the handler logs its own failures; this is a last resort
                log.error("job %s raised %r", job, exc)
            finally:
                with self._cond:
                    self._running -= 1
                    self._pending.pop(work_key(job), None)
                    self._cond.notify_all()
