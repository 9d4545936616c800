"""The Inferencer: score the points of one window and write the results.

Stateless and idempotent: everything comes from the window, the TSDB and the active model, so
running the same window twice writes the same samples.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from openanomaly.domain.outputs import build_outputs
from openanomaly.domain.records import InferResult, ModelVersion
from openanomaly.domain.scoring import Scored, score
from openanomaly.domain.series import FloatArray, Forecast, SeriesBatch
from openanomaly.domain.spec import Pipeline, spec_hash
from openanomaly.domain.trust import HISTORY_KEY, untrusted_reason
from openanomaly.ports import (
    ArtifactStore,
    CheckpointStore,
    EngineFactory,
    MetricsReader,
    MetricsWriter,
    ModelEngine,
    ModelRegistry,
)
from openanomaly.services.cache import ModelCache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowScores:
    """The scored window before it is written: what the backtest and the API plots use."""

    batch: SeriesBatch
    scored: Scored
    cold: int
    model_seconds: float = 0.0
    score_seconds: float = 0.0


def score_window(
    pipeline: Pipeline,
    batch: SeriesBatch,
    *,
    start: int,
    end: int,
    model: ModelEngine | None,
    engines: EngineFactory,
) -> WindowScores:
    """Forecast and score the part of ``batch`` in ``(start, end]`` from what precedes it.

    Series that ``model`` does not know (new since the last training, or no model yet) are
    forecast by the engine factory's cold-start model instead of being dropped.
    """
    t0 = time.perf_counter()
    context = batch.between(start - pipeline.infer.context, start)
    new = batch.between(start, end)
    known = model.known(new.keys) if model is not None else np.zeros(len(new), dtype=bool)
    parts: list[tuple[npt.NDArray[np.intp], Forecast]] = []
    interval = pipeline.scoring.interval
    if model is not None and known.any():
        rows = np.flatnonzero(known)
        parts.append((rows, model.predict(context.take(rows), new.timestamps, interval)))
    cold_rows = np.flatnonzero(~known)
    if cold_rows.size:
        cold = engines.cold_start(step=pipeline.step)
        parts.append((cold_rows, cold.predict(context.take(cold_rows), new.timestamps, interval)))
    forecast = Forecast.stack(parts, len(new), new.timestamps.size)
    if pipeline.scoring.data_range is None:
        forecast = floor_at_zero(forecast, context.values)
    t1 = time.perf_counter()
    scored = score(new.values, forecast, pipeline.scoring)
    t2 = time.perf_counter()
    return WindowScores(new, scored, int(cold_rows.size), t1 - t0, t2 - t1)


def floor_at_zero(forecast: Forecast, history: FloatArray) -> Forecast:
    """The learned floor, when ``scoring.data_range`` is not set: a series with no negative
    value in ``history`` (rates, counters, durations) gets no lower band below 0. Before the
    ``min_deviation`` widening, which may still reach below 0 by at most that deviation."""
    seen = np.isfinite(history)
    never_negative = seen.any(axis=1) & ~((history < 0) & seen).any(axis=1)
    if not never_negative.any():
        return forecast
    lower = forecast.lower.copy()
    lower[never_negative] = np.maximum(lower[never_negative], 0.0)
    return Forecast(forecast.yhat, lower, forecast.upper)


class Inferencer:
    def __init__(
        self,
        *,
        reader: MetricsReader,
        writer: MetricsWriter,
        engines: EngineFactory,
        artifacts: ArtifactStore,
        registry: ModelRegistry,
        checkpoints: CheckpointStore,
        cache: ModelCache | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._engines = engines
        self._artifacts = artifacts
        self._registry = registry
        self._checkpoints = checkpoints
        self._cache = cache or ModelCache()
        self._told_waiting: set[tuple[str, str]] = set()

    def infer(self, pipeline: Pipeline, start: int, end: int) -> InferResult:
        """Score the points with ``start < t <= end``, write them, advance the checkpoint."""
        result = InferResult(pipeline.id, start, end)
        t0 = time.perf_counter()
        batch = self._reader.query_range(
            pipeline.query, start - pipeline.infer.context, end, pipeline.step
        )
        t1 = time.perf_counter()
        version = self._active(pipeline)
        model = self._model(pipeline, version)
        load = time.perf_counter() - t1
        scores = score_window(
            pipeline, batch, start=start, end=end, model=model, engines=self._engines
        )
        t2 = time.perf_counter()
        outputs = build_outputs(
            scores.batch.labels, scores.batch.timestamps, scores.scored, pipeline
        )
        result.waiting = self._untrusted(pipeline, version)
        if result.waiting is not None:
            outputs = []  # the model has not seen enough history: domain/trust.py
        result.samples_written = self._writer.write(outputs) if outputs else 0
        t3 = time.perf_counter()
        self._checkpoints.advance(pipeline.id, end)
        s = scores.scored.score
        result.series = len(scores.batch)
        result.points = int(np.isfinite(s).sum())
        result.anomalies = int((s > 1).sum())
        result.cold_series = scores.cold
        result.model_version = version.version if version else None
        result.timings = {
            "read": t1 - t0,
            "model": load + scores.model_seconds,
            "score": scores.score_seconds,
            "write": t3 - t2,
        }
        log.info(
            "inferred pipeline=%s window=(%d,%d] series=%d points=%d anomalies=%d cold=%d",
            pipeline.id,
            start,
            end,
            result.series,
            result.points,
            result.anomalies,
            result.cold_series,
        )
        return result

    def _untrusted(self, pipeline: Pipeline, version: ModelVersion | None) -> str | None:
        """Why this window's scores are not written (logged once per model version)."""
        if version is None or HISTORY_KEY not in version.extra:
            return None
        reason = untrusted_reason(
            pipeline.train.window, int(version.extra[HISTORY_KEY]), version.train_end
        )
        if reason is not None and (pipeline.id, version.version) not in self._told_waiting:
            self._told_waiting.add((pipeline.id, version.version))
            log.warning("pipeline=%s writes no score yet: %s", pipeline.id, reason)
        return reason

    def _active(self, pipeline: Pipeline) -> ModelVersion | None:
        version = self._registry.active(pipeline.id)
        if version is not None and version.spec_hash != spec_hash(pipeline):
            log.warning(
                "pipeline=%s model changed since version %s was trained: cold start until the "
                "next train",
                pipeline.id,
                version.version,
            )
            return None
        return version

    def _model(self, pipeline: Pipeline, version: ModelVersion | None) -> ModelEngine | None:
        """The active fitted model; without one, the engine itself if it needs no fit."""
        key = (pipeline.id, version.version if version else f"unfitted-{spec_hash(pipeline)}")
        model = self._cache.get(key)
        if model is None:
            if version is None or version.artifact is None:
                model = self._engines.create(pipeline.model, step=pipeline.step)
                if version is None and model.requires_fit:
                    return None
            else:
                data = self._artifacts.load(version.artifact)
                model = self._engines.load(pipeline.model, data, step=pipeline.step)
            self._cache.put(key, model)
        return model
