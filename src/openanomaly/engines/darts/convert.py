"""Between our panels and Darts' objects: series conversion, residual bands, and the save/load of
darts' torch models (which a pickle would leave without their network). ``darts`` is imported only
inside the functions."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from openanomaly.domain.series import FloatArray, IntArray, SeriesBatch
from openanomaly.engines.kernels.gaps import gap_free
from openanomaly.engines.kernels.robust import MAD_TO_SD, TINY


def is_torch(cls: type) -> bool:
    try:
        from darts.models.forecasting.torch_forecasting_model import TorchForecastingModel
    except ImportError:  # darts without its torch extra
        return False
    return issubclass(cls, TorchForecastingModel)


def spread(resid: FloatArray) -> float:
    """Robust standard deviation of residuals (scaled MAD)."""
    r = np.asarray(resid, dtype=np.float64)
    r = r[np.isfinite(r)]
    if not r.size:
        return np.nan
    return float(MAD_TO_SD * np.median(np.abs(r - np.median(r))))


def residual_band(pred: Any, sigma: float, z: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    yhat = np.asarray(pred.values(copy=False)[:, 0], dtype=np.float64)
    half = np.maximum(z * (0.0 if np.isnan(sigma) else sigma), TINY * np.maximum(1.0, np.abs(yhat)))
    return yhat, yhat - half, yhat + half


def to_series(batch: SeriesBatch, rows: IntArray, step: int) -> list[Any]:
    """Darts series of ``rows``, gap-free, on an integer index counting steps since the epoch."""
    import pandas as pd
    from darts import TimeSeries

    filled = gap_free(batch.take(rows))
    first = np.argmax(filled.span, axis=1)
    t0 = batch.timestamps // step
    out = []
    for i, start in enumerate(first):
        index = pd.RangeIndex(int(t0[start]), int(t0[-1]) + 1)
        out.append(TimeSeries.from_times_and_values(index, filled.values[i, start:].copy()))
    return out


def pad(series: Any, need: int) -> Any:
    """``series`` left-padded with its first value to ``need`` points (a short new context)."""
    if len(series) >= need:
        return series
    import pandas as pd
    from darts import TimeSeries

    values = series.values()[:, 0]
    padded = np.concatenate([np.full(need - values.size, values[0]), values])
    end = int(series.time_index[-1]) + 1
    return TimeSeries.from_times_and_values(pd.RangeIndex(end - need, end), padded)


def save_torch(model: Any) -> dict[str, bytes]:
    """A trained darts torch model as the files of its own ``save()`` (object + weights)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save(str(Path(tmp) / "model.pt"), clean=True)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir()}


def load_torch(cls: Any, files: dict[str, bytes], trainer: dict[str, Any]) -> Any:
    """The model saved by ``save_torch``, with our trainer options (``clean`` dropped them)."""
    where = "cpu" if trainer.get("accelerator") == "cpu" else None
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            (Path(tmp) / name).write_bytes(data)
        return cls.load(str(Path(tmp) / "model.pt"), pl_trainer_kwargs=trainer, map_location=where)


__all__ = ["is_torch", "load_torch", "pad", "residual_band", "save_torch", "spread", "to_series"]
