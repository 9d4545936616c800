"""The band of a window detector: which values of the next point it would call normal.

A detector scores the window *ending at* a point, so it needs the actual value, which a forecast
band must do without. We turn the question around: for each series, given the last ``w - 1``
context values, the band is the set of candidates ``y`` whose window ``[context..., y]`` the
detector scores at most ``threshold``. It is found by a grid over ``y`` (every series at once, one
``decision_function`` call), then a finer grid inside the bracket of both edges (one more
call). No optional library is imported here.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import FloatArray

Scorer = Callable[[FloatArray], FloatArray]  # (rows, features) -> (rows,) outlier scores


def window_features(base: FloatArray, y: FloatArray, *, diffs: bool) -> FloatArray:
    """Features of the windows ``[base_i..., y_ij]``: ``base`` is ``(n, w-1)``, ``y`` is ``(n, k)``;
    returns ``(n * k, w [+ w-1])`` rows, series-major.

    With ``diffs``, the differences between the point and each earlier value of its window are
    added: half the features then move with the point, so that detectors which pick features at
    random (IForest) look at it as often as at its context.
    """
    n, k = y.shape
    rep = np.repeat(base[:, None, :], k, axis=1)
    win = np.concatenate([rep, y[:, :, None]], axis=2).reshape(n * k, -1)
    if not diffs:
        return win
    return np.concatenate([win, (y[:, :, None] - rep).reshape(n * k, -1)], axis=1)


def band(
    score: Scorer,
    base: FloatArray,
    center: FloatArray,
    unit: FloatArray,
    threshold: FloatArray,
    *,
    span: float,
    grid: int,
    refine: int,
    diffs: bool,
) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    """The detector's band for the next point of each series, in the units of ``base``.

    The grid is ``center ± span * unit`` (``grid`` points). ``yhat`` is the best-scored candidate
    (the one nearest ``center`` among ties) and the band is the contiguous run of candidates
    around it scored at most ``threshold``, each edge refined by ``refine`` candidates inside its
    grid bracket (to ``1 / (refine + 1)`` of a grid step); a band
    reaching the grid's end stops there. ``abnormal`` marks the series whose best candidate is
    over ``threshold``: their context window is itself abnormal (an anomaly still inside it), the
    detector would flag any next value, and their band (what scores no worse than the best) means
    little.

    Returns:
        ``(yhat, lower, upper, abnormal)``, one value per series.
    """
    n = base.shape[0]
    offsets = np.linspace(-span, span, grid)
    cand = center[:, None] + unit[:, None] * offsets[None, :]
    s = score(window_features(base, cand, diffs=diffs)).reshape(n, grid)
    best = s.min(axis=1)
    limit = np.maximum(threshold, best)
    idx = np.arange(grid)
    tie = s <= best[:, None]
    j = np.argmin(np.where(tie, np.abs(idx - grid // 2), grid), axis=1)
    outside = s > limit[:, None]
    lo = np.where(outside & (idx < j[:, None]), idx, -1).max(axis=1)
    hi = np.where(outside & (idx > j[:, None]), idx, grid).min(axis=1)
    rows = np.arange(n)
    # Brackets (inside, outside) for each edge; an edge at the grid's end is final.
    lo_in, lo_out = cand[rows, lo + 1], cand[rows, np.maximum(lo, 0)]
    hi_in, hi_out = cand[rows, hi - 1], cand[rows, np.minimum(hi, grid - 1)]
    if refine:
        # One more call scores ``refine`` evenly spaced candidates inside each bracket; the edge
        # lies between the last of the run inside and the first outside. (Bisection needed a
        # call per halving, and with IForest the ~100 per-tree calls of each dominate.)
        frac = np.arange(1, refine + 1) / (refine + 1)
        ins, outs = np.stack([lo_in, hi_in], axis=1), np.stack([lo_out, hi_out], axis=1)
        sub = ins[:, :, None] + (outs - ins)[:, :, None] * frac
        inside = (
            score(window_features(base, sub.reshape(n, -1), diffs=diffs)).reshape(n, 2, refine)
            <= limit[:, None, None]
        )
        k = np.where(inside.all(axis=2), refine, np.argmin(inside, axis=2))  # run inside
        edges = np.concatenate([[0.0], frac, [1.0]])
        ins, outs = ins + (outs - ins) * edges[k], ins + (outs - ins) * edges[k + 1]
        (lo_in, hi_in), (lo_out, hi_out) = ins.T, outs.T
    lower = np.where(lo >= 0, (lo_in + lo_out) / 2, cand[:, 0])
    upper = np.where(hi < grid, (hi_in + hi_out) / 2, cand[:, -1])
    return cand[rows, j], lower, upper, best > threshold
