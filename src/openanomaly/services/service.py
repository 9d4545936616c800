"""The application service: runs jobs by id and decides which jobs are due. The CLI, the API,
the scheduler (through the ``JobPlanner`` port) and the workers all go through it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from openanomaly.domain.grid import align
from openanomaly.domain.records import (
    BacktestJob,
    InferResult,
    InferWindow,
    Job,
    JobRun,
    JobStatus,
    ModelVersion,
    TrainJob,
)
from openanomaly.domain.shards import Shard, shards
from openanomaly.domain.spec import Pipeline, spec_hash
from openanomaly.domain.windows import due_window
from openanomaly.errors import ConfigError, NotFound, OpenAnomalyError, PipelineBusy
from openanomaly.ports import (
    CheckpointStore,
    Clock,
    EngineFactory,
    JobHistory,
    LeaseStore,
    MetricsReader,
    MetricsWriter,
    ModelRegistry,
    PipelineStore,
    SampleReader,
    Telemetry,
    TickKind,
)
from openanomaly.services import ticks
from openanomaly.services.backtest import BacktestResult, Progress, backtest, write_backtest
from openanomaly.services.health import PipelineHealth
from openanomaly.services.history import RunLog
from openanomaly.services.inferencer import Inferencer
from openanomaly.services.lease import holding, owner_id
from openanomaly.services.shards import start_state
from openanomaly.services.trainer import Trainer

log = logging.getLogger(__name__)


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
    health: PipelineHealth = field(default_factory=PipelineHealth)
    leases: LeaseStore | None = None
    """Without one (tests of a single service), only the in-process lock keeps runs apart."""
    owner: str = field(default_factory=owner_id)
    lease_ttl: float = 60.0
    history: JobHistory | None = None
    """The run history (``services/history.py``); without one, no run is recorded."""
    history_days: float = 7.0
    """Runs that ended longer ago are pruned (at most once an hour, by each service)."""
    writer: MetricsWriter | None = None
    """Where a backtest with ``write`` sends its outputs."""
    samples: SampleReader | None = None
    """What the outputs hold already: a backtest's rewrite leaves it out (``write_backtest``)."""

    def __post_init__(self) -> None:
        self.runs = RunLog(self.history, keep=self.history_days * 86400, clock=self.clock)
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def run(
        self, job: Job, *, wait: float = 0.0, progress: Progress | None = None
    ) -> ModelVersion | InferResult | BacktestResult:
        """Run one job now and record it in the run history. Jobs of the same pipeline shard
        never overlap in this process, and inference windows of a shard never overlap across
        processes (the lease): if another process holds it for ``wait`` seconds more,
        PipelineBusy is raised. A job without a shard on a sharded pipeline runs every shard in
        turn, and answers their sum. A backtest (``progress``: its windows done) only reads, and
        writes outputs with ``write``: it takes neither."""
        began = time.perf_counter()
        row = self.runs.started(job)
        try:
            result = self._execute(job, wait, progress)
        except PipelineBusy:
            self.telemetry.job_done(job.kind, job.pipeline_id, "busy", time.perf_counter() - began)
            self.runs.ended(row, "busy")
            raise
        except Exception as exc:
            self.telemetry.job_done(job.kind, job.pipeline_id, "error", time.perf_counter() - began)
            if job.kind != "backtest":  # a replay of the past says nothing of the pipeline now
                self.health.failed(job.pipeline_id, job.kind, exc)
            deleted = isinstance(exc, NotFound) and (exc.kind, exc.ident) == (
                "pipeline",
                job.pipeline_id,
            )
            self.runs.ended(row, "skipped" if deleted else "error", error=exc)
            raise
        self.telemetry.job_done(job.kind, job.pipeline_id, "ok", time.perf_counter() - began)
        if job.kind != "backtest":
            self.health.succeeded(job.pipeline_id, job.kind)
        self._ended(row, result)
        return result

    def _execute(
        self, job: Job, wait: float, progress: Progress | None
    ) -> ModelVersion | InferResult | BacktestResult:
        if isinstance(job, BacktestJob):
            return self._backtest(job, progress)
        pipeline = self.pipelines.get(job.pipeline_id)
        results = [self._run_shard(job, pipeline, s, wait) for s in _shards(pipeline, job)]
        return _merged(results, job, pipeline)

    def _backtest(self, job: BacktestJob, progress: Progress | None) -> BacktestResult:
        pipeline = self.pipelines.get(job.pipeline_id)
        if job.write and self.writer is None:
            raise ConfigError("this service has no TSDB writer", where="backtest --write")
        result = backtest(
            pipeline, self.reader, self.engines, start=job.start, end=job.end, progress=progress
        )
        if job.write:
            assert self.writer is not None
            result = write_backtest(result, pipeline, self.writer, self.samples)
        return result

    def _ended(self, row: JobRun, result: ModelVersion | InferResult | BacktestResult) -> None:
        if isinstance(result, ModelVersion):
            window = (result.train_start, result.train_end)
            self.runs.ended(row, "ok", counts=(result.series, 0, 0), window=window)
        elif isinstance(result, InferResult):
            counts = (result.series, result.points, result.anomalies)
            status: JobStatus = "ok" if result.windows or result.recovered else "skipped"
            self.runs.ended(row, status, counts=counts, window=(result.start, result.end))
        else:
            counts = (len(result.batch), result.points, result.anomalies)
            self.runs.ended(row, "ok", counts=counts)

    def run_logged(self, job: Job) -> None:
        """For workers: run, log a failure with its message (no trace for expected errors)."""
        try:
            self.run(job)
        except PipelineBusy as exc:
            log.info("%s job skipped: %s", job.kind, exc)
        except NotFound as exc:
            if (exc.kind, exc.ident) != ("pipeline", job.pipeline_id):
                log.error("%s job for pipeline=%s failed: %s", job.kind, job.pipeline_id, exc)
            else:  # deleted while the job was queued: the scheduler drops it at its next sync
                log.info(
                    "%s job for pipeline=%s skipped: pipeline deleted", job.kind, job.pipeline_id
                )
        except OpenAnomalyError as exc:
            log.error("%s job for pipeline=%s failed: %s", job.kind, job.pipeline_id, exc)
        except Exception:
            log.exception("%s job for pipeline=%s crashed", job.kind, job.pipeline_id)

    def _run_shard(
        self, job: TrainJob | InferWindow, pipeline: Pipeline, shard: Shard, wait: float
    ) -> ModelVersion | InferResult:
        key = shard.key(pipeline.id)
        with self._lock(key):
            if isinstance(job, TrainJob):
                return self.trainer.train(pipeline, job.end, shard=shard)
            with self._lease(key, wait) as owner:
                result = self.inferencer.infer(
                    pipeline, job.start, job.end, owner=owner, shard=shard
                )
            self.telemetry.inferred(result)
            self.health.waiting(job.pipeline_id, result.waiting)
            return result

    def enabled_pipelines(self) -> list[Pipeline]:
        return [p for p in self.pipelines.list() if p.enabled]

    def train_job(self, pipeline_id: str, end: int | None = None) -> TrainJob:
        pipeline = self.pipelines.get(pipeline_id)
        now = self.clock() - pipeline.delay
        return TrainJob(pipeline_id, align(now if end is None else end, pipeline.step))

    def due_infer(self, pipeline_id: str) -> InferWindow | None:
        """The window due for the whole pipeline (all shards in one job): for a manual run.
        Schedulers submit ``due_infer_jobs``."""
        pipeline = self.pipelines.get(pipeline_id)
        return due_window(pipeline, self.checkpoints.last_end(pipeline_id), self.clock())

    def train_jobs(self, pipeline_id: str, end: int | None = None) -> list[TrainJob]:
        """One training job per shard (the whole pipeline's job when it has one)."""
        job = self.train_job(pipeline_id, end)
        count = self.pipelines.get(pipeline_id).shards
        if count == 1:
            return [job]
        return [TrainJob(pipeline_id, job.end, shard=s.index) for s in shards(count)]

    def due_infer_jobs(self, pipeline_id: str) -> list[InferWindow]:
        """The window due for each shard, from that shard's checkpoint (the pipeline's own
        for a shard that never ran): the jobs a scheduler submits, which workers run in
        parallel."""
        pipeline = self.pipelines.get(pipeline_id)
        if pipeline.shards == 1:
            due = self.due_infer(pipeline_id)
            return [] if due is None else [due]
        now = self.clock()
        jobs = []
        for s in shards(pipeline.shards):
            w = due_window(pipeline, start_state(self.checkpoints, pipeline_id, s).last_end, now)
            if w is not None:
                jobs.append(replace(w, shard=s.index))
        return jobs

    def pipeline_failed(self, pipeline_id: str, what: str, exc: BaseException) -> bool:
        return self.health.failed(pipeline_id, what, exc)

    def due_jobs(self, pipeline_id: str, kind: TickKind) -> list[Job]:
        return ticks.tick(self, pipeline_id, kind, telemetry=self.telemetry)

    def needs_training(self, pipeline_id: str) -> bool:
        """No model fits the pipeline as it is now, or every shard's was fitted on no series
        (its query had none: trained again, as an unsharded pipeline after NoData; a shard
        alone without series keeps its empty model until its next scheduled training)."""
        pipeline = self.pipelines.get(pipeline_id)
        digest = spec_hash(pipeline)
        actives = [self.registry.active(s.key(pipeline_id)) for s in shards(pipeline.shards)]
        fitted = [a for a in actives if a is not None and a.spec_hash == digest]
        if len(fitted) == len(actives) and any(a.series for a in fitted):
            return False
        return self.engines.create(pipeline.model, step=pipeline.step).requires_fit

    def backtest(
        self, pipeline_id: str, start: int, end: int, progress: Progress | None = None
    ) -> BacktestResult:
        """Replay ``(start, end]`` now, writing nothing and recording no run."""
        pipeline = self.pipelines.get(pipeline_id)
        return backtest(
            pipeline, self.reader, self.engines, start=start, end=end, progress=progress
        )

    def _lock(self, pipeline_id: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(pipeline_id, threading.Lock())

    @contextmanager
    def _lease(self, pipeline_id: str, wait: float) -> Iterator[str | None]:
        """Hold the pipeline's lease while the block runs; yields the owner id that fences
        the run's journal and checkpoint writes (None without a lease store)."""
        if self.leases is None:
            yield None
            return
        with holding(
            self.leases,
            pipeline_id,
            self.owner,
            ttl=self.lease_ttl,
            wait=wait,
            holder=lambda: self.checkpoints.state(pipeline_id).owner,
        ):
            yield self.owner


def _shards(pipeline: Pipeline, job: TrainJob | InferWindow) -> list[Shard]:
    """The shards a job covers: its own, or all of them. A job planned for a shard that the
    pipeline no longer has (its count was lowered since) covers none: the new shards,
    planned from the pipeline's checkpoint, do its work."""
    if job.shard is None:
        return shards(pipeline.shards)
    if job.shard >= pipeline.shards:
        log.info(
            "%s job for shard %d of pipeline=%s skipped: it has %d shards now",
            job.kind,
            job.shard,
            pipeline.id,
            pipeline.shards,
        )
        return []
    return [Shard(job.shard, pipeline.shards)]


def _merged(
    results: list[ModelVersion | InferResult], job: TrainJob | InferWindow, pipeline: Pipeline
) -> ModelVersion | InferResult:
    """One answer for the shards a job ran: the only one, or their sum."""
    if len(results) == 1:
        return results[0]
    if isinstance(job, TrainJob):
        versions = [r for r in results if isinstance(r, ModelVersion)]
        if not versions:
            raise NotFound("shard", f"{pipeline.id}#{job.shard}")
        first = versions[0]
        return replace(
            first,
            pipeline_id=pipeline.id,
            series=sum(v.series for v in versions),
            fit_seconds=round(sum(v.fit_seconds for v in versions), 3),
        )
    infers = [r for r in results if isinstance(r, InferResult)]
    total = InferResult(pipeline.id, job.start, job.end)
    for r in infers:
        total.start = min(total.start, r.start) if r.windows else total.start
        total.series += r.series
        total.points += r.points
        total.anomalies += r.anomalies
        total.cold_series += r.cold_series
        total.samples_written += r.samples_written
        total.windows = max(total.windows, r.windows)
        total.recovered += r.recovered
        total.model_version = total.model_version or r.model_version
        total.waiting = total.waiting or r.waiting
        for k, v in r.skipped.items():
            total.skipped[k] = total.skipped.get(k, 0) + v
        for phase, seconds in r.timings.items():
            total.timings[phase] = total.timings.get(phase, 0.0) + seconds
    return total
