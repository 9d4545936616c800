"""Darts forecasting models (Unit8), any class of ``darts.models`` by name.

Darts has two kinds of model, used differently:

* **Global** models (``LinearRegressionModel``, ``LightGBMModel``, ``NBEATSModel``, every torch
  model...) learn one model from many series: ``fit`` trains on the whole history panel and
  ``predict`` applies it to each series' fresh context (``predict(n, series=contexts)``), no
  refit. ``requires_fit`` is True.
* **Local** models (``ExponentialSmoothing``, ``NaiveSeasonal``, ``ARIMA``, ``Theta``...) are one
  fit per series and cannot be applied to other data, so they are fitted on each series' context
  at every ``predict``, like a zero-shot model: ``requires_fit`` is False and nothing is saved.
  This costs a fit per series per inference (ExponentialSmoothing: about half a second), which
  is why the default is a global model: ``LinearRegressionModel`` on the last hour of lags,
  trained by the Trainer, applied in about a millisecond.

A regression model (``LinearRegressionModel``, ``LightGBMModel``...) given no lags of any kind
gets the last hour of steps as lags (at least 2).

Bands: a model that forecasts probabilistically (``ExponentialSmoothing``, a regression model
with ``likelihood``, a torch model with one) draws ``num_samples`` paths, seeded so that the same
window gives the same forecast; the band is read off the sample quantiles up to 0.05/0.95 and
extrapolated beyond under a normal shape (``_bands``). A deterministic model gets
``yhat +- z * sigma``, ``sigma`` the robust spread of its residuals over the last
``calibration`` steps of the data it was fitted on (in-sample for global models; for local ones
a fit on the context without those steps, or its first differences if too short for that):
cheap, but no wider for later steps of the horizon. The profile floor (``engines/floor.py``)
widens each side to the built-in profile's (fitted on the same history; for a local model, the
profile of the context): 24 residuals cannot tell a 0.999 quantile, and a short-lag model cannot
know that a daily step is normal.

Series are made gap-free first (``kernels/gaps.py``). A series the model fails on gets no
forecast here (NaN), hence the profile's under the floor. Parameters named like a length
(``K``, ``lags``, ``seasonal_periods``, ``input_chunk_length``, ``output_chunk_length``) may be
durations (``"1d"``). Artifacts are pickles in the versioned envelope: load them only from a
trusted ArtifactStore. ``darts`` is imported only when the engine is built.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.base import (
    KeyIndex,
    PickledEngine,
    check_int,
    require,
    translated,
    unknown_params,
)
from openanomaly.engines.darts.convert import (
    is_torch,
    load_torch,
    pad,
    residual_band,
    save_torch,
    spread,
    to_series,
)
from openanomaly.engines.kernels.bands import at_levels, band, quantile_plan
from openanomaly.engines.kernels.gaps import horizon
from openanomaly.engines.kernels.lightning import QUIET_TRAINER, quiet_lightning
from openanomaly.engines.kernels.robust import z_score
from openanomaly.engines.kernels.seasons import season_steps
from openanomaly.errors import EngineError, NotEnoughHistory, UnknownModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = "LinearRegressionModel"
_DEFAULT_LAGS_SECONDS = 3600
_LAG_KINDS = ("lags", "lags_past_covariates", "lags_future_covariates")
_LENGTHS = ("K", "lags", "seasonal_periods", "input_chunk_length", "output_chunk_length")
_SAMPLE_LEVELS = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95)
_MIN_TRAIN = 10
_NO_VALIDATION = {"num_sanity_val_steps": 0, "limit_val_batches": 0}  # no empty-val warning


def _import_darts() -> Any:
    models, base = require("darts", "darts.models", "darts.models.forecasting.forecasting_model")
    quiet_lightning()
    return models, base.ForecastingModel


def model_names() -> list[str]:
    """The forecasting model classes of ``darts.models``."""
    models, base = _import_darts()
    classes = {n: getattr(models, n, None) for n in dir(models)}
    return sorted(n for n, c in classes.items() if inspect.isclass(c) and issubclass(c, base))


class DartsEngine(KeyIndex, PickledEngine):
    """A Darts model: global ones trained on the panel, local ones fitted on each context.

    Args:
        name: a forecasting model class of ``darts.models`` (default LinearRegressionModel).
        params: passed to the model (torch models get a quiet CPU trainer by default).
        step: the grid spacing in seconds.
        num_samples: sample paths for a probabilistic model (>= 1; 1 uses residual bands).
        calibration: steps of residuals behind a deterministic model's band (>= 3).

    Attributes:
        model_: the trained global model (global models only).
        keys_, known_: the series of the history, and which were trained on.
        sigma_: series key -> residual spread for the band (deterministic global models).
    """

    ENGINE = "darts"
    FORMAT = 2  # 2: the envelope, no profile inside (the floor wraps the engine)
    model_: Any
    sigma_: dict[str, float]

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        params: Mapping[str, Any] | None = None,
        *,
        step: int,
        num_samples: int = 200,
        calibration: int = 24,
    ) -> None:
        self.step = check_int("step", step, 1)
        self.num_samples = check_int("num_samples", num_samples, 1)
        self.calibration = check_int("calibration", calibration, 3)
        self.name, self.params = name, dict(params or {})
        if name not in model_names():
            raise UnknownModel("darts model", name, model_names())
        models, _ = _import_darts()
        self._cls = getattr(models, name)
        self._kwargs = self._check_kwargs(self.params)
        proto = self._new()
        # Torch models: no progress bar, and no pinned memory on a CPU (torch warns of it).
        self._torch_kwargs: dict[str, Any] = (
            {"verbose": False, "dataloader_kwargs": {"pin_memory": False}}
            if is_torch(self._cls)
            else {}
        )
        from darts.models.forecasting.forecasting_model import GlobalForecastingModel

        self.requires_fit = isinstance(proto, GlobalForecastingModel)
        # A torch model claims to be probabilistic before training (MC dropout); it samples
        # only with a likelihood.
        sampling = (
            self._kwargs.get("likelihood") is not None
            if is_torch(self._cls)
            else bool(proto.supports_probabilistic_prediction)
        )
        self.probabilistic = sampling and num_samples > 1

    def _check_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        signature = inspect.signature(self._cls.__init__).parameters
        accepted = [p for p, s in signature.items() if p != "self" and s.kind != s.VAR_KEYWORD]
        open_ended = any(s.kind == s.VAR_KEYWORD for s in signature.values())
        if not open_ended:
            unknown_params(self.name, params, accepted)
        kwargs: dict[str, Any] = {
            k: season_steps(k, v, self.step) if k in _LENGTHS and isinstance(v, str) else v
            for k, v in params.items()
        }
        from darts.models.forecasting.sklearn_model import SKLearnModel

        if issubclass(self._cls, SKLearnModel) and not any(k in kwargs for k in _LAG_KINDS):
            kwargs["lags"] = max(2, _DEFAULT_LAGS_SECONDS // self.step)
        if is_torch(self._cls):
            trainer = {**QUIET_TRAINER, **_NO_VALIDATION, **kwargs.get("pl_trainer_kwargs", {})}
            kwargs["pl_trainer_kwargs"] = trainer
        return kwargs

    def _new(self) -> Any:
        try:
            return self._cls(**self._kwargs)
        except Exception as exc:
            raise EngineError(f"{self.name}: bad parameters {self.params}: {exc}") from None

    def fit(self, history: SeriesBatch) -> Self:
        """Train a global model on every long enough series; a local model learns nothing here."""
        if not self.requires_fit:
            return self
        model = self._new()
        least = max(_MIN_TRAIN, int(model.min_train_series_length))
        counts = np.count_nonzero(~np.isnan(history.values), axis=1)
        rows = np.flatnonzero(counts >= least)
        if not rows.size:
            raise NotEnoughHistory(f"{self.name}: no series has the {least} samples it needs")
        series = to_series(history, rows, self.step)
        with translated(f"{self.name}: training failed"):
            model.fit(series, **self._torch_kwargs)
            keys = [history.keys[i] for i in rows]
            self.model_, self.sigma_ = model, {}
            if not self.probabilistic:
                self.sigma_ = dict(zip(keys, self._global_sigma(model, series), strict=True))
        self._set_keys(history.keys, counts >= least)
        return self

    def _global_sigma(self, model: Any, series: list[Any]) -> list[float]:
        k = self.calibration
        need = self._context_need(model) + k
        head = [s[:-k] if len(s) >= need else None for s in series]
        ok = [i for i, s in enumerate(head) if s is not None]
        sigma = [np.nan] * len(series)
        if ok:
            preds = model.predict(n=k, series=[head[i] for i in ok], **self._torch_kwargs)
            for i, pred in zip(ok, preds, strict=True):
                sigma[i] = spread(series[i].values()[-k:, 0] - pred.values()[:, 0])
        finite = [s for s in sigma if np.isfinite(s)]
        pooled = float(np.median(finite)) if finite else 0.0
        return [s if np.isfinite(s) else pooled for s in sigma]

    @staticmethod
    def _context_need(model: Any) -> int:
        return max(1, -int(model.extreme_lags[0] or -1))

    def known(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Global: the series trained on (the others get the cold-start model). Local: all."""
        if not self.requires_fit:
            return np.ones(len(keys), dtype=bool)
        return super().known(keys)

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """Forecast ``timestamps`` after each series' context (see the module doc); NaN for the
        series the model fails on."""
        if self.requires_fit:
            self.check_fitted("model_")
        ts = np.asarray(timestamps, dtype=np.int64)
        z = z_score(interval)
        hz = horizon(context, ts, self.step, self.name)
        out, rows, ahead = hz.out, hz.rows, hz.ahead
        if hz.empty:
            return out
        h = int(ahead.max())
        series = to_series(context, rows, self.step)
        if self.requires_fit:
            need = self._context_need(self.model_)
            series = [pad(s, need) for s in series]
            done = self._predict_global(series, [context.keys[i] for i in rows], h, interval, z)
        else:
            done = [self._predict_local(s, h, interval, z) for s in series]
        failed = sum(fc is None for fc in done)
        for r, fc in zip(rows, done, strict=True):
            if fc is not None:
                out.yhat[r], out.lower[r], out.upper[r] = (a[ahead - 1] for a in fc)
        if failed:
            log.debug("%s failed on %d series", self.name, failed)
        return out

    def _predict_global(
        self, series: list[Any], keys: list[str], h: int, interval: float, z: float
    ) -> list[tuple[FloatArray, FloatArray, FloatArray] | None]:
        samples = self.num_samples if self.probabilistic else 1
        try:
            preds = self.model_.predict(
                n=h, series=series, num_samples=samples, random_state=0, **self._torch_kwargs
            )
        except Exception as exc:
            log.debug("%s predict failed: %s", self.name, exc)
            return [None] * len(series)
        if self.probabilistic:
            return [self._from_samples(p, interval) for p in preds]
        pooled = float(np.median(list(self.sigma_.values()))) if self.sigma_ else 0.0
        return [
            residual_band(p, self.sigma_.get(k, pooled), z)
            for p, k in zip(preds, keys, strict=True)
        ]

    def _predict_local(
        self, series: Any, h: int, interval: float, z: float
    ) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        model = self._new()
        if len(series) < model.min_train_series_length:  # darts would log an ERROR, then raise
            return None
        try:
            if self.probabilistic:
                model.fit(series)
                return self._from_samples(
                    model.predict(h, num_samples=self.num_samples, random_state=0), interval
                )
            k = self.calibration
            sigma = np.nan
            if len(series) - k >= max(model.min_train_series_length, _MIN_TRAIN):
                model.fit(series[:-k])
                sigma = spread(series.values()[-k:, 0] - model.predict(k).values()[:, 0])
                model = self._new()
            model.fit(series)
            pred = model.predict(h)
        except Exception as exc:
            log.debug("%s failed on a series: %s", self.name, exc)
            return None
        if np.isnan(sigma):
            sigma = spread(np.diff(series.values()[:, 0]))
        return residual_band(pred, sigma, z)

    def _from_samples(
        self, pred: Any, interval: float
    ) -> tuple[FloatArray, FloatArray, FloatArray]:
        paths = np.asarray(pred.all_values(copy=False)[:, 0, :], dtype=np.float64)  # (h, samples)
        q = np.quantile(paths, _SAMPLE_LEVELS, axis=1).T  # (h, levels)
        plan = quantile_plan(_SAMPLE_LEVELS, interval)
        fc = band(plan, at_levels(_SAMPLE_LEVELS, q, plan.levels))
        return fc.yhat, fc.lower, fc.upper

    def __getstate__(self) -> dict[str, Any]:
        # A pickled darts torch model leaves its network out: keep darts' own save() instead.
        state = dict(self.__dict__)
        if "model_" in state and is_torch(self._cls):
            state["model_"] = save_torch(state["model_"])
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("model_"), dict):
            trainer = state["_kwargs"]["pl_trainer_kwargs"]
            state["model_"] = load_torch(state["_cls"], state["model_"], trainer)
        self.__dict__.update(state)


def create(name: str, params: Mapping[str, Any], *, step: int) -> DartsEngine:
    """A new engine; ``params`` may hold ``num_samples`` and ``calibration``, the rest go to
    the model."""
    rest = dict(params)
    options = {k: rest.pop(k) for k in ("num_samples", "calibration") if k in rest}
    return DartsEngine(name, rest, step=step, **options)


def loads(data: bytes, *, step: int) -> DartsEngine:
    """An engine saved by ``dumps``; refuses one trained at another step."""
    _import_darts()
    return DartsEngine.loads(data, step=step)


__all__ = ["DEFAULT_MODEL", "DartsEngine", "create", "loads", "model_names"]
