"""In-memory implementations of every port. They record what happened (``written``, ``saved``,
``submitted``) so unit tests assert on effects instead of mocking calls. The same contract tests
run against these and the real adapters."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Literal, Self

import numpy as np

from openanomaly.domain.records import (
    InferResult,
    InferWindow,
    Job,
    ModelVersion,
    OutputSeries,
    TrainJob,
)
from openanomaly.domain.series import Forecast, SeriesBatch
from openanomaly.domain.spec import ModelSpec, Pipeline
from openanomaly.errors import EngineError, NotFound, QueryError

log = logging.getLogger(__name__)

_WRAPPED = re.compile(r"last_over_time\((.*)\[\w+\]\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?")
_MATCHERS = re.compile(r'(?:\s*\w+\s*=\s*"[^"]*"\s*,?)*')
_MATCHER = re.compile(r'(\w+)\s*=\s*"([^"]*)"')


class MemoryMetrics:
    """A tiny TSDB: ``query_range`` returns the stored batch on the asked grid (the query text
    selects a stored batch by name), ``write`` records every series written.

    A query that names no stored batch reads the written series: ``name{label="value", ...}``,
    optionally in ``last_over_time(...[1s])``. Points are read without lookback (a gap reads as
    NaN). Any other query is refused with a ``QueryError``, as a TSDB refuses bad PromQL.
    """

    def __init__(self, batches: dict[str, SeriesBatch] | None = None) -> None:
        self.batches = dict(batches or {})
        self.written: list[OutputSeries] = []
        self.queries: list[tuple[str, int, int, int]] = []

    def query_range(self, query: str, start: int, end: int, step: int) -> SeriesBatch:
        self.queries.append((query, start, end, step))
        source = self.batches[query] if query in self.batches else self._select(query)
        return source.on_grid(start, end, step)

    def _select(self, query: str) -> SeriesBatch:
        """The written series that ``query`` selects, on the union of their timestamps."""
        wrapped = _WRAPPED.fullmatch(query.strip())
        found = _SELECTOR.fullmatch(wrapped[1] if wrapped else query.strip())
        if not found or not _MATCHERS.fullmatch(found[2] or ""):
            raise QueryError(f"parse error: not a selector (query: {query})", status=400)
        want = {"__name__": found[1], **dict(_MATCHER.findall(found[2] or ""))}
        hits = [
            (dict(key), points)
            for key, points in self.samples(found[1]).items()
            if want.items() <= dict(key).items()
        ]
        ts = np.unique(np.array([t for _, points in hits for t in points], dtype=np.int64))
        values = np.full((len(hits), ts.size), np.nan)
        for row, (_, points) in enumerate(hits):
            values[row, np.searchsorted(ts, list(points))] = list(points.values())
        return SeriesBatch(tuple(labels for labels, _ in hits), ts, values)

    def write(self, series: Sequence[OutputSeries]) -> int:
        sent = 0
        for s in series:
            ok = np.isfinite(s.values)
            labels = {k: v for k, v in s.labels.items() if v}  # an empty value is no label
            self.written.append(OutputSeries(labels, s.timestamps[ok], s.values[ok]))
            sent += int(ok.sum())
        return sent

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], dict[int, float]]:
        """Everything written under metric ``name``: {sorted labels: {timestamp: value}}."""
        out: dict[tuple[tuple[str, str], ...], dict[int, float]] = {}
        for s in self.written:
            if s.labels.get("__name__") == name:
                key = tuple(sorted(s.labels.items()))
                out.setdefault(key, {}).update(
                    zip(s.timestamps.tolist(), s.values.tolist(), strict=True)
                )
        return out


class MemoryPipelineStore:
    def __init__(self, pipelines: Iterable[Pipeline] = ()) -> None:
        self._items = {p.id: p for p in pipelines}

    def list(self) -> list[Pipeline]:
        return sorted(self._items.values(), key=lambda p: p.id)

    def get(self, pipeline_id: str) -> Pipeline:
        try:
            return self._items[pipeline_id]
        except KeyError:
            raise NotFound("pipeline", pipeline_id) from None

    def put(self, pipeline: Pipeline) -> None:
        self._items[pipeline.id] = pipeline

    def delete(self, pipeline_id: str) -> None:
        if self._items.pop(pipeline_id, None) is None:
            raise NotFound("pipeline", pipeline_id)


class MemoryRegistry:
    """ModelRegistry and CheckpointStore in one, as the SQL store is."""

    def __init__(self) -> None:
        self._versions: dict[str, list[ModelVersion]] = {}
        self._active: dict[str, str] = {}
        self._checkpoints: dict[str, int] = {}

    def record(self, version: ModelVersion, *, activate: bool = True) -> None:
        # Recording a version again (a retried train job) replaces it: one entry, the newest.
        kept = [v for v in self.versions(version.pipeline_id) if v.version != version.version]
        self._versions[version.pipeline_id] = [replace(version), *kept]
        if activate:
            self._active[version.pipeline_id] = version.version

    def active(self, pipeline_id: str) -> ModelVersion | None:
        want = self._active.get(pipeline_id)
        return next((v for v in self.versions(pipeline_id) if v.version == want), None)

    def versions(self, pipeline_id: str) -> list[ModelVersion]:
        return list(self._versions.get(pipeline_id, []))

    def activate(self, pipeline_id: str, version: str) -> None:
        if not any(v.version == version for v in self.versions(pipeline_id)):
            raise NotFound("model version", f"{pipeline_id}/{version}")
        self._active[pipeline_id] = version

    def last_end(self, pipeline_id: str) -> int | None:
        return self._checkpoints.get(pipeline_id)

    def advance(self, pipeline_id: str, end: int) -> None:
        self._checkpoints[pipeline_id] = max(end, self._checkpoints.get(pipeline_id, end))


class MemoryArtifactStore:
    def __init__(self) -> None:
        self.saved: dict[str, bytes] = {}

    def save(self, key: str, data: bytes) -> None:
        self.saved[key] = bytes(data)

    def load(self, key: str) -> bytes:
        try:
            return self.saved[key]
        except KeyError:
            raise NotFound("artifact", key) from None

    def delete(self, key: str) -> None:
        self.saved.pop(key, None)


class RecordingDispatcher:
    """Records jobs and, when given a handler, runs them at once in the caller's thread; a job
    that raises is logged, as the thread pool logs it, and does not reach the caller. After
    ``close`` it takes no job, as the thread pool."""

    def __init__(self, handler: object | None = None) -> None:
        self.submitted: list[Job] = []
        self.closed = False
        self._handler = handler
        self._lock = threading.Lock()

    def submit(self, job: Job) -> None:
        with self._lock:
            if self.closed:
                return
            self.submitted.append(job)
        if callable(self._handler):
            try:
                self._handler(job)
            except Exception as exc:
                log.error("job %s raised %r", job, exc)

    def close(self) -> None:
        with self._lock:
            self.closed = True


class MemoryJobPlanner:
    """A JobPlanner of fixed answers: ``pipelines``, which of them are ``untrained``, and the
    window ``due`` per pipeline (taken once: the next tick finds nothing new)."""

    def __init__(
        self,
        pipelines: Iterable[Pipeline] = (),
        *,
        untrained: Iterable[str] = (),
        due: dict[str, InferWindow] | None = None,
        now: int = 0,
    ) -> None:
        self.pipelines = list(pipelines)
        self.untrained = set(untrained)
        self.due = dict(due or {})
        self.now = now
        self.failures: dict[str, str] = {}
        """Pipeline id -> ``what: error`` for each failure reported by the scheduler."""

    def enabled_pipelines(self) -> list[Pipeline]:
        return [p for p in self.pipelines if p.enabled]

    def needs_training(self, pipeline_id: str) -> bool:
        return pipeline_id in self.untrained

    def train_job(self, pipeline_id: str) -> TrainJob:
        return TrainJob(pipeline_id, self.now)

    def due_infer(self, pipeline_id: str) -> InferWindow | None:
        return self.due.pop(pipeline_id, None)

    def pipeline_failed(self, pipeline_id: str, what: str, exc: BaseException) -> bool:
        self.failures[pipeline_id] = f"{what}: {exc}"
        return True


class RecordingTelemetry:
    """Telemetry that keeps what it was told: ``jobs`` as (kind, pipeline, status, seconds),
    ``inferences`` as the results; its page lists both, one line each."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, str, str, float]] = []
        self.inferences: list[InferResult] = []
        self.dropped: dict[str, int] = {}
        self.broken: set[str] = set()
        self._lock = threading.Lock()

    def job_done(
        self, kind: str, pipeline_id: str, status: Literal["ok", "error"], seconds: float
    ) -> None:
        with self._lock:
            self.jobs.append((kind, pipeline_id, status, seconds))

    def inferred(self, result: InferResult) -> None:
        with self._lock:
            self.inferences.append(result)

    def samples_dropped(self, reason: str, count: int) -> None:
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def pipelines_broken(self, pipelines: Iterable[str], broken: Iterable[str]) -> None:
        with self._lock:
            self.broken = set(broken)

    def exposition(self) -> tuple[bytes, str]:
        with self._lock:
            lines = [f"job {k} {p} {s}" for k, p, s, _ in self.jobs]
            lines += [f"inferred {r.pipeline_id} {r.points} {r.anomalies}" for r in self.inferences]
        return "".join(f"{line}\n" for line in lines).encode(), "text/plain; charset=utf-8"


