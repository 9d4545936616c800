"""What the built-in profile learns: a seasonal level, its spread, and calibrated tails.

Pure numpy, vectorized over series (rows); ``ProfileModel`` in ``builtin.py`` drives it.

* **Season choice.** Each candidate season (none, a day, a week) is scored by its *held-out*
  error: the profile learnt on the even cycles predicts the odd ones and vice versa, after the
  same online level offset predict applies. A longer season must cut that error by
  ``1 - MARGIN`` to be chosen, and needs ``MIN_CYCLES`` cycles of data. An in-sample
  comparison would always favour the longest season (a median of two values fits noise).
* **Calibrated tails.** Real metrics are not normal: spiky series, quantized ones (a median
  absolute deviation of 0), saturating ones. The standardized training errors
  ``e / spread[slot]`` are kept as empirical quantiles per side (``TAIL_LEVELS``), so that the
  band at ``interval`` covers what the series really does; beyond the highest stored level the
  quantile is extrapolated linearly in ``-log10(1 - p)`` (an exponential tail), never thinner
  than a normal tail through the highest stored quantile: a series whose extremes sit on one
  value (a floor, a cap) gets its edge beyond that value, not on it.
* **Errors as predict will make them.** In-sample errors flatter a profile: a slot's median
  over a few cycles fits their noise, and an offset centred on each point sees its future. So
  the spread and tails are learnt from *out-of-sample* errors: each cycle's residual against
  the profile of the other cycles (odd from even and vice versa, as the season choice does),
  less the median of the ``adapt`` residuals *before* it, as predict's offset is. A slot's
  spread pools neighbour slots until it rests on ``SPREAD_POINTS`` errors, so that a short
  history (a few cycles) does not give some slots a spread that is small by chance.
* **One incident is not normal.** A training window often holds an incident, and at 0.999 the
  top quantiles of a few thousand errors *are* that incident: learnt as normal, it would widen
  the band for as long as it stays in the window (28 days of blindness after one marathon in a
  taxi-demand series). So each side's tails leave out its single largest error and the
  ``INCIDENT`` points either side of it; a series whose extremes recur keeps them.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import FloatArray, IntArray
from openanomaly.engines.kernels.robust import (
    MAD_TO_SD,
    MIN_POINTS,
    TINY,
    block_center,
    circular_smooth,
    nanmedian,
)

TAIL_LEVELS = np.array([0.75, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999])
_TAIL_X = -np.log10(1.0 - TAIL_LEVELS)
_NORMAL = NormalDist()
MIN_CYCLES = 2  # a season is learnt from two cycles at least
MARGIN = 0.9  # a longer season must cut the held-out error by 10% to be preferred
SPREAD_POINTS = 60  # errors a slot's spread rests on at least (neighbour slots pooled)
INCIDENT = 2  # points either side of the worst excursion per side that the tails leave out
INCIDENT_Z = 3.0  # an excursion's values lie beyond this many spreads...
INCIDENT_SHARE = 1 / 3  # ...and beyond this share of its peak


def default_smooth(slots: int) -> int:
    """Slots either side for circular smoothing: 15 minutes of a daily profile at 1m steps."""
    return round(slots / 96) if slots > 1 else 0


def _profile(x: FloatArray, tick: IntArray, slots: int, smooth: int) -> FloatArray:
    """The (smoothed) median of each slot over the cycles; flat (one slot) for ``slots == 1``."""
    if slots == 1:
        return nanmedian(x)[:, None]
    if not tick.size:
        return np.full((x.shape[0], slots), np.nan)
    slot, cycle = tick % slots, tick // slots
    cycle = cycle - cycle.min()
    grid = np.full((x.shape[0], slots, int(cycle.max()) + 1), np.nan)
    grid[:, slot, cycle] = x
    return circular_smooth(nanmedian(grid), smooth)


def _nanmean(a: FloatArray) -> FloatArray:
    """Row means ignoring NaN; +inf for a row without values (it can never be chosen)."""
    ok = ~np.isnan(a)
    count = ok.sum(axis=1)
    total = np.where(ok, a, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.inf)


def heldout_resid(x: FloatArray, tick: IntArray, slots: int, smooth: int) -> FloatArray:
    """Residuals of the ``slots`` profile on the cycles it was not learnt from (odd cycles from
    the even ones and vice versa); for ``slots == 1`` against the median, which the online
    offset absorbs anyway."""
    if slots == 1:
        return np.asarray(x - _profile(x, tick, 1, 0), dtype=np.float64)
    odd = (tick // slots) % 2 == 1
    resid = np.full_like(x, np.nan)
    for learn in (odd, ~odd):
        level = _profile(np.where(learn, x, np.nan), tick, slots, smooth)
        resid = np.where(learn, resid, x - level[:, tick % slots])
    return resid


def heldout_error(x: FloatArray, tick: IntArray, slots: int, smooth: int, adapt: int) -> FloatArray:
    """Mean absolute error per row of the ``slots`` profile on cycles it was not learnt from."""
    resid = heldout_resid(x, tick, slots, smooth)
    return _nanmean(np.abs(resid - block_center(resid, adapt)))


def causal_center(resid: FloatArray, adapt: int) -> FloatArray:
    """Each value's median of the ``adapt`` values before it, as predict's offset sees it from
    the context (NaN with fewer than ``MIN_POINTS`` of them). For speed the median is taken
    every ``adapt // 10`` values and held until the next: a lag of a step or two more, as if the
    offset were refreshed a little less often."""
    n, t = resid.shape
    every = max(1, adapt // 10)
    at = np.arange(0, t, every)
    out = np.full((n, at.size), np.nan)
    if not t:
        return np.full((n, 0), np.nan)
    before = np.concatenate([np.full((n, adapt), np.nan), resid[:, :-1]], axis=1)
    rows = max(1, 2**21 // max(1, at.size * adapt))  # bounds the (rows, windows, adapt) arrays
    for a in range(0, n, rows):
        win = np.lib.stride_tricks.sliding_window_view(before[a : a + rows], adapt, axis=1)[:, at]
        few = np.count_nonzero(~np.isnan(win), axis=2) < MIN_POINTS
        out[a : a + rows] = np.where(few, np.nan, nanmedian(win))
    return np.repeat(out, every, axis=1)[:, :t]


def choose_season(
    x: FloatArray, tick: IntArray, candidates: list[int], smooth: int | None, adapt: int
) -> IntArray:
    """Per row, the index in ``candidates`` (slot counts, ascending) of the season to use."""
    best = np.zeros(x.shape[0], dtype=np.int64)
    if len(candidates) == 1:
        return best
    valid = np.count_nonzero(~np.isnan(x), axis=1)
    err = heldout_error(x, tick, candidates[0], 0, adapt)
    for k, slots in enumerate(candidates[1:], start=1):
        if not np.any(valid >= MIN_CYCLES * slots):
            break  # no row has the data (ascending: nor for the next): skip the slot grids
        sm = default_smooth(slots) if smooth is None else smooth
        e = heldout_error(x, tick, slots, sm, adapt)
        better = (valid >= MIN_CYCLES * slots) & (e < MARGIN * err)
        best, err = np.where(better, k, best), np.where(better, e, err)
    return best


def quantiles(a: FloatArray, levels: FloatArray) -> FloatArray:
    """Linear-interpolated quantiles of each row ignoring NaN, shape ``(rows, levels)``."""
    s = np.sort(a, axis=1)
    last = np.maximum(np.count_nonzero(~np.isnan(s), axis=1) - 1, 0)[:, None]
    pos = levels[None, :] * last
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, last)
    below, above = np.take_along_axis(s, lo, axis=1), np.take_along_axis(s, hi, axis=1)
    return np.asarray(below + (pos - lo) * (above - below), dtype=np.float64)


def fit_season(
    x: FloatArray, tick: IntArray, slots: int, *, smooth: int, adapt: int, floor: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Level and spread per slot, and the upper/lower tails ``(rows, 2, levels)`` of the
    out-of-sample errors in units of the spread (see the module doc)."""
    level = _profile(x, tick, slots, smooth)
    slot = tick % slots
    resid = heldout_resid(x, tick, slots, smooth)
    err = resid - causal_center(resid, adapt)
    dev = np.abs(err)
    typical = nanmedian(dev)[:, None]
    if slots == 1:
        spread = typical
    else:
        cycles = int(tick.max() // slots - tick.min() // slots) + 1 if tick.size else 1
        pooled = max(smooth, -(-(SPREAD_POINTS // cycles - 1) // 2))
        per_slot = _profile(dev, tick, slots, pooled)
        spread = np.where(np.isnan(per_slot), typical, per_slot)
    spread = MAD_TO_SD * spread
    u = err / np.fmax(spread[:, slot], floor[:, None])
    tails = np.stack([_tail_quantiles(u), _tail_quantiles(-u)], axis=1)
    return level, spread, np.fmax(tails, 0.0)


def _tail_quantiles(u: FloatArray) -> FloatArray:
    """Each row's quantiles at ``TAIL_LEVELS`` without its incident (see the module doc)."""
    return quantiles(np.where(incident(u), np.nan, u), TAIL_LEVELS)


def incident(u: FloatArray) -> npt.NDArray[np.bool_]:
    """Per row, the excursion around its largest value: the run of values above
    ``max(INCIDENT_Z, peak * INCIDENT_SHARE)`` that holds the peak (gaps of up to ``INCIDENT``
    values bridged), widened by ``INCIDENT`` values either side. A level shift of a few minutes
    is one incident, not a few hundred normal errors."""
    n, t = u.shape
    if not t:
        return np.zeros((n, 0), dtype=bool)
    clean = np.where(np.isnan(u), -np.inf, u)
    peak = np.argmax(clean, axis=1)
    top = clean[np.arange(n), peak]
    above = clean > np.fmax(INCIDENT_Z, top * INCIDENT_SHARE)[:, None]
    above[np.arange(n), peak] = True
    near = _dilate(above, INCIDENT)
    bridged = above | (near & ~_dilate(~near, INCIDENT))  # a closing: short gaps filled
    start = bridged & ~np.concatenate([np.zeros((n, 1), dtype=bool), bridged[:, :-1]], axis=1)
    run = np.cumsum(start, axis=1)
    held = bridged & (run == run[np.arange(n), peak][:, None])
    return _dilate(held, INCIDENT)


def _dilate(mask: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.bool_]:
    """``mask`` widened by ``k`` values either side along each row."""
    out = mask.copy()
    for d in range(1, k + 1):
        out[:, d:] |= mask[:, :-d]
        out[:, :-d] |= mask[:, d:]
    return out


def tail_factor(tails: FloatArray, level: float) -> FloatArray:
    """Each row's quantile at one-sided ``level`` from its stored tails ``(rows, levels)``:
    linear in ``-log10(1 - p)`` between stored levels, extrapolated above them along the line
    through the two highest (an exponential tail), and at least the highest times the ratio of
    the normal quantiles (no thinner than a normal tail)."""
    x = -np.log10(1.0 - level)
    if x >= _TAIL_X[-1]:
        top, below = tails[:, -1], tails[:, -2]
        slope = (top - below) / (_TAIL_X[-1] - _TAIL_X[-2])
        normal = _NORMAL.inv_cdf(level) / _NORMAL.inv_cdf(float(TAIL_LEVELS[-1]))
        return np.asarray(np.fmax(top + slope * (x - _TAIL_X[-1]), top * normal), dtype=np.float64)
    j = max(int(np.searchsorted(_TAIL_X, x, side="right")) - 1, 0)
    w = min(max((x - _TAIL_X[j]) / (_TAIL_X[j + 1] - _TAIL_X[j]), 0.0), 1.0)
    return np.asarray(tails[:, j] + w * (tails[:, j + 1] - tails[:, j]), dtype=np.float64)


def band_floor(ref: FloatArray, spread_floor: float) -> FloatArray:
    """The smallest spread a series may have: relative to its typical level, never zero."""
    return np.asarray(spread_floor * np.abs(ref) + TINY, dtype=np.float64)
