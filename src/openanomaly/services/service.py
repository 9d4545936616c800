"""The application service: runs jobs by id and decides which jobs are due. The CLI, the API,
the scheduler (through the ``JobPlanner`` port) and the workers all go through it."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from openanomaly.domain.grid import align
from openanomaly.domain.records import InferResult, InferWindow, Job, ModelVersion, TrainJob
from openanomaly.domain.spec import Pipeline, spec_hash
from openanomaly.domain.windows import due_window
from openanomaly.errors import OpenAnomalyError, PipelineBusy
from openanomaly.ports import (
    CheckpointStore,
    Clock,
    EngineFactory,
    LeaseStore,
    MetricsReader,
    ModelRegistry,
    PipelineStore,
    Telemetry,
)
from openanomaly.services.backtest import BacktestResult, Progress, backtest
from openanomaly.services.inferencer import Inferencer
from openanomaly.services.trainer import Trainer

log = logging.getLogger(__name__)


_LIVE_OWNERS: set[str] = set()  # the owner ids of the Services of this process


def owner_id() -> str:
    """A lease owner id: host, pid and a random part (pids are reused)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    _LIVE_OWNERS.add(owner)
    return owner


def dead_owner(owner: str | None) -> bool:
    """Whether ``owner`` was a process of this host that is gone (``kill -9``, a restarted
    container with the same pid): its lease need not be waited out. Other hosts' owners are
    only ever taken over when their lease expires."""
    host, _, rest = (owner or "").partition(":")
    pid_text, _, _ = rest.partition(":")
    if not pid_text.isdigit() or host != socket.gethostname() or owner in _LIVE_OWNERS:
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # our pid, not one of our owners: an earlier process that had it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


@dataclass
class Service:
    pipelines: PipelineStore
    registry: ModelRegistry
    checkpoints: CheckpointStore
    reader: MetricsReader
    engines: EngineFactory
    trainer: Trainer
    inferencer: Inferencer
    telemetry: Telemetry
    clock: Clock = time.time
    leases: LeaseStore | None = None
    """Without one (tests of a single service), only the in-process lock keeps runs apart."""
    owner: str = field(default_factory=owner_id)
    lease_ttl: float = 60.0

    def __post_init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def run(self, job: Job, *, wait: float = 0.0) -> ModelVersion | InferResult:
        """Run one job now. Jobs of the same pipeline never overlap in this process, and
        inference windows of a pipeline never overlap across processes (the lease): if
        another process holds it for ``wait`` seconds more, PipelineBusy is raised."""
        began = time.perf_counter()
        try:
            with self._lock(job.pipeline_id):
                pipeline = self.pipelines.get(job.pipeline_id)
                if isinstance(job, TrainJob):
                    result: ModelVersion | InferResult = self.trainer.train(pipeline, job.end)
                else:
                    with self._lease(job.pipeline_id, wait) as owner:
                        result = self.inferencer.infer(pipeline, job.start, job.end, owner=owner)
                    self.telemetry.inferred(result)
        except PipelineBusy:
            self.telemetry.job_done(job.kind, job.pipeline_id, "busy", time.perf_counter() - began)
            raise
        except Exception:
            self.telemetry.job_done(job.kind, job.pipeline_id, "error", time.perf_counter() - began)
            raise
        self.telemetry.job_done(job.kind, job.pipeline_id, "ok", time.perf_counter() - began)
        return result

    def run_logged(self, job: Job) -> None:
        """For workers: run, log a failure with its message (no trace for expected errors)."""
        try:
            self.run(job)
        except PipelineBusy as exc:
            log.info("%s job skipped: %s", job.kind, exc)
        except OpenAnomalyError as exc:
            log.error("%s job for pipeline=%s failed: %s", job.kind, job.pipeline_id, exc)
        except Exception:
            log.exception("%s job for pipeline=%s crashed", job.kind, job.pipeline_id)

    def enabled_pipelines(self) -> list[Pipeline]:
        return [p for p in self.pipelines.list() if p.enabled]

    def train_job(self, pipeline_id: str, end: int | None = None) -> TrainJob:
        pipeline = self.pipelines.get(pipeline_id)
        now = self.clock() - pipeline.delay
        return TrainJob(pipeline_id, align(now if end is None else end, pipeline.step))

    def due_infer(self, pipeline_id: str) -> InferWindow | None:
        pipeline = self.pipelines.get(pipeline_id)
        return due_window(pipeline, self.checkpoints.last_end(pipeline_id), self.clock())

    def needs_training(self, pipeline_id: str) -> bool:
        pipeline = self.pipelines.get(pipeline_id)
        active = self.registry.active(pipeline_id)
        if active is not None and active.spec_hash == spec_hash(pipeline):
            return False
        return self.engines.create(pipeline.model, step=pipeline.step).requires_fit

    def backtest(
        self, pipeline_id: str, start: int, end: int, progress: Progress | None = None
    ) -> BacktestResult:
        pipeline = self.pipelines.get(pipeline_id)
        return backtest(
            pipeline, self.reader, self.engines, start=start, end=end, progress=progress
        )

    def _lock(self, pipeline_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(pipeline_id, threading.Lock())

    @contextmanager
    def _lease(self, pipeline_id: str, wait: float) -> Iterator[str | None]:
        """Hold the pipeline's lease (renewed in the background) while the block runs; yields
        the owner id that fences the run's journal and checkpoint writes."""
        leases = self.leases
        if leases is None:
            yield None
            return
        deadline = time.monotonic() + wait
        while not leases.acquire(pipeline_id, self.owner, self.lease_ttl):
            holder = self.checkpoints.state(pipeline_id).owner
            if dead_owner(holder) and leases.acquire(
                pipeline_id, self.owner, self.lease_ttl, replace=holder
            ):
                log.warning("pipeline=%s: took over the lease of %s (gone)", pipeline_id, holder)
                break
            if time.monotonic() >= deadline:
                raise PipelineBusy(pipeline_id, holder)
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        done = threading.Event()
        renew = threading.Thread(
            target=_renew,
            args=(leases, pipeline_id, self.owner, self.lease_ttl, done),
            name=f"lease-{pipeline_id}",
            daemon=True,
        )
        renew.start()
        try:
            yield self.owner
        finally:
            done.set()
            renew.join()
            leases.release(pipeline_id, self.owner)


def _renew(
    leases: LeaseStore, pipeline_id: str, owner: str, ttl: float, done: threading.Event
) -> None:
    while not done.wait(ttl / 3):
        try:
            if not leases.acquire(pipeline_id, owner, ttl):
                log.error("pipeline=%s: lease lost to another process", pipeline_id)
                return  # the fenced checkpoint refuses this run's next commit
        except Exception:  # a store hiccup: the next renewal may succeed before expiry
            log.exception("pipeline=%s: lease renewal failed", pipeline_id)
