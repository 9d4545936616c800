"""Model selection for the ``auto`` engine: replaying a holdout in production-sized windows
and scoring each candidate's bands there, vectorized over series; and its duration parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from openanomaly.domain.durations import parse_duration
from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.kernels.robust import MAD_TO_SD, nanmedian
from openanomaly.errors import EngineError
from openanomaly.ports import ModelEngine

CAP = 3.0
"""A miss counts up to this many robust noise standard deviations of its series."""


def holdout_windows(
    total: int, holdout: int, every: int, max_windows: int
) -> list[tuple[int, int]]:
    """Column ranges ``[a, b)`` of ``every`` points tiling the last ``holdout`` of ``total``
    columns, evenly thinned to at most ``max_windows`` (each is forecast from what precedes)."""
    starts = list(range(total - holdout, total, every))
    if len(starts) > max_windows:
        pick = np.unique(np.linspace(0, len(starts) - 1, max_windows).round().astype(int))
        starts = [starts[i] for i in pick]
    return [(a, min(a + every, total)) for a in starts]


def noise_scale(values: FloatArray) -> FloatArray:
    """Per series, a robust standard deviation of the noise: the scaled MAD of the first
    differences over sqrt(2). Level shifts and spikes are single outliers among the
    differences, so they barely move it."""
    diffs = np.diff(values, axis=1)
    center = nanmedian(diffs)
    return np.asarray(MAD_TO_SD * nanmedian(np.abs(diffs - center[:, None])) / np.sqrt(2.0))


def interval_score(
    y: FloatArray, lower: FloatArray, upper: FloatArray, interval: float, cap: FloatArray
) -> FloatArray:
    """The interval (Winkler) score of a central ``interval`` band: its width, plus
    ``2 / (1 - interval)`` times how far ``y`` falls outside it, that distance capped per series
    at ``cap``. Lower is better; NaN where ``y`` or the band is NaN.

    The cap keeps what no model should forecast (a spike, the points right after a level
    shift) from rewarding the widest band: every model misses those by about as much.
    """
    penalty = 2.0 / (1.0 - interval)
    miss = np.fmax(lower - y, 0.0) + np.fmax(y - upper, 0.0)
    out: FloatArray = (upper - lower) + penalty * np.fmin(miss, cap[:, None])
    return np.where(np.isnan(y) | np.isnan(lower) | np.isnan(upper), np.nan, out)


def pick(scores: FloatArray, tolerance: float) -> npt.NDArray[np.intp]:
    """Per series (column of ``scores``, candidates x series), the first candidate within
    ``tolerance`` (relative) of the best score; candidate 0 where no score exists."""
    if scores.shape[0] == 0:
        return np.zeros(scores.shape[1], dtype=np.intp)
    finite = np.where(np.isfinite(scores), scores, np.inf)
    best = finite.min(axis=0)
    good = finite <= best * (1.0 + tolerance) + 1e-12
    winner = np.argmax(good, axis=0).astype(np.intp)
    return np.where(np.isfinite(best), winner, 0).astype(np.intp)


def with_cold(
    model: ModelEngine,
    cold: ModelEngine | Forecast,
    ctx: SeriesBatch,
    ts: IntArray,
    interval: float,
) -> Forecast:
    """``model``'s forecast for the series it knows, the cold-start one (a model, or its
    forecast of all of ``ctx``) for the others: what the Inferencer would write."""
    known = model.known(ctx.keys)
    parts: list[tuple[npt.NDArray[np.intp], Forecast]] = []
    if known.any():
        rows = np.flatnonzero(known)
        parts.append((rows, model.predict(ctx.take(rows), ts, interval)))
    if not known.all():
        rows = np.flatnonzero(~known)
        if isinstance(cold, Forecast):
            parts.append((rows, cold.take(rows)))
        else:
            parts.append((rows, cold.predict(ctx.take(rows), ts, interval)))
    return Forecast.stack(parts, len(ctx), ts.size)


@dataclass(frozen=True)
class Replay:
    """How a holdout is replayed: forecasts of ``every`` steps from the ``context`` steps
    before them (at most ``max_windows``), judged by the interval score of an ``interval``
    band."""

    step: int
    every: int
    context: int
    interval: float
    max_windows: int

    def scores(
        self,
        models: list[ModelEngine | None],
        history: SeriesBatch,
        held: int,
        cold: ModelEngine,
    ) -> FloatArray:
        """``(models, series)`` mean interval score over the last ``held`` points of
        ``history`` (NaN where nothing could be ranked; inf for a model that gave no band
        where another did, or that is None)."""
        n = len(history)
        sums, counts = np.zeros((len(models), n)), np.zeros(n)
        cap = CAP * np.nan_to_num(noise_scale(history.values))
        total = history.timestamps.size
        for a, b in holdout_windows(total, held, self.every, self.max_windows):
            ts, last = history.timestamps[a:b], int(history.timestamps[a - 1])
            ctx = history.between(last - self.context * self.step, last)
            actual = history.values[:, a:b]
            base = cold.predict(ctx, ts, self.interval)
            scores = np.full((len(models), *actual.shape), np.nan)
            for i, model in enumerate(models):
                if model is not None:
                    fc = with_cold(model, base, ctx, ts, self.interval)
                    scores[i] = interval_score(actual, fc.lower, fc.upper, self.interval, cap)
            use = ~np.isnan(actual) & np.any(~np.isnan(scores), axis=0)
            sums += np.where(use, np.where(np.isnan(scores), np.inf, scores), 0.0).sum(axis=2)
            counts += use.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / counts, np.nan)


def fraction_or_steps(name: str, value: Any, step: int) -> float:
    """A fraction in (0, 1) as is, or a duration as a whole number of steps (>= 1)."""
    if isinstance(value, float) and 0 < value < 1:
        return value
    if isinstance(value, str | int) and not isinstance(value, bool):
        return float(steps(name, value, step, 1))
    raise EngineError(f"{name} must be a fraction in (0, 1) or a duration, got {value!r}")


def steps(name: str, value: str | int | None, step: int, default: int) -> int:
    """A duration as a number of steps (>= 1), or ``default`` for None."""
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise EngineError(f"{name}: {exc}") from None
    if seconds < step or seconds % step:
        raise EngineError(f"{name} ({value}) must be a whole number of steps ({step}s), >= 1")
    return seconds // step
