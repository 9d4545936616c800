"""Scoring reality against the forecast interval (the output contract).

``anomaly_score`` is the distance of ``y`` from ``yhat`` in units of the band's half-width on
that side: 0 when ``y == yhat``, 1 on the band's edge, above 1 outside it. The band written out
is the *effective* band (widened to ``min_deviation``, clipped to ``data_range``), so that a
score above 1 is exactly a point outside the drawn band.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from openanomaly.domain.series import FloatArray, Forecast
from openanomaly.domain.spec import ScoringSpec

# A band of zero width (a constant series) still needs a finite unit: a relative epsilon.
_REL_EPS = 1e-9
_ABS_EPS = 1e-12


@dataclass(frozen=True)
class Scored:
    """Score and effective band, shaped like the actuals; NaN where there is no score."""

    score: FloatArray
    yhat: FloatArray
    lower: FloatArray
    upper: FloatArray


def effective_band(forecast: Forecast, spec: ScoringSpec) -> Forecast:
    """The band after ``min_deviation`` widening and ``data_range`` clipping."""
    yhat = forecast.yhat
    floor = spec.min_deviation
    lower = yhat - np.maximum(yhat - forecast.lower, floor)
    upper = yhat + np.maximum(forecast.upper - yhat, floor)
    if spec.data_range is not None:
        lo, hi = spec.data_range
        lo = -np.inf if lo is None else lo
        hi = np.inf if hi is None else hi
        yhat, lower, upper = (np.clip(a, lo, hi) for a in (yhat, lower, upper))
    return Forecast(yhat, lower, upper)


def score(actual: FloatArray, forecast: Forecast, spec: ScoringSpec) -> Scored:
    """Score ``actual`` (any shape) against ``forecast`` (same shape).

    Non-finite actuals or forecasts give NaN (no sample is written for them).
    """
    band = effective_band(forecast, spec)
    with np.errstate(invalid="ignore"):
        dev = actual - band.yhat
        eps = _ABS_EPS + _REL_EPS * np.abs(band.yhat)
        above = dev / np.maximum(band.upper - band.yhat, eps)
        below = -dev / np.maximum(band.yhat - band.lower, eps)
        if spec.direction == "above":
            s = np.maximum(above, 0.0)
        elif spec.direction == "below":
            s = np.maximum(below, 0.0)
        else:
            s = np.where(dev >= 0, above, below)
    finite = np.isfinite(actual) & np.isfinite(band.yhat) & np.isfinite(band.lower)
    finite &= np.isfinite(band.upper)
    s = np.where(finite & np.isfinite(s), s, np.nan)
    return Scored(s, band.yhat, band.lower, band.upper)
