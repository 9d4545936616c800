"""Chronos foundation models (Amazon, ``chronos-forecasting``): zero-shot, nothing to train.

The model reads each series' context and forecasts quantiles; nothing is learned per pipeline,
so ``requires_fit`` is False, every series is ``known`` and the artifact is only the model's
name. The model is a Hugging Face Hub id (``amazon/chronos-bolt-small``; the short names in
``ALIASES`` stand for the Amazon ids) or a local directory holding ``config.json`` and the
weights, loaded the same way. Loaded models are cached per process, keyed by
(model, device, dtype): each worker loads a model once, whatever the number of pipelines.

Series are forecast in batches of ``batch_size``, as one ``(batch, time)`` tensor with NaN for
missing samples (the pipelines mask NaN themselves; a shorter series is a left-padded one).
The horizon starts at the end of the context grid. Rows without any sample get NaN (no output).

Bands come from the model's quantiles (Chronos-Bolt: 0.1..0.9; Chronos-2: 0.01..0.99; the
original sample-based Chronos: empirical quantiles of its samples). An interval wider than the
model's outermost levels is extrapolated from them under a normal shape (see ``_bands``):
with Chronos-Bolt a 0.99 band is the 0.1/0.9 half-widths times 2.01.

``torch`` and ``chronos`` are imported only when a model is loaded.
"""

from __future__ import annotations

import logging
import re
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.base import Engine, check_int, require, translated, unknown_params
from openanomaly.engines.kernels.bands import QuantilePlan, band, quantile_plan
from openanomaly.engines.kernels.gaps import horizon
from openanomaly.errors import EngineError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "chronos-bolt"
ALIASES = {
    "chronos-bolt": "amazon/chronos-bolt-small",
    **{f"chronos-bolt-{s}": f"amazon/chronos-bolt-{s}" for s in ("tiny", "mini", "small", "base")},
    "chronos-2": "amazon/chronos-2",
    **{f"chronos-t5-{s}": f"amazon/chronos-t5-{s}" for s in ("tiny", "mini", "small", "base")},
}
"""Short model names -> Hugging Face Hub ids."""
DTYPES = ("float32", "bfloat16")
PARAMS = ("device", "batch_size", "torch_dtype")
_DEVICE = re.compile(r"cpu|auto|cuda(:\d+)?|mps")

_PIPELINES: dict[tuple[str, str, str], Any] = {}
_LOAD_LOCK = threading.Lock()
_GLOBAL_LOCK = threading.Lock()


def _import_chronos() -> Any:
    return require("chronos", "chronos")[0]


def load_pipeline(model: str, device: str = "cpu", torch_dtype: str = "float32") -> Any:
    """The Chronos pipeline for ``model``, loaded once per process (thread-safe).

    Raises:
        EngineNotInstalled: ``chronos-forecasting`` is missing.
        EngineError: the model cannot be loaded (not on disk and the Hub is out of reach...).
    """
    key = (model, device, torch_dtype)
    with _LOAD_LOCK:
        cached = _PIPELINES.get(key)
        if cached is not None:
            return cached
        chronos = _import_chronos()
        import torch
        from transformers.utils import logging

        hf_logging: Any = logging

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        elif device.startswith("cuda") and not torch.cuda.is_available():
            raise EngineError(f"chronos: device {device!r} asked but CUDA is not available")
        hf_logging.disable_progress_bar()  # no "Loading weights" bars in a service's log
        try:
            pipeline = chronos.BaseChronosPipeline.from_pretrained(
                model, device_map=device, torch_dtype=torch_dtype
            )
        except Exception as exc:
            why = " ".join(str(exc).split())  # one line in a log
            raise EngineError(
                f"chronos: cannot load model {model!r} ({type(exc).__name__}: {why}). Without "
                f"access to the Hugging Face Hub, download it where there is "
                f"(`hf download {model} --local-dir DIR`) and give the local directory as the "
                f"model name"
            ) from None
        pipeline.model.eval()
        log.info("chronos: loaded %s on %s (%s)", model, device, torch_dtype)
        _PIPELINES[key] = pipeline
        return pipeline


