"""The cluster dispatcher: jobs sent as Celery tasks, run by ``openanomaly worker``."""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from kombu.exceptions import OperationalError

from openanomaly.domain.records import Job, work_key
from openanomaly.errors import OpenAnomalyError, StoreUnavailable
from openanomaly.ports import LeaseStore

log = logging.getLogger(__name__)


class WorkClaims:
    """Claims on jobs' work across the processes of a cluster: a lease of the config store
    under the job's ``work_key``, owned by the job's id, for ``ttl[kind]`` seconds.

    Celery and kombu keep no registry of queued work (``celery-once`` and ``celery-singleton``
    lock in Redis only), and the brokers differ (Redis, RabbitMQ, SQLite, MongoDB); the config
    store is what every process of a cluster shares whatever the broker, and its leases are
    atomic across processes and expire. The dispatcher claims a job before it sends it; the
    task renews the claim when it starts and releases it when it ends (not between retries).
    A task killed at its hard limit is released by the worker's main process
    (``JobTask.on_failure``); a worker that dies holding a claim leaves it to expire: ``ttl``
    is the kind's hard limit plus a margin (``claim_ttls``), so the same work can be queued
    again once the message is surely lost (the brokers that redeliver it have done so by then,
    with its claim renewed).
    """

    def __init__(self, leases: LeaseStore, ttl: Mapping[str, float]) -> None:
        self._leases = leases
        self._ttl = ttl

    def take(self, job: Job) -> str:
        """Claim ``job``'s work; returns the id of the job holding it (``job.id`` if taken)."""
        key = work_key(job)
        for _ in range(2):  # the holder may release it between our try and the look
            if self._leases.acquire(key, job.id, self._ttl[job.kind]):
                return job.id
            holder = self._leases.holder(key)
            if holder is not None:
                return holder
        return job.id  # freed and taken again meanwhile: too busy to matter; send it

    def renew(self, job: Job) -> None:
        """At the task's start: its own claim for the kind's time again (a copy queued after
        it expired, then run, does no harm: the job is idempotent)."""
        ttl = self._ttl[job.kind]
        self._quietly(job, "renewed", lambda: self._leases.acquire(work_key(job), job.id, ttl))

    def release(self, job: Job) -> None:
        """At the task's end; the claim of another job is left alone."""
        self._quietly(job, "released", lambda: self._leases.release(work_key(job), job.id))

    @staticmethod
    def _quietly(job: Job, what: str, call: Callable[[], object]) -> None:
        try:
            call()
        except OpenAnomalyError as exc:  # the claim is worth less than the job; it expires
            log.warning("claim of %s job %s not %s: %s", job.kind, job.id, what, exc)


class CeleryDispatcher:
    """Sends each job as the task ``openanomaly.<kind>`` with the job as plain values
    (``dataclasses.asdict``) under its own id as task id; the app's routes put it on its kind's
    queue (``adapters/celery/app.py``).

    With ``claims``, a job whose work is already queued or running anywhere in the cluster is
    not sent again: ``submit`` answers the id of that job (``WorkClaims``). ``close`` releases
    the app's broker connections; a job submitted after it is left to the checkpoint, as the
    thread pool does.
    """

    def __init__(self, app: Any, *, claims: WorkClaims | None = None) -> None:
        self._app = app
        self.claims = claims
        self._closed = False
        self._lock = threading.Lock()

    def submit(self, job: Job) -> str:
        with self._lock:
            if self._closed:
                log.info("shutting down: %s left to the checkpoint", job)
                return job.id
        if self.claims is not None:
            holder = self.claims.take(job)
            if holder != job.id:
                log.debug("skip duplicate %s: job %s has it", job, holder)
                return holder
        try:
            self._app.send_task(
                f"openanomaly.{job.kind}", args=(dataclasses.asdict(job),), task_id=job.id
            )
        except (OperationalError, OSError) as exc:  # after kombu's publish retries
            if self.claims is not None:
                self.claims.release(job)
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
