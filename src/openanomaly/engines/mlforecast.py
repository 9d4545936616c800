"""MLForecast with a LightGBM regressor: one global model over the whole panel.

**One model for all series.** MLForecast trains a single LightGBM regressor on every series of
the panel, so series share what they have in common and a new context needs no refit. Each
series is first scaled by its own median and robust spread (learned at fit), so that series of
any level and unit can share the model. Features, built by mlforecast: ``lags`` (default 1, 2, 3
and the season), rolling means of lag 1 over ``rolling`` steps (default 4 and the season) and,
with ``calendar``, the hour of the day and the day of the week (UTC) of each timestamp.

**Applied without refit.** ``predict`` hands mlforecast the last points of each context
(``MLForecast.predict(h, new_df=...)``), which builds the features from them and runs the fitted
model recursively over the horizon.

**Conformal bands calibrated at fit.** mlforecast's ``PredictionIntervals`` cannot band new
contexts: ``predict(new_df=..., level=...)`` raises "Prediction intervals are not supported in
transfer learning" (mlforecast 1.0; 1.1 needs pandas < 3). So ``fit`` computes the conformity
scores that ``PredictionIntervals(n_windows, h)`` computes: the out-of-sample errors of a model
trained without the last ``n_windows * h`` points, forecasting ``n_windows`` windows of ``h`` steps
from the true history. It keeps per series the RMS of its errors (``sigma_``), per step ahead a
factor (``horizon_scale_``) and the pooled standardized errors (``scores_``), whose split-conformal
quantile ``q`` at the asked interval gives ``yhat ± q * horizon_scale_[k] * sigma_[i]``. Pooling
across series is what makes a 0.999 band estimable (it needs ~1000 scores; with fewer the tail is
extrapolated, see ``conformal_quantile``). Steps beyond ``h`` get step ``h``'s width.

**Missing data.** Gaps of at most ``max_gap`` points are interpolated; a longer gap splits a
series into pieces, each trained as a series of its own. Interpolated points are never training
targets (weight 0) nor calibration errors.

**Limits.** Trees do not extrapolate: a series that leaves the range it had in training is
forecast at the edge of that range (high scores) until the next training. A context shorter
than the largest lag or rolling window, or ending more than ``4 * h`` steps before the forecast,
gets no forecast here (NaN), hence the profile's under the floor (``engines/floor.py``, which
also widens each side of the conformal band to the profile's: ``n_windows * h`` errors, 96 by
default, are far too few for a 0.999 band, which then flagged dozens of normal points per 1,000
on the NAB sample). Each ``predict`` builds a
pandas frame of ``series x max(lags, rolling)`` rows, so its cost grows with the season.

Artifacts are pickles (they hold the LightGBM booster) in the versioned envelope: load them only
from a trusted ArtifactStore.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt
import pandas as pd

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.base import (
    PickledEngine,
    check_floor,
    check_int,
    check_number,
    check_unique,
    require,
    translated,
    unknown_params,
)
from openanomaly.engines.kernels.panel import (
    ScaledPanel,
    conformal_quantile,
    interpolate_short_gaps,
    last_run,
    runs,
    spans,
)
from openanomaly.engines.kernels.robust import TINY, z_score
from openanomaly.engines.kernels.seasons import season_steps
from openanomaly.errors import EngineError, NotEnoughHistory, UnknownModel

DEFAULT_MODEL = "LightGBM"
MODELS = ("LightGBM",)
PARAMS = (
    "season",
    "lags",
    "rolling",
    "calendar",
    "n_estimators",
    "num_leaves",
    "learning_rate",
    "min_child_samples",
    "n_windows",
    "h",
    "max_gap",
    "n_jobs",
    "spread_floor",
)
_MIN_ERRORS = 5  # calibration errors a series needs for its own sigma (else the panel median)
_MAX_AHEAD = 4  # forecasts further than this many calibrated horizons fall back to the profile


def _import() -> tuple[Any, Any, Any]:
    lightgbm, mlforecast, transforms = require(
        "mlforecast", "lightgbm", "mlforecast", "mlforecast.lag_transforms"
    )
    return lightgbm, mlforecast.MLForecast, transforms.RollingMean


def hour_of_day(dates: pd.DatetimeIndex) -> FloatArray:
    """Calendar feature: the hour of the day (UTC), minutes as a fraction."""
    return np.asarray(dates.hour + dates.minute / 60.0, dtype=np.float64)


def day_of_week(dates: pd.DatetimeIndex) -> IntArray:
    """Calendar feature: the day of the week (UTC), Monday = 0."""
    return np.asarray(dates.day_of_week, dtype=np.int64)


def _int_list(name: str, value: object, low: int, *, empty: bool = False) -> list[int]:
    items = list(value) if isinstance(value, list | tuple) else None
    if (
        items is None
        or (not items and not empty)
        or any(isinstance(v, bool) or not isinstance(v, int) or v < low for v in items)
    ):
        raise EngineError(f"{name} must be a list of integers >= {low}, got {value!r}")
    return sorted(set(items))


class MLForecastEngine(ScaledPanel, PickledEngine):
    """A global LightGBM model over the panel with conformal bands (see the module doc).

    Args:
        name: the model, ``LightGBM``.
        step: the grid spacing in seconds.
        season: the season as a duration (``"1d"``) or None; a whole number of steps.
        lags: lags of the target, integers >= 1 (default 1, 2, 3 and the season).
        rolling: windows (>= 2) of rolling means of lag 1 (default 4 and the season).
        calendar: add hour-of-day and day-of-week features.
        n_estimators: boosting rounds, in [1, 10000].
        num_leaves: leaves per tree, in [2, 131072].
        learning_rate: in (0, 1].
        min_child_samples: smallest leaf, >= 1.
        n_windows: calibration windows, >= 2 (as mlforecast's ``PredictionIntervals``).
        h: steps per calibration window, >= 1: the horizon whose error growth is measured.
        max_gap: longest gap (in steps) interpolated, >= 0 (default the season, at most 60).
        n_jobs: threads for LightGBM and the features, >= 1.
        spread_floor: smallest half-width relative to ``|median|`` of the series, in [0, 1).

    Attributes:
        keys_: the series identities seen by ``fit``.
        model_: the fitted ``MLForecast``.
        center_: ``(series,)`` median of each series, the scaling's centre.
        scale_: ``(series,)`` robust spread of each series, the scaling's unit.
        sigma_: ``(series,)`` RMS of the calibration errors, in scaled units.
        horizon_scale_: ``(h,)`` error growth with the steps ahead.
        scores_: pooled standardized calibration errors, sorted.
        known_: ``(series,)`` which series had enough consecutive points to learn from.
    """

    ENGINE = "mlforecast"
    FORMAT = 2  # 2: the envelope, no profile inside (the floor wraps the engine)
    keys_: tuple[str, ...]
    model_: Any
    center_: FloatArray
    scale_: FloatArray
    sigma_: FloatArray
    horizon_scale_: FloatArray
    scores_: FloatArray
    known_: npt.NDArray[np.bool_]

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        *,
        step: int,
        season: str | int | None = "1d",
        lags: Sequence[int] | None = None,
        rolling: Sequence[int] | None = None,
        calendar: bool = True,
        n_estimators: int = 150,
        num_leaves: int = 31,
        learning_rate: float = 0.05,
        min_child_samples: int = 20,
        n_windows: int = 8,
        h: int = 12,
        max_gap: int | None = None,
        n_jobs: int = 1,
        spread_floor: float = 0.001,
    ) -> None:
        if name not in MODELS:
            raise UnknownModel("mlforecast model", name, list(MODELS))
        self.name, self.step = name, check_int("step", step, 1)
        self.season = season
        self._season = 1 if season is None else season_steps("season", season, self.step)
        extra = [self._season] if self._season > 3 else []
        self.lags = _int_list("lags", [1, 2, 3, *extra] if lags is None else lags, 1)
        extra = [self._season] if self._season > 4 else []
        rolling = [4, *extra] if rolling is None else rolling
        self.rolling = _int_list("rolling", rolling, 2, empty=True)
        if not isinstance(calendar, bool):
            raise EngineError(f"calendar must be true or false, got {calendar!r}")
        self.calendar = calendar
        self.n_estimators = check_int("n_estimators", n_estimators, 1, 10_000)
        self.num_leaves = check_int("num_leaves", num_leaves, 2, 131_072)
        self.learning_rate = check_number(
            "learning_rate", learning_rate, 0, 1, open_low=True, open_high=False
        )
        self.min_child_samples = check_int("min_child_samples", min_child_samples, 1)
        self.n_windows = check_int("n_windows", n_windows, 2)
        self.h = check_int("h", h, 1)
        default_gap = min(60, self._season) if self._season > 1 else 60
        self.max_gap = check_int("max_gap", default_gap if max_gap is None else max_gap, 0)
        self.n_jobs = check_int("n_jobs", n_jobs, 1)
        self.spread_floor = check_floor(spread_floor)
        self._need = max([*self.lags, *self.rolling])  # context points a forecast needs

    @property
    def floor_season(self) -> int | None:
        """The profile floor's season: the model's (seconds), if any."""
        return self._season * self.step if self._season > 1 else None

    def _forecaster(self) -> Any:
        lgb, mlforecast, rolling_mean = _import()
        regressor = lgb.LGBMRegressor(
            n_estimators=self.n_estimators,
            num_leaves=self.num_leaves,
            learning_rate=self.learning_rate,
            min_child_samples=self.min_child_samples,
            n_jobs=self.n_jobs,
            random_state=0,
            verbosity=-1,
        )
        transforms = [rolling_mean(window_size=w) for w in self.rolling]
        return mlforecast(
            models={"lgb": regressor},
            freq=pd.offsets.Second(self.step),
            lags=self.lags,
            lag_transforms={1: transforms} if transforms else None,
            date_features=[hour_of_day, day_of_week] if self.calendar else None,
            num_threads=self.n_jobs,
        )

    def _fit_model(self, norm: FloatArray, ts: IntArray) -> Any:
        """A forecaster trained on every run of ``norm`` (gaps filled) longer than the lags."""
        filled = interpolate_short_gaps(norm, self.max_gap)
        row, start, length = runs(filled)
        keep = length > self._need
        if not keep.any():
            raise NotEnoughHistory(
                f"mlforecast: no series has more than {self._need} consecutive points (the "
                "largest lag or rolling window) to learn from: lengthen the training window "
                "or lower lags, rolling, season"
            )
        owner, cols = spans(start[keep], length[keep])
        rows = row[keep][owner]
        frame = pd.DataFrame(
            {
                "unique_id": owner,
                "ds": pd.to_datetime(ts[cols], unit="s"),
                "y": filled[rows, cols],
                "w": (~np.isnan(norm[rows, cols])).astype(np.float64),
            }
        )
        return self._forecaster().fit(frame, static_features=[], keep_last_n=1, weight_col="w")

    def _forecast(
        self,
        model: Any,
        filled: FloatArray,
        ts: IntArray,
        *,
        span: tuple[IntArray, IntArray],
        h: int,
    ) -> FloatArray:
        """``h`` recursive steps after each row's ``(start, length)`` span (NaN for length 0)."""
        start, length = span
        rows = np.flatnonzero(length > 0)
        out = np.full((filled.shape[0], h), np.nan)
        if rows.size:
            owner, cols = spans(start[rows], length[rows])
            frame = pd.DataFrame(
                {
                    "unique_id": owner,
                    "ds": pd.to_datetime(ts[cols], unit="s"),
                    "y": filled[rows[owner], cols],
                }
            )
            pred = model.predict(h, new_df=frame)["lgb"].to_numpy(dtype=np.float64)
            out[rows] = pred.reshape(rows.size, h)
        return out

    def _span(self, filled: FloatArray) -> tuple[IntArray, IntArray]:
        start, length = last_run(filled, self._need)
        return start, np.where(length >= self._need, length, 0)

    def fit(self, history: SeriesBatch) -> Self:
        """Train the global model and calibrate its bands on ``history``; returns self."""
        _import()
        check_unique(history.keys)
        with translated(f"mlforecast {self.name}: fit"):
            return self._fit(history)

    def _fit(self, history: SeriesBatch) -> Self:
        n_cal, total = self.n_windows * self.h, history.timestamps.size
        if total - n_cal <= self._need:
            raise NotEnoughHistory(
                f"mlforecast: {total} points of history leave none to learn from after the "
                f"{n_cal} calibration points (n_windows * h) and {self._need} lags: lengthen "
                "the training window or lower n_windows, h, lags"
            )
        norm = self._learn_scale(history)
        ts, cut = history.timestamps, total - n_cal
        calib = self._fit_model(norm[:, :cut], ts[:cut])
        errors = np.full((len(history), self.n_windows, self.h), np.nan)
        for w in range(self.n_windows):
            end = cut + w * self.h  # the context is the first `end` columns
            filled = interpolate_short_gaps(norm[:, :end], self.max_gap)
            start, length = self._span(filled)
            length = np.where(start + length == end, length, 0)  # observed at the cutoff
            yhat = self._forecast(calib, filled, ts[:end], span=(start, length), h=self.h)
            errors[:, w] = norm[:, end : end + self.h] - yhat
        self.model_ = self._fit_model(norm, ts)
        self._calibrate(errors)
        row, _, length = runs(interpolate_short_gaps(norm, self.max_gap))
        known = np.zeros(len(history), dtype=bool)
        known[row[length > self._need]] = True
        self._set_keys(history.keys, known)
        return self

    def _calibrate(self, errors: FloatArray) -> None:
        """Per-series sigma, per-step growth and pooled scores from ``(series, window, step)``."""
        count = np.count_nonzero(~np.isnan(errors), axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            sigma = np.sqrt(np.nansum(errors**2, axis=(1, 2)) / count)
        own = (count >= _MIN_ERRORS) & (sigma > 0)
        if not own.any():
            raise NotEnoughHistory(
                "mlforecast: no series has calibration errors: the history must cover the last "
                "n_windows * h steps"
            )
        self.sigma_ = np.where(own, sigma, float(np.median(sigma[own])))
        std = errors[own] / self.sigma_[own, None, None]
        # A step without any error (a short calibration window) gets NaN, then the growth below.
        seen = np.count_nonzero(~np.isnan(std), axis=(0, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            per_step = np.sqrt(np.nansum(std**2, axis=(0, 1)) / seen)
        per_step = np.where(np.isfinite(per_step) & (per_step > 0), per_step, np.nan)
        per_step = np.fmax.accumulate(np.nan_to_num(per_step, nan=0.0))
        self.horizon_scale_ = np.where(per_step > 0, per_step, 1.0)
        scores = np.abs(std / self.horizon_scale_[None, None, :])
        self.scores_ = np.sort(scores[np.isfinite(scores)])

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """Forecast ``timestamps`` from each series' context, without refit (see the module doc);
        NaN for the series it cannot forecast."""
        self.check_fitted("model_")
        z_score(interval)  # validates it
        scaled = self._scaled(context, timestamps)
        out, ts, sel, r, filled = scaled.out, scaled.ts, scaled.sel, scaled.rows, scaled.filled
        if not sel.size:
            return out
        start, length = self._span(filled)
        last = context.timestamps[np.maximum(start + length - 1, 0)]
        ahead = (ts[None, :] - last[:, None]) // self.step
        ok = (length > 0) & (ahead.min(axis=1) >= 1) & (ahead.max(axis=1) <= _MAX_AHEAD * self.h)
        if not ok.any():
            return out
        length = np.where(ok, length, 0)
        h = int(ahead[ok].max())
        with translated(f"mlforecast {self.name}: predict"):
            path = self._forecast(
                self.model_, filled, context.timestamps, span=(start, length), h=h
            )
        step_ahead = np.clip(ahead, 1, path.shape[1])
        mean = np.take_along_axis(path, step_ahead - 1, axis=1)
        width = self.horizon_scale_[np.minimum(step_ahead, self.h) - 1]
        q = conformal_quantile(self.scores_, interval)
        half = q * width * (self.sigma_[r] * self.scale_[r])[:, None]
        half = np.fmax(half, self.spread_floor * np.abs(self.center_[r])[:, None] + TINY)
        center, scale = self.center_[r, None], self.scale_[r, None]
        pick, y = sel[ok], (center + scale * mean)[ok]
        out.yhat[pick], out.lower[pick], out.upper[pick] = y, y - half[ok], y + half[ok]
        return out


def create(name: str, params: Mapping[str, Any], *, step: int) -> MLForecastEngine:
    """A new engine; unknown parameters raise, naming the accepted ones."""
    unknown_params(f"mlforecast model {name!r}", params, PARAMS)
    _import()
    return MLForecastEngine(name, step=step, **params)


def loads(data: bytes, *, step: int) -> MLForecastEngine:
    """An engine saved by ``dumps``; refuses one trained at another step."""
    _import()
    return MLForecastEngine.loads(data, step=step)
