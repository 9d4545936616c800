"""Small records of plain values: job payloads, model versions, what a window did, samples to
write."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

from openanomaly.domain.series import FloatArray, IntArray


def new_job_id() -> str:
    """A job's id: what ``submit`` answers, the key of its row in the run history."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class TrainJob:
    """Fit ``pipeline_id`` on the train window that ends at ``end`` (unix seconds).

    Jobs compare without their ``id``: the same work submitted twice is the same job.
    ``shard``: the index of the one shard to fit (``Pipeline.shards``); None: every shard,
    one after the other (the whole pipeline when it has one)."""

    pipeline_id: str
    end: int
    shard: int | None = None
    kind: Literal["train"] = "train"
    id: str = field(default_factory=new_job_id, compare=False)


@dataclass(frozen=True)
class InferWindow:
    """Bring ``pipeline_id``'s outputs up to ``end``, scoring no point at or before ``start``.

    Safe to run twice or concurrently: the Inferencer starts at the checkpoint when that is
    later, one process at a time holds the pipeline's lease, and an interrupted window is
    completed from what the TSDB already holds (see ``WindowState``). ``shard``: the index
    of the one shard to score, under its own checkpoint and lease; None: every shard, one after
    the other (the whole pipeline when it has one)."""

    pipeline_id: str
    start: int
    end: int
    shard: int | None = None
    kind: Literal["infer"] = "infer"
    id: str = field(default_factory=new_job_id, compare=False)


@dataclass(frozen=True)
class BacktestJob:
    """Replay ``(start, end]`` of ``pipeline_id`` (``Service.backtest``); with ``write``, send
    its outputs to the TSDB as ``backtest --write`` does."""

    pipeline_id: str
    start: int
    end: int
    write: bool = False
    kind: Literal["backtest"] = "backtest"
    id: str = field(default_factory=new_job_id, compare=False)


Job = TrainJob | InferWindow | BacktestJob


def work_key(job: Job) -> str:
    """The identity of a job's work: two jobs with the same key do the same thing, so a
    dispatcher queues the second only once the first has ended.

    An inference window is keyed by (pipeline, shard, end): a copy with another ``start``
    brings the outputs up to the same end from the same checkpoint. A training is keyed by
    (pipeline, shard) alone: its ``end`` is the tick's time, different at every tick, and a
    training queued or running covers any asked meanwhile (it reads the pipeline as it is
    when it runs). A backtest is keyed by all its fields."""
    shard = "all" if isinstance(job, BacktestJob) or job.shard is None else str(job.shard)
    if isinstance(job, TrainJob):
        return f"job:train:{job.pipeline_id}#{shard}"
    if isinstance(job, InferWindow):
        return f"job:infer:{job.pipeline_id}#{shard}:{job.end}"
    return f"job:backtest:{job.pipeline_id}:{job.start}:{job.end}:{int(job.write)}"


JobStatus = Literal["queued", "running", "ok", "error", "busy", "skipped"]
"""``busy``: another process held the pipeline's lease; ``skipped``: nothing to do (the
pipeline was deleted, or the window was already written)."""


@dataclass(frozen=True)
class JobRun:
    """One job in the run history (``JobHistory``): what it was, how it went, what it did.

    Attributes:
        job_id: the job's ``id``; a redelivered job updates its own row (``attempts``).
        kind: ``train``, ``infer`` or ``backtest``.
        start / end: the job's window (unix s; a training's ``start`` is its train window's).
        submitted_at / started_at / ended_at: unix s; None until it happens.
        series: series processed; points: points scored; anomalies: points flagged (> 1).
        error: the failure's message (never a credential), None unless ``status`` is error.
        worker: the process that ran it (host:pid).
        attempts: how many times a worker started it.
    """

    job_id: str
    pipeline_id: str
    kind: Literal["train", "infer", "backtest"]
    status: JobStatus
    start: int | None = None
    end: int | None = None
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    series: int = 0
    points: int = 0
    anomalies: int = 0
    error: str | None = None
    worker: str | None = None
    attempts: int = 0


@dataclass(frozen=True)
class ModelVersion:
    """One trained model of a pipeline; ``artifact`` is its ArtifactStore key (None: no state)."""

    pipeline_id: str
    version: str
    created_at: float
    engine: str
    model: str
    spec_hash: str
    series: int
    artifact: str | None
    train_start: int
    train_end: int
    fit_seconds: float
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class InferResult:
    """What one inference run did (a window, or a catch-up of several): counts and where the
    time went (seconds per phase)."""

    pipeline_id: str
    start: int
    end: int
    series: int = 0
    points: int = 0
    anomalies: int = 0
    cold_series: int = 0
    samples_written: int = 0
    model_version: str | None = None
    windows: int = 0
    recovered: int = 0
    """Windows found interrupted and completed with only what the TSDB lacked."""
    skipped: dict[str, int] = field(default_factory=dict)
    """Points (per series, summed) not scored, by reason: ``catchup`` (beyond
    ``infer.max_catchup``), ``too_old`` (behind the TSDB's write horizon)."""
    timings: dict[str, float] = field(default_factory=dict)
    waiting: str | None = None  # why no score was written yet (domain/trust.py), or None


@dataclass(frozen=True)
class OutputSeries:
    """One series to remote-write: labels including ``__name__``; unix-second timestamps."""

    labels: dict[str, str]
    timestamps: IntArray
    values: FloatArray


@dataclass(frozen=True)
class WindowState:
    """Where a pipeline's inference stands, as the checkpoint store keeps it.

    Attributes:
        last_end: the checkpoint: every window ending at or before it is written (or was
            skipped, and reported as such).
        pending: ``(start, end)`` of a window journalled before its write and not committed
            since: a crash or a failed write left it, and the next run completes it from what
            the TSDB holds instead of sending it again.
        owner: the process holding the pipeline's lease (None: free), until ``expires``.
    """

    pipeline_id: str
    last_end: int | None = None
    pending: tuple[int, int] | None = None
    owner: str | None = None
    expires: float | None = None