class ChronosEngine(Engine):
    """A Chronos model applied zero-shot to every series' context.

    Args:
        model: a Hub id, a local directory, or a short name from ``ALIASES``.
        step: the grid spacing in seconds.
        device: ``cpu`` (default), ``cuda``, ``cuda:N``, ``mps`` or ``auto`` (CUDA if present).
        batch_size: series per forward pass (>= 1).
        torch_dtype: ``float32`` (default) or ``bfloat16`` (half the memory, for GPUs).
    """

    ENGINE = "chronos"
    FORMAT = 2  # 2: the envelope
    requires_fit = False

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        step: int,
        device: str = "cpu",
        batch_size: int = 256,
        torch_dtype: str = "float32",
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise EngineError(f"chronos: model must be a Hub id or a directory, got {model!r}")
        self.step = check_int("step", step, 1)
        if not isinstance(device, str) or not _DEVICE.fullmatch(device):
            raise EngineError(f"device must be one of cpu, cuda, cuda:N, mps, auto; got {device!r}")
        self.batch_size = check_int("batch_size", batch_size, 1)
        if torch_dtype not in DTYPES:
            raise EngineError(
                f"torch_dtype must be one of {', '.join(DTYPES)}; got {torch_dtype!r}"
            )
        self.model, self.device, self.torch_dtype = model, device, torch_dtype
        self.model_id = ALIASES.get(model, model)

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as given to ``__init__`` (without ``model`` and ``step``)."""
        return {
            "device": self.device,
            "batch_size": self.batch_size,
            "torch_dtype": self.torch_dtype,
        }

    def pipeline(self) -> Any:
        """The loaded Chronos pipeline (from the per-process cache after the first call)."""
        return load_pipeline(self.model_id, self.device, self.torch_dtype)

    def fit(self, history: SeriesBatch) -> Self:
        """Nothing to learn: returns self."""
        return self

    def known(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Every series: the model needs only its context."""
        return np.ones(len(keys), dtype=bool)

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """Forecast ``timestamps`` from each series' context, in batches of ``batch_size``."""
        hz = horizon(context, timestamps, self.step, "chronos")
        out, rows, ahead = hz.out, hz.rows, hz.ahead
        if hz.empty:
            return out
        pipeline = self.pipeline()
        plan = quantile_plan(_native_levels(pipeline), interval)
        h = int(ahead.max())
        for start in range(0, rows.size, self.batch_size):
            chunk = rows[start : start + self.batch_size]
            with translated(f"chronos {self.model}: predict"):
                q = _quantiles(pipeline, context.values[chunk], h, plan)  # (len(chunk), h, 3)
            fc = band(plan, q[:, ahead - 1])
            out.yhat[chunk], out.lower[chunk], out.upper[chunk] = fc.yhat, fc.lower, fc.upper
        return out

    def dumps(self) -> bytes:
        """The model's name and options: a zero-shot model has no fitted state."""
        return self.pack({}, model=self.model, params=self.get_params())


def _native_levels(pipeline: Any) -> list[float]:
    """The quantile levels the model learned; sample-based Chronos gets a 0.1..0.9 grid."""
    levels = getattr(pipeline, "quantiles", None)
    return [float(q) for q in levels] if levels else [q / 10 for q in range(1, 10)]


def _quantiles(pipeline: Any, values: FloatArray, h: int, plan: QuantilePlan) -> FloatArray:
    """Quantiles at ``plan.levels`` over ``h`` steps for each row of ``values``: ``(n, h, 3)``."""
    import torch

    chronos = _import_chronos()
    multivariate = isinstance(pipeline, chronos.Chronos2Pipeline)
    context = torch.as_tensor(values, dtype=torch.float32)
    kwargs: dict[str, Any] = {"prediction_length": h, "quantile_levels": plan.levels}
    if multivariate:  # Chronos-2 reads (batch, variates, time) and answers one tensor per item
        context, kwargs["batch_size"] = context[:, None, :], len(values)
    long = h > pipeline.model_prediction_length
    sampled = getattr(pipeline, "forecast_type", None) == chronos.base.ForecastType.SAMPLES
    with torch.inference_mode(), _process_wide(long=long, sampled=sampled):
        q, _ = pipeline.predict_quantiles(context, **kwargs)
    if multivariate:
        q = torch.stack([item[0] for item in q])
    return np.asarray(q.float().numpy(), dtype=np.float64)


@contextmanager
def _process_wide(*, long: bool, sampled: bool) -> Iterator[None]:
    """Process-wide settings around one prediction, under a lock (other threads may predict).

    ``long``: silence the 'prediction length > the model's' warning: we know, and the pipeline
    then forecasts the rest autoregressively. ``sampled``: the original Chronos draws sample
    paths from torch's global generator; seed it (and restore it after) so that running the
    same window twice gives the same forecast.
    """
    if not (long or sampled):
        yield
        return
    import torch

    with _GLOBAL_LOCK, warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.filterwarnings("ignore", message="We recommend keeping prediction length")
        torch.manual_seed(0)
        yield


def create(name: str, params: Mapping[str, Any], *, step: int) -> ChronosEngine:
    """A new engine for the model ``name``; ``params`` may also name it as ``model``."""
    rest = dict(params)
    model = rest.pop("model", name)
    if name not in (model, DEFAULT_MODEL):
        raise EngineError(f"chronos: model named twice ({name!r} and params.model {model!r})")
    unknown_params("chronos", rest, ("model", *PARAMS))
    return ChronosEngine(model, step=step, **rest)


def loads(data: bytes, *, step: int) -> ChronosEngine:
    """An engine saved by ``dumps``; refuses another format or step."""
    head, _ = ChronosEngine.unpack(data, step=step)
    return create(head["model"], head["params"], step=step)


__all__ = ["ALIASES", "DEFAULT_MODEL", "ChronosEngine", "create", "load_pipeline", "loads"]
