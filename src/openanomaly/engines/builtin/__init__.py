"""The built-in models: numpy only, vectorized over the whole panel (no Python loop per series).

``profile`` (the default) learns, per series, a seasonal profile (median per season slot, the
season chosen from the data), a robust spread and the calibrated tails of its errors; at inference
it follows level changes through the context it is handed, so it has no mutable state and running
the same window twice gives identical results. ``zscore`` and
``mad`` need no training: they summarise the recent context. An unfitted ``profile`` is the
cold-start model for series that appeared after the last fit.

Fitted state is saved with ``np.savez`` inside the versioned envelope of ``engines/base.py``,
never pickle.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from openanomaly.domain.durations import parse_duration
from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.base import (
    Engine,
    KeyIndex,
    check_floor,
    check_int,
    check_unique,
    unknown_params,
)
from openanomaly.engines.builtin import seasonal
from openanomaly.engines.kernels.robust import (
    MIN_POINTS,
    TINY,
    block_center,
    last_valid,
    nanmedian,
    recent_stats,
    z_score,
)
from openanomaly.errors import EngineError, UnknownModel

# Version of the dumps() layout and of what its arrays mean (3: envelope; 4: out-of-sample
# tails, anomaly-aware memory; 5: tails without the whole incident, spread over 60 errors).
_FORMAT = 5
_AUTO_SEASONS = (86400, 7 * 86400)  # what season="auto" chooses among, besides none
_Z_MEMORY = z_score(0.999)  # the interval at which the band covers recent deviations as they are
# The normal band widens when more than this many times the share ``1 - interval`` promises of
# the context (its last incident and the excursion under way left out) lies beyond it.
_SELF_SHARE = 10.0
_SELF_MARGIN = 1.1  # ...to cover that point with a margin: a value repeating it is not on the edge
# The regime check: when the last ``_REGIME_POINTS`` points hold ``_REGIME_MARGIN`` more values
# beyond the series' training quantile ``_REGIME_QUANTILE`` (one per side) than any as many
# consecutive training points did, the band on that side narrows to that quantile, by at most
# ``_REGIME_KEEP`` of its half-width (see ``_regime``).
_REGIME_POINTS = 48
_REGIME_QUANTILE = 0.95
_REGIME_MARGIN = 2
_REGIME_KEEP = 0.5


class _Builtin(Engine):
    """What the built-in models share: the step, the band, serialization."""

    ENGINE = "builtin"
    FORMAT = _FORMAT
    name: ClassVar[str]
    params: ClassVar[tuple[str, ...]] = ("spread_floor",)
    requires_fit: bool = False

    def __init__(self, *, step: int, spread_floor: float = 0.001) -> None:
        self.step = check_int("step", step, 1)
        self.spread_floor = check_floor(spread_floor)

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as given to ``__init__`` (without ``step``)."""
        return {"spread_floor": self.spread_floor}

    def _half(self, z: float, scale: FloatArray, ref: FloatArray) -> FloatArray:
        return z * np.fmax(scale, self.spread_floor * np.abs(ref) + TINY)

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        return {}

    def dumps(self) -> bytes:
        """The model: its name and parameters, and the learned arrays as ``np.savez`` bytes."""
        buf, arrays = io.BytesIO(), dict[str, Any](self._arrays())
        np.savez(buf, **arrays)
        return self.pack({"arrays.npz": buf.getvalue()}, name=self.name, params=self.get_params())


