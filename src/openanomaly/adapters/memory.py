"""In-memory implementations of every port. They record what happened (``written``, ``saved``,
``submitted``) so unit tests assert on effects instead of mocking calls. The same contract tests
run against these and the real adapters."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Literal, Self

import numpy as np

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
from openanomaly.domain.series import Forecast, IntArray, SeriesBatch, series_key
from openanomaly.domain.spec import ModelSpec, Pipeline
from openanomaly.errors import (
    EngineError,
    NotFound,
    PipelineBusy,
    QueryError,
    TsdbUnavailable,
    WriteRejected,
)
from openanomaly.ports import TickKind

log = logging.getLogger(__name__)

_WRAPPED = re.compile(r"last_over_time\((.*)\[\w+\]\)")
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?")
_MATCHERS = re.compile(r'(?:\s*\w+\s*=\s*"[^"]*"\s*,?)*')
_MATCHER = re.compile(r'(\w+)\s*=\s*"([^"]*)"')

Sample = tuple[int, float]
SeriesId = tuple[tuple[str, str], ...]


class MemoryMetrics:
    """A tiny TSDB: ``query_range`` returns the stored batch on the asked grid (the query text
    selects a stored batch by name), ``write`` records every series written.

    A query that names no stored batch reads the written series: ``name{label="value", ...}``,
    optionally in ``last_over_time(...[1s])``. Points are read without lookback (a gap reads as
    NaN). Any other query is refused with a ``QueryError``, as a TSDB refuses bad PromQL.

    It behaves like one of the real TSDBs on a rewrite, so that a double write is visible:

    - ``behaves="victoriametrics"`` (the default) stores every sample sent, duplicates
      included, as VictoriaMetrics does;
    - ``behaves="prometheus"`` refuses a whole request (``WriteRejected``, nothing of it kept)
      when any sample in it lies before its series' newest stored one ("out of order"), at
      that timestamp with another value ("duplicate"), or before ``oldest`` ("out of bounds");
      an exact repeat of the newest sample is accepted and not stored again.

    Writes are cut into requests of ``batch_samples`` like the remote writer's;
    ``fail_requests`` holds the numbers (0-based, over the fake's life) of requests that fail
    with ``TsdbUnavailable`` before reaching the store: a crash or an outage mid-write;
    ``lost_answers`` those that are stored and then fail with ``WriteUncertain``, as when a
    timeout cuts the answer off.
    """

    def __init__(
        self,
        batches: dict[str, SeriesBatch] | None = None,
        *,
        behaves: Literal["prometheus", "victoriametrics"] = "victoriametrics",
        batch_samples: int = 50_000,
        oldest: int | None = None,
    ) -> None:
        self.batches = dict(batches or {})
        self.behaves = behaves
        self.batch_samples = batch_samples
        self.oldest = oldest
        self.fail_requests: set[int] = set()
        self.lost_answers: set[int] = set()
        self.requests = 0
        self.written: list[OutputSeries] = []
        self.stored: dict[SeriesId, list[Sample]] = {}
        self.queries: list[tuple[str, int, int, int]] = []

    def query_range(
        self, query: str, start: int, end: int, step: int, *, recent: bool = False
    ) -> SeriesBatch:
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
        flat: list[tuple[SeriesId, Sample]] = []
        for s in series:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if v))
            ok = np.isfinite(s.values)
            order = np.argsort(s.timestamps[ok], kind="stable")
            ts, vs = s.timestamps[ok][order].tolist(), s.values[ok][order].tolist()
            flat += [(key, (int(t), float(v))) for t, v in zip(ts, vs, strict=True)]
        for i in range(0, len(flat), self.batch_samples):
            self._request(flat[i : i + self.batch_samples])
        return len(flat)

    def _request(self, request: list[tuple[SeriesId, Sample]]) -> None:
        number, self.requests = self.requests, self.requests + 1
        if number in self.fail_requests:
            raise TsdbUnavailable(f"request {number} failed (injected)", url="memory")
        if self.behaves == "prometheus":
            request = self._appendable(request)
        for key, sample in request:
            self.stored.setdefault(key, []).append(sample)
            labels = dict(key)
            self.written.append(OutputSeries(labels, np.array([sample[0]]), np.array([sample[1]])))

    def _appendable(self, request: list[tuple[SeriesId, Sample]]) -> list[tuple[SeriesId, Sample]]:
        """What Prometheus' head appender keeps of a request, or WriteRejected for all of it."""
        newest = {k: v[-1] for k, v in self.stored.items() if v}
        kept = []
        for key, (t, v) in request:
            last = newest.get(key)
            if self.oldest is not None and t < self.oldest:
                raise WriteRejected(f"out of bounds: {t} < {self.oldest}", url="memory", status=400)
            if last is not None and (t < last[0] or (t == last[0] and v != last[1])):
                raise WriteRejected(
                    f"out of order sample: {t} <= {last[0]}", url="memory", status=400
                )
            if last is None or t > last[0]:
                kept.append((key, (t, v)))
                newest[key] = (t, v)
        return kept

    def oldest_accepted(self) -> int | None:
        return self.oldest

    def timestamps(self, selector: str, start: int, end: int) -> dict[str, IntArray]:
        """Supports the selectors the Inferencer sends: ``{a="x",b=~"y|z"}``."""
        matchers = re.findall(r'(\w+)(=~|=)"([^"]*)"', selector)
        out: dict[str, IntArray] = {}
        for key, samples in self.stored.items():
            labels = dict(key)
            if all(_matches(labels.get(n, ""), op, v) for n, op, v in matchers):
                ts = np.array([t for t, _ in samples if start < t <= end], dtype=np.int64)
                if ts.size:
                    out[series_key(labels)] = np.sort(ts)
        return out

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

    def duplicates(self) -> int:
        """Stored samples beyond the first at their (series, timestamp)."""
        return sum(len(v) - len({t for t, _ in v}) for v in self.stored.values())


def _matches(value: str, op: str, pattern: str) -> bool:
    return value == pattern if op == "=" else re.fullmatch(pattern, value) is not None


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
    """ModelRegistry, CheckpointStore and LeaseStore in one, as the SQL store is. Several
    ``Service`` instances sharing one behave like processes sharing a database."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._versions: dict[str, list[ModelVersion]] = {}
        self._active: dict[str, str] = {}
        self._checkpoints: dict[str, int] = {}
        self._journal: dict[str, tuple[int, int]] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._clock = clock
        self._guard = threading.Lock()

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

    def begin(self, pipeline_id: str, start: int, end: int, *, owner: str | None = None) -> None:
        with self._guard:
            if owner is not None:
                self._fence(pipeline_id, owner)
            self._journal[pipeline_id] = (start, end)

    def advance(self, pipeline_id: str, end: int, *, owner: str | None = None) -> None:
        with self._guard:
            if owner is not None:
                self._fence(pipeline_id, owner)
            self._checkpoints[pipeline_id] = max(end, self._checkpoints.get(pipeline_id, end))
            pending = self._journal.get(pipeline_id)
            if pending is not None and pending[1] <= end:
                del self._journal[pipeline_id]

    def state(self, pipeline_id: str) -> WindowState:
        with self._guard:
            owner, expires = self._leases.get(pipeline_id, (None, None))
            return WindowState(
                pipeline_id,
                last_end=self._checkpoints.get(pipeline_id),
                pending=self._journal.get(pipeline_id),
                owner=owner,
                expires=expires,
            )

    def acquire(
        self, pipeline_id: str, owner: str, ttl: float, *, replace: str | None = None
    ) -> bool:
        with self._guard:
            now = self._clock()
            holder, expires = self._leases.get(pipeline_id, (owner, now))
            if holder not in (owner, replace) and expires >= now:
                return False
            self._leases[pipeline_id] = (owner, now + ttl)
            return True

    def release(self, pipeline_id: str, owner: str) -> None:
        with self._guard:
            if self._leases.get(pipeline_id, (None, 0.0))[0] == owner:
                del self._leases[pipeline_id]

    def holder(self, pipeline_id: str) -> str | None:
        with self._guard:
            owner, expires = self._leases.get(pipeline_id, (None, 0.0))
            return owner if expires >= self._clock() else None

    def _fence(self, pipeline_id: str, owner: str) -> None:
        holder = self._leases.get(pipeline_id, (None, 0.0))[0]
        if holder != owner:
            raise PipelineBusy(pipeline_id, holder)


class MemoryJobHistory:
    """JobHistory in a dict, newest first as the stores answer."""

    def __init__(self) -> None:
        self._runs: dict[str, JobRun] = {}
        self._guard = threading.Lock()

    def record_run(self, run: JobRun) -> None:
        with self._guard:
            self._runs[run.job_id] = run

    def get_run(self, job_id: str) -> JobRun:
        with self._guard:
            if job_id not in self._runs:
                raise NotFound("job", job_id)
            return self._runs[job_id]

    def runs(
        self,
        *,
        pipeline_id: str | None = None,
        kind: str | None = None,
        status: str | None = None,
        limit: int = 100,
    ) -> list[JobRun]:
        with self._guard:
            found = [
                r
                for r in self._runs.values()
                if (pipeline_id is None or r.pipeline_id == pipeline_id)
                and (kind is None or r.kind == kind)
                and (status is None or r.status == status)
            ]
        found.sort(key=lambda r: (r.submitted_at or r.started_at or 0.0, r.job_id), reverse=True)
        return found[:limit]

    def prune_runs(self, before: float) -> int:
        with self._guard:
            old = [k for k, r in self._runs.items() if (r.ended_at or before) < before]
            for key in old:
                del self._runs[key]
            return len(old)


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

    def submit(self, job: Job) -> str:
        with self._lock:
            if self.closed:
                return job.id
            self.submitted.append(job)
        if callable(self._handler):
            try:
                self._handler(job)
            except Exception as exc:
                log.error("job %s raised %r", job, exc)
        return job.id

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

    def train_jobs(self, pipeline_id: str) -> list[TrainJob]:
        return [self.train_job(pipeline_id)]

    def due_infer_jobs(self, pipeline_id: str) -> list[InferWindow]:
        window = self.due_infer(pipeline_id)
        return [] if window is None else [window]

    def pipeline_failed(self, pipeline_id: str, what: str, exc: BaseException) -> bool:
        self.failures[pipeline_id] = f"{what}: {exc}"
        return True

    def due_jobs(self, pipeline_id: str, kind: TickKind) -> list[Job]:
        """The Service's rule (``services/ticks.py``) on these fixed answers."""
        if kind == "train":
            return [self.train_job(pipeline_id)]
        jobs: list[Job] = [self.train_job(pipeline_id)] if self.needs_training(pipeline_id) else []
        window = self.due_infer(pipeline_id)
        return [*jobs, window] if window is not None else jobs


class RecordingTelemetry:
    """Telemetry that keeps what it was told: ``jobs`` as (kind, pipeline, status, seconds),
    ``inferences`` as the results; its page lists both, one line each."""

    def __init__(self) -> None:
        self.jobs: list[tuple[str, str, str, float]] = []
        self.inferences: list[InferResult] = []
        self.dropped: dict[str, int] = {}
        self.broken: set[str] = set()
        self.failed_stages: list[str] = []
        self._lock = threading.Lock()

    def job_done(
        self, kind: str, pipeline_id: str, status: Literal["ok", "error", "busy"], seconds: float
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

    def failed(self, stage: str) -> None:
        with self._lock:
            self.failed_stages.append(stage)

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
