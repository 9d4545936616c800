"""Small records of plain values: job payloads, model versions, what a window did, samples to
write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from openanomaly.domain.series import FloatArray, IntArray


@dataclass(frozen=True)
class TrainJob:
    """Fit ``pipeline_id`` on the train window that ends at ``end`` (unix seconds)."""

    pipeline_id: str
    end: int
    kind: Literal["train"] = "train"


@dataclass(frozen=True)
class InferWindow:
    """Score the points of ``pipeline_id`` with ``start < t <= end``. Idempotent: the same
    window always writes the same samples."""

    pipeline_id: str
    start: int
    end: int
    kind: Literal["infer"] = "infer"


Job = TrainJob | InferWindow


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
    """What one window did: counts and where the time went (seconds per phase)."""

    pipeline_id: str
    start: int
    end: int
    series: int = 0
    points: int = 0
    anomalies: int = 0
    cold_series: int = 0
    samples_written: int = 0
    model_version: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    waiting: str | None = None  # why no score was written yet (domain/trust.py), or None


@dataclass(frozen=True)
class OutputSeries:
    """One series to remote-write: labels including ``__name__``; unix-second timestamps."""

    labels: dict[str, str]
    timestamps: IntArray
    values: FloatArray
