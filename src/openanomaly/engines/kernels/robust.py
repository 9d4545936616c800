"""Robust, NaN-aware numeric kernels over a panel (series x time), vectorized over series.

``np.nanmedian`` loops over rows in Python for long axes and warns on empty rows; these do
neither, so the built-in models stay fast and quiet under ``-W error``.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import FloatArray, IntArray
from openanomaly.errors import EngineError

MAD_TO_SD = 1.4826  # MAD of a normal sample times this estimates its standard deviation
MEAN_AD_TO_SD = 1.2533  # the same for the mean absolute deviation (sqrt(pi / 2))
MIN_POINTS = 3  # fewer recent points than this give no scale estimate
TINY = 1e-9  # absolute floor of a half-width, so a constant series never gets a zero band


def z_score(interval: float) -> float:
    """The normal quantile of a central ``interval`` band, e.g. 2.576 for 0.99."""
    if not 0.0 < interval < 1.0:
        raise EngineError(f"interval must be in (0, 1), got {interval!r}")
    return NormalDist().inv_cdf((1.0 + interval) / 2.0)


def nanmedian(a: FloatArray) -> FloatArray:
    """Median over the last axis ignoring NaN; NaN where a row has no value.

    Sorting puts NaN last, so the median is two gathers. Unlike ``np.nanmedian`` this neither
    warns on empty rows nor loops over rows in Python for long axes.
    """
    if a.shape[-1] == 0:
        return np.full(a.shape[:-1], np.nan)
    s = np.sort(a, axis=-1)
    n = np.count_nonzero(~np.isnan(s), axis=-1)[..., None]
    lo = np.take_along_axis(s, np.maximum(n - 1, 0) // 2, axis=-1)
    hi = np.take_along_axis(s, n // 2, axis=-1)
    return np.asarray(((lo + hi) / 2.0)[..., 0], dtype=np.float64)


def last_valid(values: FloatArray, k: int) -> tuple[IntArray, IntArray, IntArray]:
    """Rows, columns and left-padded positions (in ``[0, k)``) of each row's last ``k`` values."""
    valid = ~np.isnan(values)
    from_end = np.cumsum(valid[:, ::-1], axis=1)[:, ::-1]
    rows, cols = np.nonzero(valid & (from_end <= k))
    return rows, cols, k - from_end[rows, cols]


def recent_stats(
    recent: FloatArray, *, robust: bool
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp]]:
    """Centre, scale (NaN under ``MIN_POINTS`` values) and count of each row of ``recent``."""
    count = np.count_nonzero(~np.isnan(recent), axis=1)
    if robust:
        center = nanmedian(recent)
        dev = np.abs(recent - center[:, None])
        scale = MAD_TO_SD * nanmedian(dev)
        # Quantized or mostly constant data has a MAD of 0: the mean absolute deviation, scaled
        # to a standard deviation too, still sees the values that differ from the median.
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_ad = np.where(np.isnan(dev), 0.0, dev).sum(axis=1) / count
        scale = np.where(scale > 0, scale, MEAN_AD_TO_SD * mean_ad)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            center = np.where(np.isnan(recent), 0.0, recent).sum(axis=1) / count
            dev = np.where(np.isnan(recent), 0.0, recent - center[:, None])
            scale = np.sqrt((dev**2).sum(axis=1) / (count - 1))
    return center, np.where(count >= MIN_POINTS, scale, np.nan), count


def circular_smooth(a: FloatArray, w: int) -> FloatArray:
    """NaN-ignoring moving mean over ``2w+1`` slots of the last axis, wrapping around."""
    size = a.shape[-1]
    w = min(w, (size - 1) // 2)
    if w <= 0:
        return a
    ext = np.concatenate([a[:, -w:], a, a[:, :w]], axis=1)
    ok = ~np.isnan(ext)
    zero = np.zeros((a.shape[0], 1))
    sums = np.concatenate([zero, np.cumsum(np.where(ok, ext, 0.0), axis=1)], axis=1)
    counts = np.concatenate([zero, np.cumsum(ok, axis=1)], axis=1)
    total, n = sums[:, 2 * w + 1 :] - sums[:, :size], counts[:, 2 * w + 1 :] - counts[:, :size]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / n, np.nan)


def block_center(resid: FloatArray, block: int) -> FloatArray:
    """Each value's block median (blocks of ``block`` time steps), as the online offset sees it."""
    n, t = resid.shape
    nb = -(-t // block)
    padded = np.full((n, nb * block), np.nan)
    padded[:, :t] = resid
    blocks = padded.reshape(n, nb, block)
    med = nanmedian(blocks)
    few = np.count_nonzero(~np.isnan(blocks), axis=2) < MIN_POINTS
    med = np.where(few, nanmedian(resid)[:, None], med)
    return np.repeat(med, block, axis=1)[:, :t]
