"""Panel helpers shared by the engines fitted over a panel (mlforecast, pyod): interpolating
short gaps, contiguous runs, per-series robust scaling (and ``ScaledPanel``, the engines learning
in those units) and a conformal quantile, all vectorized over series.

No optional library is imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.base import KeyIndex
from openanomaly.engines.kernels.robust import MAD_TO_SD, TINY, nanmedian, z_score


def interpolate_short_gaps(values: FloatArray, max_gap: int) -> FloatArray:
    """``values`` with interior gaps of at most ``max_gap`` missing points linearly interpolated.

    Longer gaps, and missing points before a row's first or after its last value, stay NaN.
    """
    n, t = values.shape
    if not n or not t:
        return values.copy()
    valid = ~np.isnan(values)
    idx = np.arange(t)
    prev = np.maximum.accumulate(np.where(valid, idx, -1), axis=1)
    nxt = np.minimum.accumulate(np.where(valid, idx, t)[:, ::-1], axis=1)[:, ::-1]
    fill = ~valid & (prev >= 0) & (nxt < t) & (nxt - prev - 1 <= max_gap)
    rows = np.arange(n)[:, None]
    before = values[rows, np.maximum(prev, 0)]
    after = values[rows, np.minimum(nxt, t - 1)]
    weight = (idx - prev) / np.maximum(nxt - prev, 1)
    return np.where(fill, before + (after - before) * weight, values)


def runs(filled: FloatArray) -> tuple[IntArray, IntArray, IntArray]:
    """Contiguous non-NaN runs of each row: ``(row, first column, length)`` per run."""
    valid = ~np.isnan(filled)
    pad = np.zeros((filled.shape[0], 1), dtype=bool)
    edges = np.diff(np.concatenate([pad, valid, pad], axis=1).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # same row-major order as the starts
    return rows.astype(np.int64), starts.astype(np.int64), (ends - starts).astype(np.int64)


def last_run(filled: FloatArray, keep: int) -> tuple[IntArray, IntArray]:
    """Per row, the first column and length of the last ``keep`` points of its last run
    (length 0 for an all-NaN row)."""
    t = filled.shape[1]
    valid = ~np.isnan(filled)
    any_valid = valid.any(axis=1)
    last = t - 1 - np.argmax(valid[:, ::-1], axis=1)
    idx = np.arange(t)
    gap_before = np.where(~valid & (idx[None, :] < last[:, None]), idx, -1).max(axis=1, initial=-1)
    start = np.maximum(gap_before + 1, last - keep + 1)
    length = np.where(any_valid, last - start + 1, 0)
    return start.astype(np.int64), length.astype(np.int64)


def robust_scale(values: FloatArray, *, floor: float) -> tuple[FloatArray, FloatArray]:
    """Per row: median and ``1.4826 * MAD`` (at least ``floor * |median|``, and ``TINY``)."""
    center = nanmedian(values)
    scale = MAD_TO_SD * nanmedian(np.abs(values - center[:, None]))
    scale = np.fmax(scale, floor * np.abs(center))
    return center, np.where(np.isfinite(scale), np.maximum(scale, TINY), np.nan)


def conformal_quantile(scores: FloatArray, level: float) -> float:
    """The split-conformal quantile of ``scores`` (finite, >= 0) at ``level``.

    That is the ``ceil((n + 1) * level)``-th smallest score. When ``level`` asks for more than
    ``n`` scores can support (``0.999`` needs 999 of them), the tail is extrapolated: the larger
    of the largest score and the normal quantile ``z(level)`` (the scores are standardized).
    """
    s = np.sort(scores[np.isfinite(scores)])
    n = s.size
    k = math.ceil((n + 1) * level)
    if n and k <= n:
        return float(s[k - 1])
    return max(float(s[-1]) if n else 0.0, z_score(level))


def spans(start: IntArray, length: IntArray) -> tuple[IntArray, IntArray]:
    """The owner (index into ``start``) and column of every cell of the spans
    ``[start, start + length)``, in order."""
    owner = np.repeat(np.arange(length.size, dtype=np.int64), length)
    first = np.repeat(np.cumsum(length) - length, length)
    cols = np.repeat(start, length) + np.arange(owner.size, dtype=np.int64) - first
    return owner, cols.astype(np.int64)


@dataclass(frozen=True)
class ScaledContext:
    """A context as a scaled engine sees it: the all-NaN forecast to fill, the positions
    ``sel`` of the fitted series in the context and their fitted ``rows``, and their values
    scaled and with short gaps interpolated."""

    out: Forecast
    ts: IntArray
    sel: IntArray
    rows: IntArray
    filled: FloatArray


class ScaledPanel(KeyIndex):
    """An engine that learns on each series scaled by its median and robust spread (mlforecast,
    pyod): ``center_`` and ``scale_`` learnt at fit, short gaps (``max_gap``) interpolated."""

    center_: FloatArray
    scale_: FloatArray
    spread_floor: float
    max_gap: int

    def _learn_scale(self, history: SeriesBatch) -> FloatArray:
        """Learn each series' centre and scale; the history in those units."""
        self.center_, self.scale_ = robust_scale(history.values, floor=self.spread_floor)
        return (history.values - self.center_[:, None]) / self.scale_[:, None]

    def _scaled(self, context: SeriesBatch, timestamps: IntArray) -> ScaledContext:
        """``context`` in the units learnt at fit; ``sel`` is empty when nothing is to be
        forecast (then every row of ``out`` stays NaN)."""
        ts = np.asarray(timestamps, dtype=np.int64)
        out = Forecast(*(np.full((len(context), ts.size), np.nan) for _ in range(3)))
        rows = self._rows(context.keys)
        sel = np.flatnonzero(rows >= 0)
        if not ts.size or not sel.size or not context.timestamps.size:
            return ScaledContext(out, ts, sel[:0], rows[:0], np.empty((0, 0)))
        r = rows[sel]
        norm = (context.values[sel] - self.center_[r, None]) / self.scale_[r, None]
        return ScaledContext(out, ts, sel, r, interpolate_short_gaps(norm, self.max_gap))
