"""NeuralForecast models (Nixtla: NHITS, NBEATS, TFT, LSTM...): one global network per panel.

``fit`` trains one network on every series of the history (one long frame ``unique_id, ds, y``
with ``ds`` in steps, ``freq=1``); ``predict`` applies it to each series' fresh context with
``NeuralForecast.predict(df=context)``, without retraining. Missing samples are filled for the
network's input and masked out of its loss (``available_mask``, see ``_gaps``).

Bands: the network is trained with ``MQLoss(level=levels)`` (default ``[80, 90]``: quantiles
0.05, 0.1, 0.5, 0.9, 0.95); an interval inside them is interpolated, a wider one (0.99)
extrapolated from the outermost pair under a normal shape (``kernels/bands.py``). The profile
floor (``engines/floor.py``) widens each side to the built-in profile's: a normal extrapolation
from the 0.05/0.95 pair cannot tell a 0.999 quantile (NHITS flagged 93 normal points per 1,000
on a noisy daily sine of NAB without it). Conformal intervals were left aside: they retrain the
network per calibration window and their 0.99 band is the largest of a handful of errors.

Training is quiet and writes nothing to the working directory: no progress bar, no logger, no
checkpoints, Lightning's root directory a temporary one. ``dumps`` packs ``NeuralForecast.save``
(safetensors weights and JSON, no pickle: ``load`` runs no code from the artifact) into the
versioned envelope of ``engines/base.py``. ``neuralforecast`` and ``torch`` are
imported only when used.
"""

from __future__ import annotations

import inspect
import logging
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np

from openanomaly.domain.series import Forecast, IntArray, SeriesBatch
from openanomaly.engines.base import Engine, KeyIndex, check_int, require, translated
from openanomaly.engines.kernels.bands import at_levels, band, quantile_plan
from openanomaly.engines.kernels.gaps import horizon, long_frame
from openanomaly.engines.kernels.lightning import QUIET_TRAINER, quiet_lightning
from openanomaly.engines.kernels.seasons import season_steps
from openanomaly.errors import EngineError, NotEnoughHistory, UnknownModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = "NHITS"
_MIN_TRAIN = 10  # samples a series needs to take part in training (and be ``known``)
_ENGINE_PARAMS = ("h", "input_size", "levels")
_NOT_PARAMS = ("self", "h", "input_size", "loss", "valid_loss", "trainer_kwargs", "kwargs")


def _import_nf() -> Any:
    (neuralforecast, *_) = require(
        "neuralforecast",
        "neuralforecast",
        "neuralforecast.losses.pytorch",
        "neuralforecast.models",
    )
    quiet_lightning()
    return neuralforecast


def _check_levels(levels: object) -> list[float]:
    if (
        not isinstance(levels, list | tuple)
        or not levels
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 < v < 100 for v in levels
        )
    ):
        raise EngineError(f"levels must be a list of numbers in (0, 100), got {levels!r}")
    return sorted({float(v) for v in levels})


