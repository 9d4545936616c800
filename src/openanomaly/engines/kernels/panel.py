"""Panel helpers shared by the engines fitted over a panel (profile, mlforecast, pyod): gap
filling, contiguous runs, the key -> fitted row lookup, per-series robust scaling and a
conformal quantile, all vectorized over series.

No optional library is imported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import FloatArray, IntArray
from openanomaly.engines.kernels.robust import MAD_TO_SD, TINY, nanmedian, z_score

BoolArray = npt.NDArray[np.bool_]


def fill_gaps(values: FloatArray, max_gap: int) -> FloatArray:
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


class FittedKeys:
    """The key -> row lookup of a model fitted over a panel: ``keys_`` (the series it saw, in
    row order) and ``known_`` (which of them it could learn from), set by ``fit``."""

    keys_: tuple[str, ...]
    known_: BoolArray
    _index: dict[str, int] | None = None

    def _rows(self, keys: Sequence[str]) -> IntArray:
        """Each key's fitted row, or -1 (unseen, or seen without enough data)."""
        if not self.__dict__.get("keys_"):
            return np.full(len(keys), -1, dtype=np.int64)
        if tuple(keys) == self.keys_:  # the usual case: the same query as at fit
            rows = np.arange(len(keys), dtype=np.int64)
        else:
            if self._index is None:
                self._index = {k: i for i, k in enumerate(self.keys_)}
            index = self._index
            rows = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        return np.where((rows >= 0) & self.known_[np.maximum(rows, 0)], rows, -1)

    def known(self, keys: Sequence[str]) -> BoolArray:
        """Which series have a fitted model (the others get the cold-start model)."""
        return np.asarray(self._rows(keys) >= 0, dtype=bool)
