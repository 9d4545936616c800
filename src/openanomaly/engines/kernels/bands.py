"""Forecast bands from a model's quantile forecasts, for any central interval.

Quantile models learn a fixed set of levels (Chronos-Bolt 0.1..0.9, NeuralForecast's ``MQLoss``
whatever it was trained with). An interval inside that set is read off it, interpolated between
the nearest learned levels. A wider one (0.99 is common for anomaly detection, Chronos-Bolt's
widest band is 0.8) cannot be read off the model: we extrapolate from its outermost levels
assuming a normal shape, each side on its own, scaling the half-width by the ratio of the normal
quantiles. For 0.99 from the 0.1/0.9 pair that is ``z(0.995) / z(0.9) = 2.576 / 1.2816 = 2.01``.
Heavy-tailed data makes such a band too narrow; ``min_deviation`` in the scoring spec guards it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from openanomaly.domain.series import FloatArray, Forecast
from openanomaly.engines.kernels.robust import TINY, z_score
from openanomaly.errors import EngineError

_Z = NormalDist()


@dataclass(frozen=True)
class QuantilePlan:
    """The levels to ask a model for (``lower``, 0.5, ``upper``) and the factors that scale the
    lower and upper half-widths to the requested interval (1.0 when no extrapolation)."""

    lower: float
    upper: float
    lower_scale: float
    upper_scale: float

    @property
    def levels(self) -> list[float]:
        return [self.lower, 0.5, self.upper]


def quantile_plan(native: Sequence[float], interval: float) -> QuantilePlan:
    """How to get a central ``interval`` band from a model that learned the levels ``native``.

    Raises:
        EngineError: ``interval`` is not in (0, 1), or ``native`` has no level on each side of
            the median.
    """
    z_score(interval)  # validates interval
    below = [q for q in native if 0.0 < q < 0.5]
    above = [q for q in native if 0.5 < q < 1.0]
    if not below or not above or 0.5 not in native:
        raise EngineError(f"the model's quantile levels {list(native)} lack 0.5 or a side of it")
    lo, hi = (1.0 - interval) / 2.0, (1.0 + interval) / 2.0
    lo_edge, hi_edge = min(below), max(above)
    lower_scale = upper_scale = 1.0
    if lo < lo_edge:
        lower_scale = _Z.inv_cdf(1.0 - lo) / _Z.inv_cdf(1.0 - lo_edge)
        lo = lo_edge
    if hi > hi_edge:
        upper_scale = _Z.inv_cdf(hi) / _Z.inv_cdf(hi_edge)
        hi = hi_edge
    return QuantilePlan(lo, hi, lower_scale, upper_scale)


def band(plan: QuantilePlan, quantiles: FloatArray) -> Forecast:
    """The forecast from ``quantiles`` shaped ``(..., 3)`` at ``plan.levels``.

    Crossed quantiles (an untrained or odd model) give a zero half-width on that side, which is
    then floored like every band so that ``lower <= yhat <= upper`` and ``upper > lower`` hold.
    """
    q = np.asarray(quantiles, dtype=np.float64)
    yhat = q[..., 1]
    floor = TINY * np.maximum(1.0, np.abs(yhat))
    below = np.maximum((yhat - q[..., 0]) * plan.lower_scale, floor)
    above = np.maximum((q[..., 2] - yhat) * plan.upper_scale, floor)
    return Forecast(yhat, yhat - below, yhat + above)


def at_levels(
    native: Sequence[float], quantiles: FloatArray, levels: Sequence[float]
) -> FloatArray:
    """Quantiles at ``levels`` (within ``native``'s range) from ``quantiles`` shaped
    ``(..., len(native))``, interpolated linearly between the nearest native levels.

    Crossed quantiles are sorted first (rearrangement: it never makes a forecast worse).
    """
    order = np.argsort(native)
    grid = np.asarray(native, dtype=np.float64)[order]
    q = np.sort(np.asarray(quantiles, dtype=np.float64), axis=-1)
    out = []
    for level in levels:
        hi = int(np.clip(np.searchsorted(grid, level), 1, grid.size - 1))
        w = (level - grid[hi - 1]) / (grid[hi] - grid[hi - 1])
        out.append((1.0 - w) * q[..., hi - 1] + w * q[..., hi])
    return np.stack(out, axis=-1)


__all__ = ["QuantilePlan", "at_levels", "band", "quantile_plan"]
