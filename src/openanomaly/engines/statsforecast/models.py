"""Helpers around single statsforecast model objects: cleaning a series, fitting with
fallbacks, warm-starting AutoETS, slimming for pickles. The library is never imported here:
model classes come in as arguments (``sfm`` is ``statsforecast.models``).
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from openanomaly.domain.series import FloatArray
from openanomaly.engines.kernels.robust import MAD_TO_SD, MIN_POINTS, z_score

BULKY = ("fitted", "residuals", "actual_residuals", "states")  # not read by forward()

quiet_lock = threading.Lock()
"""``catch_warnings`` swaps a process-wide filter list: threads take turns inside ``quiet``."""


@contextmanager
def quiet() -> Iterator[None]:
    """Silence the library's per-series warnings (convergence...), once per call, not per series."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


Outcome = tuple[Any, str | None, str | None]  # fitted model, fallback used, primary's error


def clean(y: FloatArray, max_gap: int) -> tuple[FloatArray, int] | None:
    """The part of ``y`` after its last gap longer than ``max_gap``, shorter gaps interpolated.

    Returns the values and the index in ``y`` of the last one, or None if ``y`` is all NaN.
    """
    idx = np.flatnonzero(~np.isnan(y))
    if idx.size == 0:
        return None
    long = np.flatnonzero(np.diff(idx) > max_gap + 1)
    if long.size:
        idx = idx[long[-1] + 1 :]
    first, last = int(idx[0]), int(idx[-1])
    seg = y[first : last + 1]
    if idx.size < seg.size:
        seg = np.interp(np.arange(first, last + 1), idx, y[idx])
    return np.asarray(seg, dtype=np.float64), last


def fit_many(proto: Any, chain: Sequence[Any], ys: Sequence[FloatArray]) -> list[Outcome]:
    """Fit ``proto`` to each series, else the first model of ``chain`` that fits."""
    out: list[Outcome] = []
    with quiet():
        for y in ys:
            try:
                out.append((proto.new().fit(y=y), None, None))
                continue
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            fitted = None
            for fallback in chain:
                if getattr(fallback, "season_length", 0) < y.size:
                    try:
                        fitted = (fallback.new().fit(y=y), repr(fallback), error)
                        break
                    except Exception:
                        continue
            out.append(fitted or (None, None, error))
    return out


def resid_sigma(model: Any, y: FloatArray) -> float:
    """``1.4826 * MAD`` of the in-sample residuals (0 when the model cannot tell)."""
    try:
        resid = y - np.asarray(model.predict_in_sample()["fitted"], dtype=np.float64)
    except Exception:
        return 0.0
    resid = resid[np.isfinite(resid)]
    if resid.size < MIN_POINTS:
        return 0.0
    return float(MAD_TO_SD * np.median(np.abs(resid - np.median(resid))))


def ets_of(model: Any, sfm: Any) -> Any:
    """The AutoETS inside ``model`` whose state drives forward, or None."""
    inner = getattr(model, "trend_forecaster", model)
    return inner if isinstance(inner, sfm.AutoETS) else None


def slim(model: Any) -> None:
    """Drop the per-point arrays forward() does not read (they dominate the pickle)."""
    inner = getattr(model, "trend_forecaster", None)
    if inner is not None:
        model.model_ = model.model_.iloc[:0]  # MSTL's in-sample decomposition
        slim(inner)
    elif isinstance(getattr(model, "model_", None), dict):
        model.model_ = {k: v for k, v in model.model_.items() if k not in BULKY}


def advance(model: Any, state: FloatArray, gap: int) -> Any:
    """A copy of a fitted AutoETS starting from ``state`` moved ``gap`` steps (no innovations)."""
    mod = model.model_
    _, trend, season, damped = mod["components"][:4]
    x = state.copy()
    n_lt = 2 if trend != "N" else 1
    if season != "N":
        x[n_lt:] = np.roll(x[n_lt:], gap)
    if trend != "N":
        phi = float(mod["par"][3]) if damped != "N" else 1.0
        if phi == 1.0 or gap > 0:
            ahead = gap if phi == 1.0 else phi * (1 - phi**gap) / (1 - phi)
            with np.errstate(all="ignore"):
                level = x[0] + x[1] * ahead if trend == "A" else x[0] * x[1] ** ahead
            grown = x[1] * phi**gap if trend == "A" else x[1] ** (phi**gap)
            if np.isfinite(level) and np.isfinite(grown):
                x[0], x[1] = level, grown
    warm = model.new()
    warm.model_ = {**mod, "par": np.concatenate([mod["par"][:4], x])}
    return warm


def seasonal_naive(model: Any, y: FloatArray, h: int, interval: float) -> tuple[FloatArray, ...]:
    m = int(model.season_length)
    if y.size < m:
        raise ValueError("context shorter than one season")
    mean = y[-m:][np.arange(h) % m]
    half = z_score(interval) * model.model_["sigma"] * np.sqrt(np.arange(h) // m + 1)
    return mean, mean - half, mean + half
