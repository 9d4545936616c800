"""The run history: a row per job (``JobRun``) from its submission to its end.

``HistoryDispatcher`` writes the ``queued`` row of each job it submits; ``RunLog`` is what the
Service writes when a job starts and when it ends, and it prunes the rows older than the
history keeps. The history is worth less than the job: a failure to write it is logged, never
the job's failure.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time

from openanomaly.domain.records import Job, JobRun, JobStatus, TrainJob
from openanomaly.domain.text import mask_url, shorten
from openanomaly.errors import NotFound, OpenAnomalyError
from openanomaly.ports import Clock, JobDispatcher, JobHistory

log = logging.getLogger(__name__)

PRUNE_EVERY = 3600.0
"""Seconds between two prunings by the same process."""

STALE_LIMIT = 1000
"""How many rows that never ended one pruning looks at (see ``RunLog.prune``)."""


def worker_id() -> str:
    """``host:pid`` of the process running a job (read at each job: workers fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def error_text(exc: BaseException) -> str:
    """A failure's message for the history: our errors' messages (their URLs are masked where
    they are raised), others named by their class and masked here, cut to 500 characters."""
    if isinstance(exc, OpenAnomalyError):
        return shorten(str(exc), 500)
    return shorten(mask_url(f"{type(exc).__name__}: {exc}"), 500)


def _window(job: Job) -> tuple[int | None, int]:
    if isinstance(job, TrainJob):
        return None, job.end  # the train window's start is known once the pipeline is read
    return job.start, job.end


class HistoryDispatcher:
    """A JobDispatcher that writes the ``queued`` row of each job ``inner`` accepts.

    The row is written after ``inner.submit``: a job ``inner`` refuses as a duplicate (it
    answers another job's id) gets no row of its own, and a job that a worker already started
    meanwhile keeps the row the worker wrote."""

    def __init__(self, inner: JobDispatcher, history: JobHistory, *, clock: Clock = time.time):
        self.inner = inner
        self._history = history
        self._clock = clock
        self._closed = False

    def submit(self, job: Job) -> str:
        at = self._clock()
        job_id = self.inner.submit(job)
        if job_id == job.id and not self._closed:
            self._queued(job, at)
        return job_id

    def close(self) -> None:
        self._closed = True
        self.inner.close()

    def _queued(self, job: Job, at: float) -> None:
        start, end = _window(job)
        row = JobRun(job.id, job.pipeline_id, job.kind, "queued", start, end, submitted_at=at)
        try:
            try:
                self._history.get_run(job.id)
                return  # a worker has started it already
            except NotFound:
                pass
            self._history.record_run(row)
        except Exception as exc:
            log.warning("run history: queued %s job %s not recorded: %r", job.kind, job.id, exc)


class RunLog:
    """The rows the Service writes: ``running`` when a job starts, its outcome when it ends;
    and the pruning of rows that ended ``keep`` seconds ago, at most every ``prune_every``.

    Without a history (``None``) it records nothing."""

    def __init__(
        self,
        history: JobHistory | None,
        *,
        keep: float,
        clock: Clock = time.time,
        prune_every: float = PRUNE_EVERY,
    ) -> None:
        self.history = history
        self._keep = keep
        self._clock = clock
        self._prune_every = prune_every
        self._pruned_at: float | None = None

    def started(self, job: Job) -> JobRun:
        """Write the ``running`` row of ``job``: a redelivered job updates its own row (one
        more attempt), a queued one keeps its submission time."""
        start, end = _window(job)
        row = JobRun(job.id, job.pipeline_id, job.kind, "running", start, end)
        earlier = self._earlier(job)
        if earlier is not None:
            row = dataclasses.replace(
                row, submitted_at=earlier.submitted_at, attempts=earlier.attempts
            )
        row = dataclasses.replace(
            row, started_at=self._clock(), worker=worker_id(), attempts=row.attempts + 1
        )
        self._record(row)
        return row

    def ended(
        self,
        row: JobRun,
        status: JobStatus,
        *,
        error: BaseException | None = None,
        counts: tuple[int, int, int] = (0, 0, 0),
        window: tuple[int | None, int | None] | None = None,
    ) -> JobRun:
        """Write how the job of ``row`` ended: ``counts`` are its series, points scored and
        points flagged; ``window`` its (start, end) when the job learnt them."""
        series, points, anomalies = counts
        start, end = window if window is not None else (row.start, row.end)
        done = dataclasses.replace(
            row,
            status=status,
            start=start,
            end=end,
            ended_at=self._clock(),
            series=series,
            points=points,
            anomalies=anomalies,
            error=error_text(error) if error is not None and status == "error" else None,
        )
        self._record(done)
        self._prune()
        return done

    def _earlier(self, job: Job) -> JobRun | None:
        if self.history is None:
            return None
        try:
            return self.history.get_run(job.id)
        except NotFound:
            return None
        except Exception as exc:
            log.warning("run history: %s job %s not read: %r", job.kind, job.id, exc)
            return None

    def _record(self, row: JobRun) -> None:
        if self.history is None:
            return
        try:
            self.history.record_run(row)
        except Exception as exc:
            log.warning(
                "run history: %s job %s (%s) not recorded: %r",
                row.kind,
                row.job_id,
                row.status,
                exc,
            )

    def _prune(self) -> None:
        """Delete what ended more than ``keep`` seconds ago; first end the rows that never
        will: a job queued or running for that long was dropped at a shutdown or lost with its
        process (a thread pool's queue, a ``kill -9``), so it is closed as ``skipped`` or
        ``error`` and pruned with the others later."""
        now = self._clock()
        if self.history is None or (
            self._pruned_at is not None and now - self._pruned_at < self._prune_every
        ):
            return
        self._pruned_at = now
        before = now - self._keep
        try:
            for status in ("queued", "running"):
                for row in self.history.runs(status=status, limit=STALE_LIMIT):
                    if (row.started_at or row.submitted_at or now) < before:
                        self.history.record_run(_abandoned(row, now))
            pruned = self.history.prune_runs(before)
        except Exception as exc:
            log.warning("run history: not pruned: %r", exc)
            return
        if pruned:
            log.info(
                "run history: %d runs older than %.0f days deleted", pruned, self._keep / 86400
            )


def _abandoned(row: JobRun, now: float) -> JobRun:
    if row.status == "queued":
        return dataclasses.replace(row, status="skipped", ended_at=now)
    message = f"did not end: its worker {row.worker or '?'} stopped while it ran"
    return dataclasses.replace(row, status="error", ended_at=now, error=message)
