"""The cluster dispatcher: jobs sent as Celery tasks, run by ``openanomaly worker``."""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Any

from kombu.exceptions import OperationalError

from openanomaly.domain.records import Job
from openanomaly.errors import StoreUnavailable

log = logging.getLogger(__name__)


class CeleryDispatcher:
    """Sends each job as the task ``openanomaly.<kind>`` with the job as plain values
    (``dataclasses.asdict``) under its own id as task id; the app's routes put it on its kind's
    queue (``adapters/celery/app.py``).

    Unlike the thread pool, it does not look for the same work already queued: that would take
    a shared registry of queued jobs, and it is not needed, since a window is idempotent (a
    copy that comes second finds the checkpoint past it, or the lease held, and writes
    nothing). ``close`` releases the app's broker connections; a job submitted after it is left
    to the checkpoint, as the thread pool does.
    """

    def __init__(self, app: Any) -> None:
        self._app = app
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, job: Job) -> str:
        with self._lock:
            if self._closed:
                log.info("shutting down: %s left to the checkpoint", job)
                return job.id
        try:
            self._app.send_task(
                f"openanomaly.{job.kind}", args=(dataclasses.asdict(job),), task_id=job.id
            )
        except (OperationalError, OSError) as exc:  # after kombu's publish retries
            raise StoreUnavailable(
                f"the Celery broker cannot be reached: {exc}", store="broker"
            ) from None
        return job.id

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._app.close()
