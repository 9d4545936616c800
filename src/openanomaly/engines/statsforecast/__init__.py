"""StatsForecast models (AutoETS, SeasonalNaive, AutoARIMA, AutoTheta, MSTL) fitted per series.

Training is expensive and rare; inference applies the fitted models to the fresh context
*without refitting*, through each model's ``forward(y, h, level)``: the parameters estimated at
fit are kept and only the filter is re-run over ``y`` (AutoETS, AutoARIMA's Kalman filter,
AutoTheta; MSTL re-decomposes ``y`` and runs its trend model's ``forward``). statsforecast
2.0 has no panel-level ``StatsForecast.forward``; its ``cross_validation(refit=False)`` drives the
same per-model ``forward``, which we call directly on each series' context. Two corrections:

* AutoETS (alone or as MSTL's trend model) starts ``forward`` from the state it had at the
  *start* of training, which is right only if the context starts at the same seasonal phase.
  We start it from the state at the *end* of training, advanced to the context's first
  timestamp (season rotated, level moved along the trend), so any context is phase-correct.
* SeasonalNaive has no ``forward``: it is the context's last season with the spread learned at
  fit.

Bands are never narrower than the model's own in-sample residual spread (Theta's and MSTL's
run narrow); the profile floor (``engines/floor.py``, at the model's season) widens them further:
the models' Gaussian intervals are far too narrow at 0.999 for spiky metrics. A series whose fit
fails falls back to SeasonalNaive, then Naive (``fallbacks_``); one whose ``forward`` fails
(context too short for the model...) gets no forecast here (NaN), hence the profile's under the
floor. ``statsforecast`` is imported lazily. Artifacts are pickles: load them only from a
trusted ArtifactStore.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Self

import numpy as np

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.base import (
    KeyIndex,
    PickledEngine,
    check_int,
    require,
    translated,
    unknown_params,
)
from openanomaly.engines.kernels.robust import TINY, z_score
from openanomaly.engines.kernels.seasons import season_steps
from openanomaly.engines.statsforecast.models import (
    Outcome,
    advance,
    clean,
    ets_of,
    fit_many,
    quiet,
    quiet_lock,
    resid_sigma,
    seasonal_naive,
    slim,
)
from openanomaly.errors import EngineError, UnknownModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = "AutoETS"
MODELS = ("AutoETS", "SeasonalNaive", "AutoARIMA", "AutoTheta", "MSTL")
_MIN_TRAIN = 10  # points; seasonal models need two seasons as well
_MIN_CONTEXT = 3  # points a forward() needs at least
_ETS_MAX_SEASON = 24  # statsforecast's ETS cannot fit longer seasons (as R's forecast::ets)


LIBRARY = ("statsforecast.models",)
"""What ``engines.preload`` imports: about 9 CPU-seconds (scipy, statsmodels, numba)."""


def _import_models() -> Any:
    return require("statsforecast", *LIBRARY)[0]


@dataclass(frozen=True)
class _Fitted:
    model: Any  # a fitted statsforecast model, bulky arrays dropped
    next_t: int  # the timestamp right after the last training point
    state: FloatArray | None  # AutoETS state at the end of training, to warm-start forward
    sigma: float  # robust sd of the in-sample one-step residuals: the band's floor


class StatsForecastEngine(KeyIndex, PickledEngine):
    """A StatsForecast model per series, applied to new data without refitting.

    Args:
        name: one of ``MODELS`` (default AutoETS).
        params: passed to the model constructor; ``season_length`` may be a duration string
            (``"1d"``), converted with ``step``; for MSTL it may be a list.
        step: the grid spacing in seconds.
        n_jobs: processes for fitting (>= 1; 1 fits in this process).

    Attributes:
        keys_: the series identities seen by ``fit``.
        models_: per series, the fitted model (with its end time and state), or None when the
            series had too little data (``known`` is False for it).
        fallbacks_: series key -> the model used instead of ``name`` because its fit failed.
        known_: ``(series,)`` which series have a model.
    """

    ENGINE = "statsforecast"
    FORMAT = 2  # 2: the envelope, no profile inside (the floor wraps the engine)
    keys_: tuple[str, ...]
    models_: list[_Fitted | None]
    fallbacks_: dict[str, str]

    def __init__(
        self,
        name: str = "AutoETS",
        params: Mapping[str, Any] | None = None,
        *,
        step: int,
        n_jobs: int = 1,
    ) -> None:
        if name not in MODELS:
            raise UnknownModel("statsforecast model", name, list(MODELS))
        check_int("step", step, 1)
        check_int("n_jobs", n_jobs, 1)
        self.name, self.params, self.step, self.n_jobs = name, dict(params or {}), step, n_jobs
        self._proto = self._build(name, self.params)
        seasons = self._kwargs.get("season_length", 1)
        self._seasons = [int(s) for s in (seasons if isinstance(seasons, list) else [seasons])]
        short = min(self._seasons)
        self._max_gap = min(60, short) if short > 1 else 60
        self._min_train = max(_MIN_TRAIN, 2 * max(self._seasons))

    @property
    def floor_season(self) -> int | None:
        """The profile floor's season: the model's shortest one (seconds), if any."""
        short = min(self._seasons)
        return short * self.step if short > 1 else None

    def _build(self, name: str, params: Mapping[str, Any]) -> Any:
        cls = getattr(_import_models(), name)
        signature = inspect.signature(cls.__init__).parameters
        accepted = [p for p in signature if p not in ("self", "alias", "prediction_intervals")]
        unknown_params(name, params, accepted)
        kwargs = dict(params)
        if "season_length" in kwargs:
            value = kwargs["season_length"]
            many = (
                [season_steps("season_length", v, self.step) for v in value]
                if isinstance(value, list | tuple)
                else None
            )
            if many is not None and name != "MSTL":
                raise EngineError(f"{name}: season_length must be one value, not a list")
            kwargs["season_length"] = many or season_steps("season_length", value, self.step)
        missing = [
            p
            for p, spec in signature.items()
            if p != "self" and spec.default is inspect.Parameter.empty and p not in kwargs
        ]
        if missing:
            raise EngineError(f"{name} needs parameter {', '.join(map(repr, missing))}")
        seasonal = str(kwargs.get("model", "ZZZ"))[2:3] != "N"
        if name == "AutoETS" and seasonal and kwargs.get("season_length", 1) > _ETS_MAX_SEASON:
            raise EngineError(
                f"AutoETS: season_length must be <= {_ETS_MAX_SEASON} steps for a seasonal ETS "
                f"(got {kwargs['season_length']}); use MSTL for longer seasons"
            )
        self._kwargs = kwargs
        try:
            return cls(**kwargs)
        except Exception as exc:
            raise EngineError(f"{name}: bad parameters {params}: {exc}") from None

    def fit(self, history: SeriesBatch) -> Self:
        """Fit a model per series of ``history``; returns self."""
        sfm = _import_models()
        cleaned = [clean(row, self._max_gap) for row in history.values]
        jobs = [i for i, c in enumerate(cleaned) if c is not None and c[0].size >= self._min_train]
        with translated(f"{self.name}: fit"):
            results = self._fit_all([cleaned[i][0] for i in jobs])  # type: ignore[index]
        self.models_, self.fallbacks_ = [None] * len(history), {}
        for i, (model, fallback, _) in zip(jobs, results, strict=True):
            if model is None:
                continue
            if fallback is not None:
                self.fallbacks_[history.keys[i]] = fallback
            ets = ets_of(model, sfm)
            state = None if ets is None else np.array(ets.model_["states"][-1], dtype=np.float64)
            y, last = cleaned[i]  # type: ignore[misc]
            sigma = resid_sigma(model, y)
            slim(model)
            end = int(history.timestamps[last]) + self.step
            self.models_[i] = _Fitted(model, end, state, sigma)
        self._check_failures(results, [bool(np.ptp(cleaned[i][0]) > 0) for i in jobs])  # type: ignore[index]
        self._set_keys(history.keys, np.array([m is not None for m in self.models_], dtype=bool))
        return self

    def _check_failures(self, results: list[Outcome], varying: list[bool]) -> None:
        """Refuse a model that failed on every non-constant series (a bad parameter, surely);
        otherwise say in one line how many series fell back."""
        errors = [e for _, _, e in results if e is not None]
        tried = [e for (_, _, e), v in zip(results, varying, strict=True) if v]
        if tried and all(e is not None for e in tried):
            raise EngineError(f"{self.name}{self.params} failed on every series: {tried[0]}")
        if errors:
            log.warning(
                "%s failed on %d of %d series, which use %s (first error: %s)",
                self.name,
                len(errors),
                len(results),
                "fallbacks_",
                errors[0],
            )

    def _fit_all(self, ys: list[FloatArray]) -> list[Outcome]:
        sfm = _import_models()
        chain = [sfm.Naive()]
        if max(self._seasons) > 1 and self.name != "SeasonalNaive":
            chain.insert(0, sfm.SeasonalNaive(season_length=max(self._seasons)))
        workers = min(self.n_jobs, len(ys))
        if workers <= 1:
            with quiet_lock:
                return fit_many(self._proto, chain, ys)
        parts = [ys[w::workers] for w in range(workers)]
        with ProcessPoolExecutor(workers) as pool:
            done = list(pool.map(fit_many, [self._proto] * workers, [chain] * workers, parts))
        out: list[Outcome] = [(None, None, None)] * len(ys)
        for w, part in enumerate(done):
            out[w::workers] = part
        return out

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """Apply each fitted model to its context with ``forward``, no refit (see module doc);
        NaN for the series without a model or whose forward fails."""
        self.check_fitted("models_")
        ts = np.asarray(timestamps, dtype=np.int64)
        out = Forecast(*(np.full((len(context), ts.size), np.nan) for _ in range(3)))
        if not ts.size:
            return out
        sfm, failed = _import_models(), 0
        with quiet_lock, quiet():
            for i, row in enumerate(self._rows(context.keys)):
                fitted = self.models_[row] if row >= 0 else None
                if fitted is None:
                    continue
                done = self._forward(fitted, context, i, ts, interval=interval, sfm=sfm)
                if done is None:
                    failed += 1
                else:
                    out.yhat[i], out.lower[i], out.upper[i] = done
        if failed:
            log.debug("%s: forward failed on %d of %d series", self.name, failed, len(context))
        return out

    def _forward(
        self,
        fitted: _Fitted,
        context: SeriesBatch,
        row: int,
        ts: IntArray,
        *,
        interval: float,
        sfm: Any,
    ) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        cleaned = clean(context.values[row], self._max_gap)
        if cleaned is None or cleaned[0].size < _MIN_CONTEXT:
            return None
        y, last = cleaned
        ahead = (ts - context.timestamps[last]) // self.step
        if ahead.size == 0 or ahead.min() < 1:
            return None
        h, model = int(ahead.max()), fitted.model
        gap = int(context.timestamps[last + 1 - y.size] - fitted.next_t) // self.step
        try:
            if fitted.state is not None:
                ets = ets_of(model, sfm)
                warm = advance(ets, fitted.state, gap)
                if ets is model:
                    model = warm
                else:
                    model = model.new()
                    model.trend_forecaster = warm
            if isinstance(model, sfm.SeasonalNaive):
                mean, lo, hi = seasonal_naive(model, y, h, interval)
            else:
                res = model.forward(y=y, h=h, level=[round(interval * 100, 10)])
                lo_key = next(k for k in res if k.startswith("lo-"))
                mean, lo, hi = res["mean"], res[lo_key], res["hi-" + lo_key[3:]]
        except Exception:
            return None
        pick = ahead - 1
        mean, lo, hi = (np.asarray(a, dtype=np.float64)[pick] for a in (mean, lo, hi))
        if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            return None
        # Some library bands (Theta, MSTL) run narrower than the model's own in-sample errors;
        # never go below those, nor to zero width for a constant series.
        floor = np.maximum(z_score(interval) * fitted.sigma, TINY * np.maximum(1.0, np.abs(mean)))
        return mean, np.minimum(lo, mean - floor), np.maximum(hi, mean + floor)


def create(name: str, params: Mapping[str, Any], *, step: int) -> StatsForecastEngine:
    """A new engine; ``params`` may hold the engine option ``n_jobs``, the rest go to the model."""
    rest = dict(params)
    n_jobs = rest.pop("n_jobs", 1)
    return StatsForecastEngine(name, rest, step=step, n_jobs=n_jobs)


def loads(data: bytes, *, step: int) -> StatsForecastEngine:
    """An engine saved by ``dumps``; refuses one trained at another step."""
    _import_models()
    return StatsForecastEngine.loads(data, step=step)