class MeanEngine:
    """A fake engine: per-series mean and standard deviation of the training data. Enough to
    drive the Trainer and Inferencer in unit tests without any real model."""

    requires_fit = True

    def __init__(self, *, z: float = 3.0) -> None:
        self.z = z
        self.keys_: list[str] = []
        self.mean_ = np.empty(0)
        self.std_ = np.empty(0)

    def fit(self, history: SeriesBatch) -> Self:
        self.keys_ = list(history.keys)
        self.mean_ = np.nanmean(history.values, axis=1)
        self.std_ = np.nan_to_num(np.nanstd(history.values, axis=1)) + 1e-9
        return self

    def known(self, keys: Sequence[str]) -> np.ndarray:
        have = set(self.keys_)
        return np.array([k in have for k in keys], dtype=bool)

    def predict(self, context: SeriesBatch, timestamps: np.ndarray, interval: float) -> Forecast:
        pos = {k: i for i, k in enumerate(self.keys_)}
        rows = [pos[k] for k in context.keys]
        yhat = np.repeat(self.mean_[rows, None], timestamps.size, axis=1)
        half = np.repeat(self.z * self.std_[rows, None], timestamps.size, axis=1)
        return Forecast(yhat, yhat - half, yhat + half)

    def dumps(self) -> bytes:
        return json.dumps(
            {"keys": self.keys_, "mean": self.mean_.tolist(), "std": self.std_.tolist()}
        ).encode()

    @classmethod
    def loads(cls, data: bytes) -> MeanEngine:
        state = json.loads(data)
        engine = cls()
        engine.keys_ = state["keys"]
        engine.mean_, engine.std_ = np.array(state["mean"]), np.array(state["std"])
        return engine