class _Recent(_Builtin):
    robust: ClassVar[bool]
    params = ("window", "spread_floor")

    def __init__(self, *, step: int, window: int = 30, spread_floor: float = 0.001) -> None:
        super().__init__(step=step, spread_floor=spread_floor)
        self.window = check_int("window", window, MIN_POINTS)

    def get_params(self) -> dict[str, Any]:
        return {"window": self.window, **super().get_params()}

    def fit(self, history: SeriesBatch) -> Self:
        """Nothing to learn: returns self."""
        return self

    def known(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Every series: the model needs only its context."""
        return np.ones(len(keys), dtype=bool)

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """The recent centre, flat over ``timestamps``, with ``z * scale`` either side."""
        z, h = z_score(interval), np.asarray(timestamps).size
        recent = np.full((len(context), self.window), np.nan)
        rows, cols, pos = last_valid(context.values, self.window)
        recent[rows, pos] = context.values[rows, cols]
        center, scale, count = recent_stats(recent, robust=self.robust)
        half = np.where(count >= MIN_POINTS, self._half(z, scale, center), np.nan)
        yhat = np.repeat(center[:, None], h, axis=1)
        half2 = np.repeat(half[:, None], h, axis=1)
        return Forecast(yhat, yhat - half2, yhat + half2)


class ZScoreModel(_Recent):
    """Mean and standard deviation of the last ``window`` context points (needs no fit).

    Args:
        step: the grid spacing in seconds.
        window: how many recent non-missing points to summarise (>= 3).
        spread_floor: smallest half-width relative to ``|mean|``, in [0, 1).
    """

    name = "zscore"
    robust = False


class MadModel(_Recent):
    """Median and scaled MAD of the last ``window`` context points (needs no fit).

    Args:
        step: the grid spacing in seconds.
        window: how many recent non-missing points to summarise (>= 3).
        spread_floor: smallest half-width relative to ``|median|``, in [0, 1).
    """

    name = "mad"
    robust = True


class ProfileModel(KeyIndex, _Builtin):
    """A seasonal profile with calibrated bands, following the level through the context.

    ``fit`` learns per series a level per season slot (``(t // step) % season_steps`` from
    absolute timestamps: the smoothed median over the cycles), the robust spread of the errors
    per slot, and the empirical tails of those errors in units of the spread, per side (see
    ``_seasonal``). With ``season="auto"`` each series gets the season (none, 1d, 1w) that
    predicts its own held-out cycles best, among those with two cycles of data.

    ``predict`` adds to the profile the median of ``context - profile`` over the last ``adapt``
    points. Each side of the *normal* band is the wider of: the calibrated tail at ``interval``
    times the slot's spread, and ``z`` times the recent scale (MAD of those ``adapt`` points),
    so that a burst of volatility widens it. A memory of the last ``memory`` points then widens
    it for what is not new (deviations as they are at interval 0.999, scaled like a normal band
    at others), and only for that: an anomaly does not teach it that anomalies are normal.

    * The excursion under way (the trailing run of context points beyond the normal band), once
      it has lasted ``onset`` points, is covered up to its largest deviation plus the normal
      band: a shift that lasts scores above 1 for its first ``onset`` points (enough for an
      alert rule's ``for:`` of two steps) and then again only if it grows, not at every step
      for as long as it lasts.
    * An excursion that recurs is covered the same way: the largest deviation before the one
      under way once the single largest one and its neighbours are left out (as the training
      tails leave out one incident). One spike, once over, does not widen the band: the same
      spike an hour later alerts again; a spike that keeps coming back stops alerting.

    Before the memory, the normal band is checked against the whole context it is handed:
    when more than ``_SELF_SHARE`` times the share ``1 - interval`` promises of the context's
    points before the memory's lie beyond it (each against its block's median; the largest
    incident left out), it widens to cover them (see ``_widening``). A series whose
    regime keeps crossing the band (bursts, a noisier day) stops alerting at each burst;
    NAB charges every flagged row outside a window. On clean data nothing changes.

    Last, the regime check (``_regime``): the band judges each value on its own, so a series
    that spends longer beyond its usual range than ever (more of the last ``_REGIME_POINTS``
    values above its training 95% quantile, or below its 5% one, than any as many training
    points held, by ``_REGIME_MARGIN``) may never cross it: busier bursts, a denser run of
    spikes, a long dip. At the point where the count first reaches that mark, the band on that
    side narrows to the quantile (keeping at least ``_REGIME_KEEP`` of its half-width), so
    that a value beyond it scores above 1, once: not again while the count stays there.

    Unfitted, or for a series it has not seen, it uses the context alone: median, ``z`` times
    the MAD, and the same memory.

    Args:
        step: the grid spacing in seconds.
        season: ``"auto"``, a duration (``"1d"``, seconds, a multiple of ``step``) or None.
        smooth: slots either side for circular smoothing (>= 0); default ``season_steps / 96``.
        adapt: recent context points the level offset and the recent scale use (>= 1).
        memory: recent context points the memory looks at (>= 0; 0: off, and the widening by
            the context's own scores too).
        onset: how long an excursion under way is judged against the band from before it
            began, in points (>= 0).
        spread_floor: smallest spread relative to the series' typical level, in [0, 1).

    Attributes:
        keys_: the series identities seen by ``fit``.
        level_: ``(series, width)`` profile level; a series with a shorter season is tiled.
        spread_: ``(series, width)`` robust standard deviation of the errors.
        tails_: ``(series, 2, levels)`` upper and lower error quantiles in units of spread.
        season_: ``(series,)`` chosen season in steps (1: no season).
        ref_: ``(series,)`` typical absolute level, the base of the relative floor.
        regime_: ``(series, 2, 2)`` per side (upper, lower) the training quantile and how many
            of ``_REGIME_POINTS`` values beyond it make a new regime (NaN: no check).
        known_: ``(series,)`` which series had data to learn from.
    """

    name = "profile"
    params = ("season", "smooth", "adapt", "memory", "onset", "spread_floor")
    requires_fit = True
    keys_: tuple[str, ...]
    level_: FloatArray
    spread_: FloatArray
    tails_: FloatArray
    season_: IntArray
    ref_: FloatArray
    regime_: FloatArray
    known_: npt.NDArray[np.bool_]

    def __init__(
        self,
        *,
        step: int,
        season: str | int | None = "auto",
        smooth: int | None = None,
        adapt: int = 30,
        memory: int = 90,
        onset: int = 2,
        spread_floor: float = 0.001,
    ) -> None:
        super().__init__(step=step, spread_floor=spread_floor)
        self.season, self.smooth = season, smooth
        self.adapt = check_int("adapt", adapt, 1)
        self.memory = check_int("memory", memory, 0)
        self.onset = check_int("onset", onset, 0)
        if smooth is not None:
            check_int("smooth", smooth, 0)
        self._candidates = self._seasons(season)
        self._index: dict[str, int] | None = None

    def _seasons(self, season: str | int | None) -> list[int]:
        """Candidate seasons in steps, ascending; 1 is "no season"."""
        if season is None:
            return [1]
        if season == "auto":
            whole = [s // self.step for s in _AUTO_SEASONS if s % self.step == 0]
            return [1, *(s for s in whole if s > 1)]
        try:
            seconds = parse_duration(season)
        except ValueError as exc:
            raise EngineError(f"season: {exc} (or use 'auto' or null)") from None
        if seconds % self.step:
            raise EngineError(f"season ({season}) must be a whole number of steps ({self.step}s)")
        return [max(1, seconds // self.step)]

    def get_params(self) -> dict[str, Any]:
        extra = {"season": self.season, "smooth": self.smooth, "adapt": self.adapt}
        return {**extra, "memory": self.memory, "onset": self.onset, **super().get_params()}

    def fit(self, history: SeriesBatch) -> Self:
        """Choose each series' season, learn level, spread and tails; returns self."""
        check_unique(history.keys)
        n, tick = len(history), history.timestamps // self.step
        self.ref_ = np.abs(nanmedian(history.values))
        self.regime_ = _regime_marks(history.values)
        floor = seasonal.band_floor(self.ref_, self.spread_floor)
        choice = np.zeros(n, dtype=np.int64)
        parts: list[tuple[IntArray, int, tuple[FloatArray, FloatArray, FloatArray]]] = []
        cycles = max(1, tick.size // max(self._candidates)) + 1
        chunk = max(1, 2**22 // (max(self._candidates) * cycles))  # bounds the slot grids
        for start in range(0, n, chunk):
            rows = np.arange(start, min(n, start + chunk))
            x = history.values[rows]
            pick = seasonal.choose_season(x, tick, self._candidates, self.smooth, self.adapt)
            choice[rows] = pick
            for k in np.unique(pick):
                sub = np.flatnonzero(pick == k)
                slots = self._candidates[k]
                sm = seasonal.default_smooth(slots) if self.smooth is None else self.smooth
                fitted = seasonal.fit_season(
                    x[sub], tick, slots, smooth=sm, adapt=self.adapt, floor=floor[rows[sub]]
                )
                parts.append((rows[sub], slots, fitted))
        self._assemble(n, parts)
        self.season_ = np.asarray(self._candidates, dtype=np.int64)[choice]
        self.keys_ = history.keys
        self._index = None
        return self

    def _assemble(
        self, n: int, parts: list[tuple[IntArray, int, tuple[FloatArray, FloatArray, FloatArray]]]
    ) -> None:
        """One array per attribute; a season shorter than the widest chosen one is tiled."""
        width = max((slots for _, slots, _ in parts), default=1)
        self.level_, self.spread_ = np.full((n, width), np.nan), np.full((n, width), np.nan)
        self.tails_ = np.full((n, 2, seasonal.TAIL_LEVELS.size), np.nan)
        for rows, slots, (level, spread, tails) in parts:
            self.level_[rows] = np.tile(level, width // slots)
            self.spread_[rows] = np.tile(spread, width // slots)
            self.tails_[rows] = tails
        self.known_ = np.all(np.isfinite(self.level_), axis=1)

    def _slot(self, timestamps: IntArray) -> IntArray:
        width = int(self.level_.shape[1])
        return np.asarray(np.asarray(timestamps, dtype=np.int64) // self.step % width)

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """``profile + offset`` at ``timestamps`` with the band of the class doc."""
        z, ts = z_score(interval), np.asarray(timestamps, dtype=np.int64)
        rows = self._rows(context.keys) if len(context) else np.zeros(0, dtype=np.int64)
        known, safe = rows >= 0, np.maximum(rows, 0)
        recent = self._recent(context, known, safe)
        offset, scale, count = recent_stats(recent[:, -self.adapt :], robust=True)
        yhat = np.repeat(offset[:, None], ts.size, axis=1)
        ref, spread = np.abs(offset), np.zeros_like(yhat)
        up = dn = np.full(len(context), z)
        if known.any():
            cols = self._slot(ts)[None, :]
            level = self.level_[safe[:, None], cols]
            yhat = np.where(known[:, None], level + np.nan_to_num(offset)[:, None], yhat)
            spread = np.where(known[:, None], self.spread_[safe[:, None], cols], spread)
            ref = np.where(known, self.ref_[safe], ref)
            one_sided = (1.0 + interval) / 2.0
            tails = self.tails_[safe]
            up = np.where(known, np.fmax(seasonal.tail_factor(tails[:, 0], one_sided), z), z)
            dn = np.where(known, np.fmax(seasonal.tail_factor(tails[:, 1], one_sided), z), z)
        base = np.fmax(spread, seasonal.band_floor(ref, self.spread_floor)[:, None])
        volatile = z * np.nan_to_num(scale)[:, None]
        wide = self._widening(
            context,
            known,
            safe,
            factors=(up, dn),
            ref=ref,
            volatile=volatile[:, 0],
            interval=interval,
        )
        normal_up = np.fmax(up[:, None] * base, volatile) * wide[:, None]
        normal_dn = np.fmax(dn[:, None] * base, volatile) * wide[:, None]
        # Recent deviations are rescaled like a normal band from the default interval, so that
        # the memory changes nothing for normal noise at any interval (the auto engine's 0.8).
        width = recent.shape[1]
        dev = (recent[:, width - self.memory :] - offset[:, None]) * (z / _Z_MEMORY)
        above = np.fmax(normal_up, _remembered(dev, normal_up, self.onset))
        below = np.fmax(normal_dn, _remembered(-dev, normal_dn, self.onset))
        if known.any():
            marks = np.where(known[:, None, None], self.regime_[safe], np.nan)
            above = _regime(context.values, marks[:, 0], yhat, above, side=1.0)
            below = _regime(context.values, marks[:, 1], yhat, below, side=-1.0)
        usable = (known | (count >= MIN_POINTS))[:, None]
        return Forecast(
            yhat, np.where(usable, yhat - below, np.nan), np.where(usable, yhat + above, np.nan)
        )

    def _widening(
        self,
        context: SeriesBatch,
        known: npt.NDArray[np.bool_],
        safe: IntArray,
        *,
        factors: tuple[FloatArray, FloatArray],
        ref: FloatArray,
        volatile: FloatArray,
        interval: float,
    ) -> FloatArray:
        """How much the normal band widens, per series: the context's own points are scored
        against it (each against the median of its block of ``adapt`` points, so that an old
        level shift is not an error now), and when more than ``_SELF_SHARE`` times the share
        the band promises lie beyond it, it widens to ``_SELF_MARGIN`` times the score of the
        point at that share. The last ``memory`` points (the memory covers those: a shift or a
        window under way is not taught to the band) and the rest's largest incident (its peak
        and ``INCIDENT`` points either side) are left out: one spike does not widen it, a
        regime that keeps crossing the band does."""
        n = len(context)
        share = _SELF_SHARE * (1.0 - interval)
        t = context.timestamps.size - self.memory  # the points before the memory's
        if t <= 0 or share >= 0.5 or not self.memory:
            return np.ones(n)  # nothing before the memory's points, or off
        resid = context.values[:, :t].copy()
        spread = np.zeros((n, t))
        if known.any():
            cols = self._slot(context.timestamps[:t])[None, :]
            resid -= np.where(known[:, None], self.level_[safe[:, None], cols], 0.0)
            spread = np.where(known[:, None], self.spread_[safe[:, None], cols], 0.0)
        dev = resid - block_center(resid, self.adapt)
        base = np.fmax(spread, seasonal.band_floor(ref, self.spread_floor)[:, None])
        up, dn = (np.fmax(f[:, None] * base, volatile[:, None]) for f in factors)
        with np.errstate(invalid="ignore"):
            u = np.where(dev >= 0, dev / up, -dev / dn)
        neg = np.where(np.isnan(u), np.inf, -u)  # ascending = descending scores, NaN last
        peak = np.argmin(neg, axis=1)
        near = np.abs(np.arange(t)[None, :] - peak[:, None]) <= seasonal.INCIDENT
        neg[near] = np.inf
        valid = np.count_nonzero(np.isfinite(neg), axis=1)
        rank = np.maximum(np.ceil(share * valid).astype(np.int64), 1)  # 1: the largest
        most = min(int(np.ceil(share * t)) + 1, t)  # no row's rank is above it
        top = np.sort(np.partition(neg, most - 1, axis=1)[:, :most], axis=1)
        at = -np.take_along_axis(top, np.minimum(rank, most)[:, None] - 1, axis=1)[:, 0]
        beyond = (valid >= MIN_POINTS) & np.isfinite(at) & (at > 1.0)
        return np.where(beyond, _SELF_MARGIN * at, 1.0)

    def _recent(
        self, context: SeriesBatch, known: npt.NDArray[np.bool_], safe: IntArray
    ) -> FloatArray:
        """The last ``max(adapt, memory)`` context values less the profile, left-padded."""
        width = max(self.adapt, self.memory)
        recent = np.full((len(context), width), np.nan)
        r, c, pos = last_valid(context.values, width)
        recent[r, pos] = context.values[r, c]
        if known.any():
            base = self.level_[safe[r], self._slot(context.timestamps)[c]]
            recent[r, pos] -= np.where(known[r], base, 0.0)
        return recent

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        if "keys_" not in self.__dict__:
            return {}
        keys = np.array(json.dumps(list(self.keys_)))
        return {
            "keys": keys,
            "level": self.level_,
            "spread": self.spread_,
            "tails": self.tails_,
            "season": self.season_,
            "ref": self.ref_,
            "regime": self.regime_,
            "known": self.known_,
        }

    def _restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        if "keys" in arrays:
            self.keys_ = tuple(json.loads(str(arrays["keys"])))
            self.level_, self.spread_ = arrays["level"], arrays["spread"]
            self.tails_, self.season_ = arrays["tails"], arrays["season"]
            self.ref_, self.known_ = arrays["ref"], arrays["known"]
            none = np.full((self.ref_.size, 2, 2), np.nan)  # saved before the regime check
            self.regime_ = arrays.get("regime", none)


def _regime_marks(values: FloatArray) -> FloatArray:
    """Per series and side (upper, lower): the training quantile (``_REGIME_QUANTILE``, and
    its mirror) and the most values beyond it that any ``_REGIME_POINTS`` consecutive training
    points held, plus ``_REGIME_MARGIN`` (NaN with fewer points or no value)."""
    n, t = values.shape
    marks = np.full((n, 2, 2), np.nan)
    seen = np.isfinite(values).any(axis=1)
    if t < _REGIME_POINTS or not seen.any():
        return marks
    x = values[seen]
    q = seasonal.quantiles(x, np.array([_REGIME_QUANTILE, 1.0 - _REGIME_QUANTILE]))
    for k, side in enumerate((1.0, -1.0)):
        marks[seen, k, 0] = q[:, k]
        counts = _window_counts(_beyond(x, q[:, k : k + 1], side))
        marks[seen, k, 1] = counts.max(axis=1) + _REGIME_MARGIN
    return marks


def _beyond(values: FloatArray, quantile: FloatArray, side: float) -> npt.NDArray[np.bool_]:
    """Which values lie beyond ``quantile`` (``(rows, 1)``) on ``side`` (1 above, -1 below);
    NaN is not beyond."""
    with np.errstate(invalid="ignore"):
        return np.asarray(side * (values - quantile) > 0)


def _window_counts(flags: npt.NDArray[np.bool_]) -> IntArray:
    """Per row, the count of flags in each window of ``_REGIME_POINTS`` consecutive values,
    ending at each position (shorter at the start)."""
    total = np.cumsum(flags, axis=1, dtype=np.int64)
    before = np.zeros_like(total)
    before[:, _REGIME_POINTS:] = total[:, :-_REGIME_POINTS]
    return np.asarray(total - before)


def _regime(
    values: FloatArray, marks: FloatArray, yhat: FloatArray, half: FloatArray, *, side: float
) -> FloatArray:
    """One side's half-width after the regime check (``side``: 1 upper, -1 lower; ``marks``:
    ``(series, 2)`` that side's quantile and count, NaN for none). The count of the context's
    last ``_REGIME_POINTS - 1`` values beyond the quantile, with the value to come, reaches the
    mark, and no window of the context's last ``_REGIME_POINTS`` did: that side's edge moves to
    the quantile, never closer to ``yhat`` than ``_REGIME_KEEP`` of its half-width."""
    quantile, mark = marks[:, :1], marks[:, 1]
    if values.shape[1] < _REGIME_POINTS - 1 or not np.isfinite(mark).any():
        return half
    beyond = _beyond(values[:, -(2 * _REGIME_POINTS - 1) :], quantile, side)
    counts = _window_counts(beyond)
    recent = beyond[:, -(_REGIME_POINTS - 1) :].sum(axis=1)
    with np.errstate(invalid="ignore"):  # a NaN mark: no check
        crossing = (recent + 1 >= mark) & (counts[:, -_REGIME_POINTS:].max(axis=1) < mark)
    edge = np.fmax(side * (quantile - yhat), _REGIME_KEEP * half)
    return np.where(crossing[:, None], np.fmin(half, edge), half)


def _remembered(dev: FloatArray, normal: FloatArray, onset: int) -> FloatArray:
    """How far the memory widens one side (``dev``: recent deviations on that side, ``normal``:
    the normal half-width at each forecast timestamp): up to the size of the excursion under
    way, once it has lasted ``onset`` points, or of one that recurs before it, plus the normal
    band, so that a value repeating it lies inside the band, not on its edge."""
    if not normal.shape[1]:
        return normal  # no timestamp to forecast: nothing to widen
    edge = normal[:, :1]
    gap = np.isnan(dev)
    run = np.cumprod((gap | (dev > edge))[:, ::-1], axis=1)[:, ::-1].astype(bool) & ~gap
    lasting = run & (np.count_nonzero(run, axis=1) >= onset)[:, None]
    ongoing = _largest(np.where(lasting, dev, np.nan))
    recurring = _recurring(np.where(run, np.nan, dev))
    size = np.fmax(ongoing, np.where(recurring > edge[:, 0], recurring, 0.0))[:, None]
    return np.where(size > 0, size + normal, 0.0)


def _recurring(dev: FloatArray) -> FloatArray:
    """Each row's largest deviation once its largest one and the ``INCIDENT`` points either
    side of it are left out."""
    if not dev.shape[1]:
        return np.zeros(dev.shape[0])
    t = np.arange(dev.shape[1])
    peak = np.argmax(np.where(np.isnan(dev), -np.inf, dev), axis=1)
    near = np.abs(t[None, :] - peak[:, None]) <= seasonal.INCIDENT
    return _largest(np.where(near, np.nan, dev))


def _largest(dev: FloatArray) -> FloatArray:
    """Each row's largest value (0 when none is positive or present)."""
    return np.asarray(np.where(np.isnan(dev), 0.0, np.fmax(dev, 0.0)).max(axis=1, initial=0.0))


BuiltinModel = ProfileModel | ZScoreModel | MadModel
DEFAULT_MODEL = "profile"

MODELS: dict[str, type[BuiltinModel]] = {
    "profile": ProfileModel,
    "zscore": ZScoreModel,
    "mad": MadModel,
}


def create(name: str, params: Mapping[str, Any], *, step: int) -> BuiltinModel:
    """A new built-in model; unknown names and parameters raise, naming the accepted ones."""
    cls = MODELS.get(name)
    if cls is None:
        raise UnknownModel("builtin model", name, list(MODELS))
    unknown_params(f"builtin model {name!r}", params, cls.params)
    return cls(step=step, **params)


def loads(data: bytes, *, step: int) -> BuiltinModel:
    """A model saved by ``dumps``; refuses one trained at another step (the slots would shift)."""
    head, members = _Builtin.unpack(data, step=step)
    try:
        with np.load(io.BytesIO(members["arrays.npz"]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as exc:  # np.load raises many kinds on garbage
        raise EngineError(f"not a builtin model artifact: {exc}") from None
    model = create(head["name"], head["params"], step=step)
    if isinstance(model, ProfileModel):
        model._restore(arrays)
    return model