class NeuralForecastEngine(KeyIndex, Engine):
    """A NeuralForecast model trained on the whole panel, applied to new data without refit.

    Args:
        name: a model class of ``neuralforecast.models`` (default NHITS).
        params: passed to the model: its hyperparameters (``max_steps``, ``mlp_units``...) and
            Lightning Trainer options (``accelerator``...). Engine options: ``h`` the horizon
            the network is trained for (steps or a duration, default 24 steps; longer
            horizons are forecast recursively), ``input_size`` the input window (default
            ``2 * h``), ``levels`` the ``MQLoss`` levels in percent (default ``[80, 90]``).
            ``scaler_type`` defaults to ``robust`` (each window normalised, so one network
            serves series of any scale), ``accelerator`` to ``cpu``.
        step: the grid spacing in seconds.

    Attributes:
        keys_, known_: the series of the history, and which took part in training.
        nf_: the fitted ``NeuralForecast`` object.
    """

    ENGINE = "neuralforecast"
    FORMAT = 3  # 2: the profile inside; 3: the envelope, no profile (the floor wraps the engine)
    nf_: Any

    def __init__(
        self, name: str = DEFAULT_MODEL, params: Mapping[str, Any] | None = None, *, step: int
    ) -> None:
        check_int("step", step, 1)
        self.name, self.params, self.step = name, dict(params or {}), step
        nf = _import_nf()
        if name not in nf.models.__all__:
            raise UnknownModel("neuralforecast model", name, list(nf.models.__all__))
        rest = dict(self.params)
        self.h = season_steps("h", rest.pop("h", 24), step)
        self.input_size = season_steps("input_size", rest.pop("input_size", 2 * self.h), step)
        self.levels = _check_levels(rest.pop("levels", [80, 90]))
        self._cls = getattr(nf.models, name)
        self._kwargs = self._check_kwargs(rest)
        self._lock = threading.Lock()  # predict swaps the scalers of the NeuralForecast object

    def _check_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        import pytorch_lightning as pl

        model = inspect.signature(self._cls.__init__).parameters
        trainer = inspect.signature(pl.Trainer.__init__).parameters
        accepted = [p for p in model if p not in _NOT_PARAMS]
        unknown = sorted(set(params) - set(accepted) - set(trainer))
        if unknown:
            raise EngineError(
                f"{self.name} has no parameter {', '.join(map(repr, unknown))}; accepted: "
                f"{', '.join([*_ENGINE_PARAMS, *accepted])} and Lightning Trainer options"
            )
        kwargs = {**QUIET_TRAINER, **params}
        if "scaler_type" in model:
            kwargs.setdefault("scaler_type", "robust")
        if "max_steps" in model and "val_check_steps" in model:  # no 'val_check > max' warning
            max_steps = kwargs.get("max_steps", model["max_steps"].default)
            kwargs.setdefault("val_check_steps", min(model["val_check_steps"].default, max_steps))
        return kwargs

    def _model(self) -> Any:
        nf = _import_nf()
        loss = nf.losses.pytorch.MQLoss(level=self.levels)
        try:
            return self._cls(
                h=self.h, input_size=self.input_size, loss=loss, valid_loss=loss, **self._kwargs
            )
        except Exception as exc:
            raise EngineError(f"{self.name}: bad parameters {self.params}: {exc}") from None

    def fit(self, history: SeriesBatch) -> Self:
        """Train one network on every series with at least 10 samples; returns self."""
        nf = _import_nf()
        counts = np.count_nonzero(~np.isnan(history.values), axis=1)
        rows = np.flatnonzero(counts >= _MIN_TRAIN)
        if not rows.size:
            raise NotEnoughHistory(f"{self.name}: no series has {_MIN_TRAIN} samples to train on")
        model = self._model()
        forecaster = nf.NeuralForecast(models=[model], freq=1)
        with tempfile.TemporaryDirectory(prefix="openanomaly-nf-") as root:
            model.trainer_kwargs["default_root_dir"] = root
            try:
                with translated(f"{self.name}: training failed"):
                    forecaster.fit(long_frame(history, rows, self.step))
            finally:
                model.trainer_kwargs.pop("default_root_dir", None)
        self.nf_ = forecaster
        self._set_keys(history.keys, counts >= _MIN_TRAIN)
        return self

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """Apply the trained network to each series' context (no refit); NaN rows stay NaN."""
        self.check_fitted("nf_")
        hz = horizon(context, timestamps, self.step, self.name)
        out, rows, ahead = hz.out, hz.rows, hz.ahead
        if hz.empty:
            return out
        h = max(int(ahead.max()), self.h)
        with self._lock, translated(f"{self.name}: predict"):
            frame = self.nf_.predict(df=long_frame(context, rows, self.step), h=h)
        model = self.nf_.models[0]
        names = [f"{model}{suffix}" for suffix in model.loss.output_names]
        native = [float(q) for q in model.loss.quantiles]
        frame = frame.sort_values(["unique_id", "ds"])  # h rows per series, as in ``rows``
        q = frame[names].to_numpy(dtype=np.float64).reshape(rows.size, h, len(names))
        plan = quantile_plan(native, interval)
        fc = band(plan, at_levels(native, q[:, ahead - 1], plan.levels))
        out.yhat[rows], out.lower[rows], out.upper[rows] = fc.yhat, fc.lower, fc.upper
        return out

    def dumps(self) -> bytes:
        """``NeuralForecast.save`` (safetensors + JSON) in the versioned envelope."""
        self.check_fitted("nf_", "dumps")
        with tempfile.TemporaryDirectory() as tmp:
            self.nf_.save(str(Path(tmp) / "nf"), save_dataset=False, overwrite=True)
            files = {f"nf/{p.name}": p.read_bytes() for p in sorted((Path(tmp) / "nf").iterdir())}
        header = {"name": self.name, "params": self.params, "keys": list(self.keys_)}
        return self.pack(files, **header, known=self.known_.tolist())


def create(name: str, params: Mapping[str, Any], *, step: int) -> NeuralForecastEngine:
    """A new, untrained engine for the model class ``name``."""
    return NeuralForecastEngine(name, params, step=step)


def loads(data: bytes, *, step: int) -> NeuralForecastEngine:
    """An engine saved by ``dumps``; refuses another format or step."""
    nf = _import_nf()
    head, files = NeuralForecastEngine.unpack(data, step=step)
    engine = NeuralForecastEngine(head["name"], head["params"], step=step)
    with tempfile.TemporaryDirectory() as tmp, translated("not a neuralforecast model artifact"):
        (Path(tmp) / "nf").mkdir()
        for name, blob in files.items():
            (Path(tmp) / "nf" / Path(name).name).write_bytes(blob)
        engine.nf_ = nf.NeuralForecast.load(str(Path(tmp) / "nf"))
    engine._set_keys(head["keys"], np.array(head["known"], dtype=bool))
    return engine


__all__ = ["DEFAULT_MODEL", "NeuralForecastEngine", "create", "loads"]
