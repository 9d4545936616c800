"""Score one window from the context before it: what the Inferencer and the backtest share."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from openanomaly.domain.scoring import Scored, score
from openanomaly.domain.series import FloatArray, Forecast, SeriesBatch
from openanomaly.domain.spec import Pipeline
from openanomaly.ports import EngineFactory, ModelEngine

# How far below 0 the learned floor puts the lower edge, as a share of ``yhat``: off the value 0.
FLOOR_MARGIN = 0.1


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
    # A series with no context point yet is forecast step by step below, from its own points.
    cold_rows = np.flatnonzero(~known & np.isfinite(context.values).any(axis=1))
    if cold_rows.size:
        cold = engines.cold_start(step=pipeline.step)
        parts.append((cold_rows, cold.predict(context.take(cold_rows), new.timestamps, interval)))
    forecast = Forecast.stack(parts, len(new), new.timestamps.size)
    if pipeline.scoring.data_range is None:
        forecast = floor_at_zero(forecast, context.values)
    fresh = _fill_fresh(pipeline, batch, new, forecast, engines)
    t1 = time.perf_counter()
    scored = score(new.values, forecast, pipeline.scoring)
    t2 = time.perf_counter()
    n_cold = int(np.union1d(cold_rows, fresh).size)
    return WindowScores(new, scored, n_cold, t1 - t0, t2 - t1)


def _fill_fresh(
    pipeline: Pipeline,
    batch: SeriesBatch,
    new: SeriesBatch,
    forecast: Forecast,
    engines: EngineFactory,
) -> npt.NDArray[np.intp]:
    """Forecast, step by step from the points before each, the points of series that had no
    context at the window's start (they appeared inside it): the cold-start model sees what
    the live service would have seen at each step. The first point of a series stays unscored.
    Fills ``forecast`` in place; returns the rows filled."""
    gap = np.isnan(forecast.yhat) & np.isfinite(new.values)
    rows = np.flatnonzero(gap.any(axis=1))
    if not rows.size:
        return rows
    cold = engines.cold_start(step=pipeline.step)
    interval = pipeline.scoring.interval
    for j in np.flatnonzero(gap[rows].any(axis=0)):
        t = int(new.timestamps[j])
        want = rows[gap[rows, j]]
        context = batch.between(t - pipeline.step - pipeline.infer.context, t - pipeline.step)
        context = context.take(want)
        seen = np.isfinite(context.values).any(axis=1)
        if not seen.any():
            continue
        fc = cold.predict(context.take(np.flatnonzero(seen)), new.timestamps[j : j + 1], interval)
        for arr, part in zip(
            (forecast.yhat, forecast.lower, forecast.upper),
            (fc.yhat, fc.lower, fc.upper),
            strict=True,
        ):
            arr[want[seen], j] = part[:, 0]
    return rows


def floor_at_zero(forecast: Forecast, history: FloatArray) -> Forecast:
    """The learned floor, when ``scoring.data_range`` is not set: a series with no negative
    value in ``history`` (rates, counters, durations) gets no lower band far below 0. The edge
    stops ``FLOOR_MARGIN`` of ``yhat`` below 0, not on 0: 0 is a value such a series takes
    (an idle CPU, no request), and on the edge it would score exactly 1, on the alarm line
    (NAB's scorer flags ``>= 1``). A value at 0 scores ``1 / (1 + FLOOR_MARGIN)`` at most.
    Before the ``min_deviation`` widening, which may still reach lower by at most that."""
    seen = np.isfinite(history)
    never_negative = seen.any(axis=1) & ~((history < 0) & seen).any(axis=1)
    if not never_negative.any():
        return forecast
    yhat, lower = forecast.yhat[never_negative], forecast.lower.copy()
    floor = np.where(yhat > 0, -FLOOR_MARGIN * yhat, -np.inf)  # never above yhat
    lower[never_negative] = np.maximum(lower[never_negative], floor)
    return Forecast(forecast.yhat, lower, forecast.upper)
