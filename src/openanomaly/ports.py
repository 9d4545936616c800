"""The ports: small Protocols named by role. Adapters live in ``adapters/`` and ``engines/``;
in-memory fakes of every port live in ``adapters/memory.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, Self, runtime_checkable

import numpy as np
import numpy.typing as npt

from openanomaly.domain.records import (
    InferResult,
    InferWindow,
    Job,
    JobRun,
    ModelVersion,
    OutputSeries,
    TrainJob,
    WindowState,
)
from openanomaly.domain.series import Forecast, IntArray, SeriesBatch
from openanomaly.domain.shards import Shard
from openanomaly.domain.spec import ModelSpec, Pipeline

Flavor = Literal["prometheus", "victoriametrics", "mimir", "thanos"]
"""Which Prometheus-compatible TSDB is behind the reader and the writer: they accept different
things (only VictoriaMetrics takes samples in the future)."""


@runtime_checkable
class MetricsReader(Protocol):
    def query_range(
        self, query: str, start: int, end: int, step: int, *, recent: bool = False
    ) -> SeriesBatch:
        """Every series of ``query`` on the grid ``start, start+step, ... <= end`` (unix s).

        ``recent`` (a training's history): the range may be read from its end back to where
        the data starts, so that a long window over little data costs what the data costs; a
        gap longer than all the data after it may then be taken for the start."""
        ...


@runtime_checkable
class ShardReader(Protocol):
    """A reader that can keep only one shard's series while it decodes the answer, so that
    memory follows the shard, not the query. Readers without it are read whole and cut."""

    def query_shard(
        self, query: str, start: int, end: int, step: int, shard: Shard, *, recent: bool = False
    ) -> SeriesBatch:
        """``query_range`` restricted to the series of ``shard`` (``Shard.mask``)."""
        ...


@runtime_checkable
class MetricsWriter(Protocol):
    def write(self, series: Sequence[OutputSeries]) -> int:
        """Write all samples (non-finite values are dropped); returns how many were sent."""
        ...

    def oldest_accepted(self) -> int | None:
        """The oldest timestamp (unix s) the TSDB takes now, with a margin (Prometheus refuses
        samples about an hour behind its newest one as out of bounds); None: no limit."""
        ...


@runtime_checkable
class SampleReader(Protocol):
    def timestamps(self, selector: str, start: int, end: int) -> dict[str, IntArray]:
        """The raw samples' timestamps (unix s, increasing, repeats kept) of every series
        matching the PromQL ``selector`` in ``(start, end]``, by ``series_key``: what a
        window already wrote."""
        ...


class ModelEngine(Protocol):
    """A forecasting model over a whole panel of series (statsforecast/sklearn contract:
    ``fit`` returns self, learned state lives in attributes ending in ``_``)."""

    requires_fit: bool

    def fit(self, history: SeriesBatch) -> Self:
        """Learn from ``history``; series are identified by ``history.keys``."""
        ...

    def known(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Which series this fitted model can forecast (the rest get a cold-start model)."""
        ...

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """Forecast ``timestamps`` (all after ``context``) with a central ``interval`` band."""
        ...

    def dumps(self) -> bytes:
        """The fitted state as bytes for the ArtifactStore."""
        ...


class EngineFactory(Protocol):
    def create(self, spec: ModelSpec, *, step: int) -> ModelEngine: ...

    def load(self, spec: ModelSpec, data: bytes, *, step: int) -> ModelEngine: ...

    def cold_start(self, *, step: int) -> ModelEngine:
        """A model that needs no training, for series that appeared after the last fit."""
        ...

    def validate(self, spec: ModelSpec, *, step: int) -> None:
        """Check ``spec`` without fitting: raises UnknownModel (engine or model name),
        EngineNotInstalled (naming the extra) or EngineError (a bad parameter)."""
        ...

    def resolve(self, spec: ModelSpec) -> ModelSpec:
        """``spec`` with ``name`` set to its engine's default when it is None (unchanged for an
        unknown engine), so a pipeline reads the same however it was written."""
        ...


class PipelineStore(Protocol):
    def list(self) -> list[Pipeline]: ...

    def get(self, pipeline_id: str) -> Pipeline:
        """Raises NotFound."""
        ...

    def put(self, pipeline: Pipeline) -> None:
        """Create or replace."""
        ...

    def delete(self, pipeline_id: str) -> None:
        """Raises NotFound."""
        ...


class SourcedPipelineStore(PipelineStore, Protocol):
    """A PipelineStore that knows where each pipeline came from (the API, or a file)."""

    def replace_source(
        self, source: str, specs: Sequence[Pipeline], *, keep: Iterable[str] = ()
    ) -> list[str]:
        """Write ``specs`` as coming from ``source``; delete that source's other pipelines,
        except the ids in ``keep``; return the ids deleted."""
        ...


@dataclass(frozen=True)
class JobOutcome:
    """How the last job of one kind (``train``, ``infer``) of a pipeline ended, and the last
    time one failed (kept after a success, for the status)."""

    at: float
    ok: bool
    error: str | None = None
    error_at: float | None = None


class OutcomeStore(Protocol):
    """The last outcome of each pipeline's train and infer jobs, kept across restarts."""

    def record_outcome(self, pipeline_id: str, kind: str, at: float, error: str | None) -> None:
        """Record that a ``kind`` job ended at ``at``, failed with ``error`` (None: ok)."""
        ...

    def outcomes(self, pipeline_id: str) -> dict[str, JobOutcome]:
        """Kind -> its last outcome; kinds never run are absent."""
        ...


class ModelRegistry(Protocol):
    def record(self, version: ModelVersion, *, activate: bool = True) -> None:
        """Add a version (one with the same id is replaced: a retried training is harmless)."""
        ...

    def active(self, pipeline_id: str) -> ModelVersion | None: ...

    def versions(self, pipeline_id: str) -> list[ModelVersion]:
        """Newest first."""
        ...

    def activate(self, pipeline_id: str, version: str) -> None:
        """Raises NotFound."""
        ...


class CheckpointStore(Protocol):
    """Where each pipeline's inference has got to (the end of its last written window), and
    the journal of the window being written."""

    def last_end(self, pipeline_id: str) -> int | None: ...

    def begin(self, pipeline_id: str, start: int, end: int, *, owner: str | None = None) -> None:
        """Journal ``(start, end]`` as being written. With ``owner``, fenced: raises
        PipelineBusy if that owner does not hold the pipeline's lease."""
        ...

    def advance(self, pipeline_id: str, end: int, *, owner: str | None = None) -> None:
        """Move the checkpoint forward to ``end`` (never backwards) and clear a journalled
        window ending at or before it. With ``owner``, fenced: raises PipelineBusy if that
        owner no longer holds the lease, and nothing moves."""
        ...

    def state(self, pipeline_id: str) -> WindowState:
        """Checkpoint, journalled window and lease holder, for recovery and for inspection."""
        ...


@runtime_checkable
class LeaseStore(Protocol):
    """One process at a time runs a pipeline's windows: a lease with an owner and an expiry.
    The key is any id: the Celery dispatcher also claims a job's work under its ``work_key``."""

    def acquire(
        self, pipeline_id: str, owner: str, ttl: float, *, replace: str | None = None
    ) -> bool:
        """Take the lease, or renew it if ``owner`` holds it, for ``ttl`` seconds; False while
        another owner holds an unexpired one, unless that owner is ``replace`` (known dead).
        Atomic across processes."""
        ...

    def release(self, pipeline_id: str, owner: str) -> None:
        """Give the lease up (nothing happens unless ``owner`` holds it)."""
        ...

    def holder(self, pipeline_id: str) -> str | None:
        """The owner of the lease while it has not expired; None when it is free."""
        ...


@runtime_checkable
class JobHistory(Protocol):
    """The run history: a row per job, kept in the config store, pruned by age."""

    def record_run(self, run: JobRun) -> None:
        """Create or replace the row of ``run.job_id`` (a redelivery updates its own row)."""
        ...

    def get_run(self, job_id: str) -> JobRun:
        """Raises NotFound (kind ``job``)."""
        ...

    def runs(
        self,
        *,
        pipeline_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[JobRun]:
        """Newest first (by submission, else start)."""
        ...

    def prune_runs(self, before: float) -> int:
        """Delete the runs that ended before ``before`` (unix s); returns how many."""
        ...


class ArtifactStore(Protocol):
    def save(self, key: str, data: bytes) -> None:
        """Atomic: readers see the old object or the new one, never half of it."""
        ...

    def load(self, key: str) -> bytes:
        """Raises NotFound."""
        ...

    def delete(self, key: str) -> None: ...


JobHandler = Callable[[Job], None]
"""What a dispatcher's workers call with each job (``Service.run_logged``)."""


class JobDispatcher(Protocol):
    def submit(self, job: Job) -> str:
        """Queue ``job``; returns the id it runs under: its own, or that of the same work
        already queued or running (which is not queued again)."""
        ...

    def close(self) -> None:
        """Take no new job and release workers; what is queued may be left to the checkpoint,
        what is running is given a grace period to finish."""
        ...


TickKind = Literal["infer", "train"]
"""A scheduler's tick: score what is due (training first if needed), or train."""


class JobPlanner(Protocol):
    """What a Scheduler needs of the application (the Service implements it): which pipelines
    to schedule, and at each tick which jobs are due. The scheduler only submits them."""

    def enabled_pipelines(self) -> list[Pipeline]: ...

    def needs_training(self, pipeline_id: str) -> bool:
        """No model fits the pipeline as it is now (none yet, or its spec changed)."""
        ...

    def train_jobs(self, pipeline_id: str) -> list[TrainJob]:
        """The training jobs for the window that ends now: one, or one per shard."""
        ...

    def due_infer_jobs(self, pipeline_id: str) -> list[InferWindow]:
        """The windows due since the checkpoint (one per shard of a sharded pipeline, each
        from its own checkpoint); empty when nothing new is ready."""
        ...

    def pipeline_failed(self, pipeline_id: str, what: str, exc: BaseException) -> bool:
        """Report that scheduling the pipeline (``what``) failed; returns whether that broke it
        (False for an outage, which a retry may get past)."""
        ...

    def due_jobs(self, pipeline_id: str, kind: TickKind) -> list[Job]:
        """What a tick of ``kind`` submits now (``services/ticks.py``): for ``infer``, a
        training first when ``needs_training``, then ``due_infer_jobs``; for ``train``,
        ``train_jobs``. Never raises: a failure is logged, counted and reported, and nothing is
        due."""
        ...


class Scheduler(Protocol):
    def sync(self, pipelines: Iterable[Pipeline]) -> None:
        """Make the scheduled jobs match the enabled pipelines."""
        ...

    def start(self) -> None:
        """Schedule the planner's pipelines and keep following its changes."""
        ...

    def stop(self) -> None:
        """Stop scheduling (jobs already submitted are the dispatcher's); safe to call twice."""
        ...


class Telemetry(Protocol):
    """What the service records about its work, and the page that shows it (``/metrics``)."""

    def job_done(
        self, kind: str, pipeline_id: str, status: Literal["ok", "error", "busy"], seconds: float
    ) -> None: ...

    def inferred(self, result: InferResult) -> None:
        """A window was scored: its points, anomalies and samples written, and the points
        skipped (``result.skipped``: beyond ``max_catchup``, behind the write horizon)."""
        ...

    def samples_dropped(self, reason: str, count: int) -> None:
        """Output samples not written: ``non_finite`` (no input point) or ``future``."""
        ...

    def pipelines_broken(self, pipelines: Iterable[str], broken: Iterable[str]) -> None:
        """Which of ``pipelines`` are broken now (see ``PipelineHealth``)."""
        ...

    def failed(self, stage: str) -> None:
        """Something failed outside a job: ``sync`` (reading the store), ``tick`` (deciding
        what is due). A job's failure is ``job_done(..., "error", ...)``."""
        ...

    def exposition(self) -> tuple[bytes, str]:
        """What was recorded, as a scrape page: the body and its content type."""
        ...


Clock = Callable[[], float]

PipelineCheck = Callable[[Pipeline], list[tuple[tuple[str, ...], str]]]
"""What is wrong with a pipeline beyond its schema, as (field path, message) pairs, e.g.
``(("model", "params"), "unknown parameter 'foo'")``; empty when it can run."""