class ColdMeanEngine(MeanEngine):
    """Cold start for the fake: the mean and spread of the context itself."""

    requires_fit = False

    def known(self, keys: Sequence[str]) -> np.ndarray:
        return np.ones(len(keys), dtype=bool)

    def predict(self, context: SeriesBatch, timestamps: np.ndarray, interval: float) -> Forecast:
        return MeanEngine(z=self.z).fit(context).predict(context, timestamps, interval)


class MemoryEngineFactory:
    """EngineFactory over the fake engines; records which models were created and loaded."""

    def __init__(self) -> None:
        self.created = 0
        self.loaded = 0
        self.refused: dict[str, EngineError] = {}
        """Engine name -> the error ``validate`` and ``create`` raise for it."""

    def create(self, spec: ModelSpec, *, step: int) -> MeanEngine:
        self.validate(spec, step=step)
        self.created += 1
        return MeanEngine()

    def validate(self, spec: ModelSpec, *, step: int) -> None:
        if spec.engine in self.refused:
            raise self.refused[spec.engine]

    def load(self, spec: ModelSpec, data: bytes, *, step: int) -> MeanEngine:
        self.loaded += 1
        return MeanEngine.loads(data)

    def cold_start(self, *, step: int) -> ColdMeanEngine:
        return ColdMeanEngine()

    def resolve(self, spec: ModelSpec) -> ModelSpec:
        return spec if spec.name is not None else spec.model_copy(update={"name": "mean"})
