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

from openanomaly.core.series import FloatArray, IntArray, SeriesBatch


@dataclass(frozen=True)
class Filled:
    """``values`` with gaps filled; ``span`` marks each row's part from its first sample on."""

    values: FloatArray
    observed: npt.NDArray[np.bool_]
    span: npt.NDArray[np.bool_]


def fill_gaps(batch: SeriesBatch) -> Filled:
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
    filled = fill_gaps(batch.take(rows))
    r, c = np.nonzero(filled.span)
    return pd.DataFrame(
        {
            "unique_id": rows[r],
            "ds": batch.timestamps[c] // step,
            "y": filled.values[r, c],
            "available_mask": filled.observed[r, c].astype(np.float64),
        }
    )


__all__ = ["Filled", "fill_gaps", "long_frame"]
