"""The job tasks ``openanomaly.train``, ``openanomaly.infer`` and ``openanomaly.backtest``.

A message is the job as plain values (``payload.py``) under the job's own id as task id. Each
worker process builds its container once, on its first task (not at ``worker_process_init``:
Celery kills a pool process that is not up within ``worker_proc_alive_timeout``, 4 s, and a
bootstrap imports the engines and may probe the TSDB), and closes it when the process ends.

Only a TSDB outage (``TsdbUnavailable``, ``WriteUncertain``) is retried, ``celery.retries``
times, after ``celery.retry_backoff`` seconds doubled at each retry; a retry is a new message
under the same task id, and the window is idempotent (checkpoint, journal, lease). Another
process holding the pipeline's lease (``PipelineBusy``) is not an error: that process is
running the window, so the message is acknowledged. Every other error is final: it is logged
(``throws``: without a traceback for OpenAnomaly's own errors) and the message acknowledged.
A job's claim on its work (``WorkClaims``) is renewed when it starts, kept while a retry waits,
and released when it ends.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Task, shared_task
from celery.exceptions import TimeLimitExceeded
from celery.signals import worker_process_shutdown

from openanomaly.adapters.celery.app import visibility_timeout
from openanomaly.adapters.celery.payload import from_payload
from openanomaly.adapters.dispatch.celery import WorkClaims
from openanomaly.bootstrap import Container, bootstrap, claims_alone
from openanomaly.domain.records import Job
from openanomaly.errors import OpenAnomalyError, PipelineBusy, TsdbUnavailable, WriteUncertain
from openanomaly.settings import Settings, load_settings

log = logging.getLogger(__name__)

RETRIED = (TsdbUnavailable, WriteUncertain)


class _Process:
    """This worker process's settings and container."""

    settings: Settings | None = None
    container: Container | None = None
    main_claims: WorkClaims | None = None
    """The worker's main process's, which runs the failure hook of a task killed at its hard
    limit (its pool process is gone, the task's own ``finally`` never ran)."""
    lock = threading.Lock()


def use_settings(settings: Settings) -> None:
    """The settings the worker's processes bootstrap with (default: ``load_settings()``); each
    process closes its container when it ends."""
    _Process.settings = settings
    worker_process_shutdown.connect(_close, weak=False)


def settings() -> Settings:
    if _Process.settings is None:
        _Process.settings = load_settings()
    return _Process.settings


def container(app: Any) -> Container:
    """This process's container, built on first use; its dispatcher sends on ``app``."""
    with _Process.lock:
        if _Process.container is None:
            _Process.container = bootstrap(settings(), celery_app=app)
        return _Process.container


def _close(**_: object) -> None:
    with _Process.lock:
        if _Process.container is not None:
            _Process.container.close()
            _Process.container = None


def retry_countdown(retries: int, *, backoff: float, retry_after: float | None = None) -> float:
    """Seconds before retry number ``retries + 1``: ``backoff`` doubled at each retry, or what
    the TSDB asked for (``Retry-After``) when that is longer."""
    return max(backoff * 2.0**retries, retry_after or 0.0)


class JobTask(Task):  # type: ignore[misc]  # celery is untyped
    """What the three job tasks share; time limits and retries come from the worker's settings
    (``task_annotations`` of ``make_app``)."""

    acks_late = True
    reject_on_worker_lost = True
    throws = (OpenAnomalyError,)

    def run_job(self, payload: dict[str, Any], kind: str) -> None:
        """Run the job; its claim (``WorkClaims``) is renewed now and released at the end,
        kept while a retry waits."""
        job = from_payload(payload, kind)
        box = container(self.app)
        held = box.claims
        if held is not None:
            held.renew(job)
        retrying = False
        try:
            box.service.run(job)
        except PipelineBusy as exc:
            log.info("%s job %s skipped: %s", kind, job.id, exc)
        except RETRIED as exc:
            c = settings().celery
            if self.request.retries >= c.retries:
                log.error("%s job %s failed after %d retries: %s", kind, job.id, c.retries, exc)
                raise
            retrying = True
            raise self._retry(job, exc) from None
        finally:
            if held is not None and not retrying:
                held.release(job)

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        """Celery calls this in the worker's main process for a task killed at its hard limit
        (and in the pool process after any other failure, whose ``finally`` released already):
        its claim is released here, so that the same work can be queued at once."""
        if not isinstance(exc, TimeLimitExceeded):
            return
        try:
            job = from_payload(args[0], self.name.rpartition(".")[2])
            with _Process.lock:
                if _Process.main_claims is None:
                    _Process.main_claims = claims_alone(settings())
                held = _Process.main_claims
            if held is not None:
                held.release(job)
        except Exception as error:  # the hook is worth less than the worker; the claim expires
            log.warning("claim of task %s not released after its hard limit: %r", task_id, error)

    def _retry(self, job: Job, exc: OpenAnomalyError) -> Exception:
        """The retry of ``job`` after ``exc``, as a new message under the same task id."""
        c = settings().celery
        countdown = retry_countdown(
            self.request.retries,
            backoff=c.retry_backoff,
            retry_after=getattr(exc, "retry_after", None),
        )
        # The worker holds a retry unacknowledged until its time: within Redis' visibility
        # timeout, or Redis would hand it to a second worker meanwhile.
        countdown = min(countdown, visibility_timeout(settings()) / 2)
        log.warning("%s job %s: %s; retry in %.1f s", job.kind, job.id, exc, countdown)
        retry: Exception = self.retry(
            exc=exc, countdown=countdown, max_retries=c.retries, throw=False
        )
        return retry


@shared_task(name="openanomaly.train", bind=True, base=JobTask)  # type: ignore[untyped-decorator]
def train(self: JobTask, job: dict[str, Any]) -> None:
    self.run_job(job, "train")


@shared_task(name="openanomaly.infer", bind=True, base=JobTask)  # type: ignore[untyped-decorator]
def infer(self: JobTask, job: dict[str, Any]) -> None:
    self.run_job(job, "infer")


@shared_task(name="openanomaly.backtest", bind=True, base=JobTask)  # type: ignore[untyped-decorator]
def backtest(self: JobTask, job: dict[str, Any]) -> None:
    self.run_job(job, "backtest")
