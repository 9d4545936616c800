"""The light dispatcher: a thread pool in the same process."""

from __future__ import annotations

import functools
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor

from openanomaly.domain.records import Job
from openanomaly.ports import JobHandler

log = logging.getLogger(__name__)


class ThreadPoolDispatcher:
    """Runs jobs on ``workers`` threads. A job already queued or running is not queued again
    (a slow pipeline does not pile up copies of the same window)."""

    def __init__(self, handler: JobHandler, *, workers: int = 4) -> None:
        self._handler = handler
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="oa-worker")
        self._pending: set[Job] = set()
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        with self._lock:
            if job in self._pending:
                log.debug("skip duplicate %s", job)
                return
            self._pending.add(job)
        future = self._pool.submit(self._handler, job)
        future.add_done_callback(functools.partial(self._done, job))

    def _done(self, job: Job, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(job)
        exc = future.exception()
        if exc is not None:
            log.error("job %s raised %r", job, exc)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=False)
