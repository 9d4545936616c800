"""Gap-free series for libraries that refuse NaN (NeuralForecast, Darts), vectorized over rows.

Each row starts at its first sample (a series that appeared later is shorter), inner gaps are
interpolated linearly and a missing tail repeats the last sample, so that every series ends at
the end of the grid and a forecast ``k`` steps ahead means the same for all of them. ``observed``
says which values are real: NeuralForecast takes it as its ``available_mask`` and leaves the
filled values out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.errors import EngineError


@dataclass(frozen=True)
class Filled:
    """``values`` with gaps filled; ``span`` marks each row's part from its first sample on."""

    values: FloatArray
    observed: npt.NDArray[np.bool_]
    span: npt.NDArray[np.bool_]


def gap_free(batch: SeriesBatch) -> Filled:
    """The batch's values, filled as the module docstring says (all-NaN rows stay NaN)."""
    observed = ~np.isnan(batch.values)
    if not batch.values.size:
        return Filled(batch.values.copy(), observed, observed)
    frame = pd.DataFrame(batch.values.T)  # interpolate down columns: one column per series
    filled = frame.interpolate(limit_area="inside").ffill().to_numpy(dtype=np.float64).T
    span = np.cumsum(observed, axis=1) > 0
    return Filled(np.ascontiguousarray(filled), observed, span)


def long_frame(batch: SeriesBatch, rows: IntArray, step: int) -> pd.DataFrame:
    """Nixtla's long frame ``unique_id, ds, y, available_mask`` of ``rows`` (ids are the row
    numbers, ``ds`` counts steps since the epoch), each series from its first sample on."""
    filled = gap_free(batch.take(rows))
    r, c = np.nonzero(filled.span)
    return pd.DataFrame(
        {
            "unique_id": rows[r],
            "ds": batch.timestamps[c] // step,
            "y": filled.values[r, c],
            "available_mask": filled.observed[r, c].astype(np.float64),
        }
    )


__all__ = ["Filled", "Horizon", "gap_free", "horizon", "long_frame"]


@dataclass(frozen=True)
class Horizon:
    """What a forecaster over contexts needs first: an all-NaN forecast to fill, the rows that
    have any data, and how many steps after the context each timestamp lies."""

    out: Forecast
    rows: IntArray
    ahead: IntArray

    @property
    def empty(self) -> bool:
        return not self.ahead.size or not self.rows.size


def horizon(context: SeriesBatch, timestamps: IntArray, step: int, name: str) -> Horizon:
    """Check that ``timestamps`` come after ``context`` and set up the forecast to fill.

    Raises:
        EngineError: a timestamp is not after the context's end.
    """
    ts = np.asarray(timestamps, dtype=np.int64)
    n = len(context)
    out = Forecast(*(np.full((n, ts.size), np.nan) for _ in range(3)))
    rows = np.flatnonzero(~np.all(np.isnan(context.values), axis=1))
    if not ts.size or not rows.size:
        return Horizon(out, rows, np.empty(0, dtype=np.int64))
    ahead = (ts - context.timestamps[-1]) // step
    if ahead.min() < 1:
        raise EngineError(f"{name}: timestamps to forecast must come after the context")
    return Horizon(out, rows, ahead)
