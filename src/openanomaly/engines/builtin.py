"""The built-in models: numpy only, vectorized over the whole panel (no Python loop per series).

``profile`` (the default) learns, per series, a seasonal profile (median per season slot) and a
robust spread; at inference it follows level changes through the context it is handed, so it has
no mutable state and running the same window twice gives identical results. ``zscore`` and
``mad`` need no training: they summarise the recent context. An unfitted ``profile`` is the
cold-start model for series that appeared after the last fit.

Fitted state is saved with ``np.savez`` (arrays plus a JSON header), never pickle.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from openanomaly.core.durations import parse_duration
from openanomaly.core.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.robust import (
    MAD_TO_SD,
    MIN_POINTS,
    TINY,
    block_center,
    check_floor,
    check_int,
    circular_smooth,
    last_valid,
    nanmedian,
    recent_stats,
    z_score,
)
from openanomaly.errors import EngineError, UnknownModel

_FORMAT = 1  # version of the dumps() layout


class _Builtin:
    """What the built-in models share: the step, the band, serialization."""

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
        """The model as ``np.savez`` bytes: a JSON header plus the learned arrays."""
        meta = {"format": _FORMAT, "name": self.name, "step": self.step, **self.get_params()}
        buf = io.BytesIO()
        arrays: dict[str, Any] = {"meta": np.array(json.dumps(meta)), **self._arrays()}
        np.savez(buf, **arrays)
        return buf.getvalue()


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


class ProfileModel(_Builtin):
    """A seasonal profile with a robust spread, following the level through the context.

    ``fit`` learns per series and season slot (``(t // step) % season_steps``, from absolute
    timestamps) the median level and ``1.4826 * MAD`` of the residuals, both smoothed over
    neighbouring slots; a series with under two seasons of data (or ``season=None``) gets a flat
    level. ``predict`` adds to the profile the median of ``context - profile`` over the last
    ``adapt`` points; the half-width is ``z * max(spread, recent context scale, floor)``.
    Unfitted (or for a series it has not seen) it uses the context alone: median and MAD.

    Args:
        step: the grid spacing in seconds.
        season: the season as a duration (``"1d"``, seconds) or None; a multiple of ``step``.
        smooth: slots either side for circular smoothing (>= 0); default ``season_steps / 96``.
        adapt: how many recent context points the level offset is taken over (>= 1).
        spread_floor: smallest half-width relative to the series' typical level, in [0, 1).

    Attributes:
        keys_: the series identities seen by ``fit``.
        level_: ``(series, season_steps)`` profile level.
        spread_: ``(series, season_steps)`` robust standard deviation of the residuals.
        ref_: ``(series,)`` typical absolute level, the base of the relative floor.
        known_: ``(series,)`` which series had data to learn from.
    """

    name = "profile"
    params = ("season", "smooth", "adapt", "spread_floor")
    requires_fit = True
    keys_: tuple[str, ...]
    level_: FloatArray
    spread_: FloatArray
    ref_: FloatArray
    known_: npt.NDArray[np.bool_]

    def __init__(
        self,
        *,
        step: int,
        season: str | int | None = "1d",
        smooth: int | None = None,
        adapt: int = 30,
        spread_floor: float = 0.001,
    ) -> None:
        super().__init__(step=step, spread_floor=spread_floor)
        self.season, self.smooth = season, smooth
        self.adapt = check_int("adapt", adapt, 1)
        seconds = 0
        if season is not None:
            try:
                seconds = parse_duration(season)
            except ValueError as exc:
                raise EngineError(f"season: {exc}") from None
            if seconds % self.step:
                raise EngineError(f"season ({season}) must be a whole number of steps ({step}s)")
        self._slots = max(1, seconds // self.step)
        default = round(self._slots / 96) if self._slots > 1 else 0
        self._smooth = default if smooth is None else check_int("smooth", smooth, 0)
        self._index: dict[str, int] | None = None

    def get_params(self) -> dict[str, Any]:
        extra = {"season": self.season, "smooth": self.smooth, "adapt": self.adapt}
        return {**extra, **super().get_params()}

    def _slot(self, timestamps: IntArray) -> IntArray:
        return np.asarray(timestamps, dtype=np.int64) // self.step % self._slots

    def fit(self, history: SeriesBatch) -> Self:
        """Learn level and spread per series and slot from ``history``; returns self."""
        if len(set(history.keys)) != len(history):
            raise EngineError("history has duplicate series keys")
        tick = history.timestamps // self.step
        slot, cycle = tick % self._slots, tick // self._slots
        cycle = cycle - (cycle.min() if cycle.size else 0)
        n_cycles = int(cycle.max()) + 1 if cycle.size else 1
        n = len(history)
        self.level_, self.spread_ = np.empty((n, self._slots)), np.empty((n, self._slots))
        self.ref_ = np.empty(n)
        chunk = max(1, 2**22 // (self._slots * n_cycles))  # bounds the (rows, slots, cycles) grid
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            fitted = self._fit_rows(history.values[part], slot, cycle, n_cycles)
            self.level_[part], self.spread_[part], self.ref_[part] = fitted
        self.known_ = np.all(np.isfinite(self.level_), axis=1)
        self.keys_ = history.keys
        self._index = None
        return self

    def _fit_rows(
        self, x: FloatArray, slot: IntArray, cycle: IntArray, n_cycles: int
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        grid = np.full((x.shape[0], self._slots, n_cycles), np.nan)
        flat = nanmedian(x)
        seasonal = (np.count_nonzero(~np.isnan(x), axis=1) >= 2 * self._slots)[:, None]
        level = np.repeat(flat[:, None], self._slots, axis=1)
        if self._slots > 1:
            grid[:, slot, cycle] = x
            profile = circular_smooth(nanmedian(grid), self._smooth)
            level = np.where(seasonal & ~np.isnan(profile), profile, level)
        resid = x - level[:, slot]
        dev = np.abs(resid - block_center(resid, self.adapt))
        spread = np.repeat(nanmedian(dev)[:, None], self._slots, axis=1)
        if self._slots > 1:
            grid[:, slot, cycle] = dev
            per_slot = circular_smooth(nanmedian(grid), self._smooth)
            spread = np.where(seasonal & ~np.isnan(per_slot), per_slot, spread)
        return level, MAD_TO_SD * spread, np.abs(flat)

    def _rows(self, keys: Sequence[str]) -> IntArray:
        """Each key's fitted row, or -1 (unseen, or seen without data)."""
        if not self.__dict__.get("keys_"):
            return np.full(len(keys), -1, dtype=np.int64)
        if tuple(keys) == self.keys_:
            rows = np.arange(len(keys), dtype=np.int64)
        else:
            if self._index is None:
                self._index = {k: i for i, k in enumerate(self.keys_)}
            index = self._index
            rows = np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))
        return np.where((rows >= 0) & self.known_[np.maximum(rows, 0)], rows, -1)

    def known(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Which series have a fitted profile (others are forecast from their context alone)."""
        if not len(keys):
            return np.zeros(0, dtype=bool)
        return np.asarray(self._rows(keys) >= 0)

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """``profile + offset`` at ``timestamps`` with a ``z * scale`` band (see the class doc)."""
        z, ts = z_score(interval), np.asarray(timestamps, dtype=np.int64)
        rows = self._rows(context.keys) if len(context) else np.zeros(0, dtype=np.int64)
        known, safe = rows >= 0, np.maximum(rows, 0)
        recent = np.full((len(context), self.adapt), np.nan)
        r, c, pos = last_valid(context.values, self.adapt)
        recent[r, pos] = context.values[r, c]
        if known.any():
            base = self.level_[safe[r], self._slot(context.timestamps)[c]]
            recent[r, pos] -= np.where(known[r], base, 0.0)
        offset, scale, count = recent_stats(recent, robust=True)
        yhat = np.repeat(offset[:, None], ts.size, axis=1)
        spread = np.full_like(yhat, np.nan)
        ref = np.abs(offset)
        if known.any():
            cols = self._slot(ts)[None, :]
            level = self.level_[safe[:, None], cols]
            yhat = np.where(known[:, None], level + np.nan_to_num(offset)[:, None], yhat)
            spread = np.where(known[:, None], self.spread_[safe[:, None], cols], spread)
            ref = np.where(known, self.ref_[safe], ref)
        half = self._half(z, np.fmax(spread, scale[:, None]), ref[:, None])
        half = np.where((known | (count >= MIN_POINTS))[:, None], half, np.nan)
        return Forecast(yhat, yhat - half, yhat + half)

    def _arrays(self) -> dict[str, npt.NDArray[Any]]:
        if "keys_" not in self.__dict__:
            return {}
        keys = np.array(json.dumps(list(self.keys_)))
        return {
            "keys": keys,
            "level": self.level_,
            "spread": self.spread_,
            "ref": self.ref_,
            "known": self.known_,
        }

    def _restore(self, arrays: Mapping[str, npt.NDArray[Any]]) -> None:
        if "keys" in arrays:
            self.keys_ = tuple(json.loads(str(arrays["keys"])))
            self.level_, self.spread_ = arrays["level"], arrays["spread"]
            self.ref_, self.known_ = arrays["ref"], arrays["known"]


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
    unknown = sorted(set(params) - set(cls.params))
    if unknown:
        raise EngineError(
            f"builtin model {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(cls.params)}"
        )
    return cls(step=step, **params)


def loads(data: bytes, *, step: int) -> BuiltinModel:
    """A model saved by ``dumps``; refuses one trained at another step (the slots would shift)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        meta = json.loads(str(arrays.pop("meta")))
    except Exception as exc:  # np.load raises many kinds on garbage
        raise EngineError(f"not a builtin model artifact: {exc}") from None
    if meta.pop("format", None) != _FORMAT:
        raise EngineError("builtin model artifact has an unknown format version")
    if meta.pop("step", None) != step:
        raise EngineError(f"model was trained at another step than {step}s: retrain it")
    model = create(meta.pop("name"), meta, step=step)
    if isinstance(model, ProfileModel):
        model._restore(arrays)
    return model
