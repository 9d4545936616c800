"""Panel data: many series on one shared time grid.

A PromQL range query with a step returns every series on the grid ``start + k * step``. We keep
that grid explicit: one ``timestamps`` vector shared by all series and a 2-D ``values`` matrix
(series x time) with NaN where a series has no sample. All model and scoring work is vectorized
over this matrix instead of looping over series in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

Labels = Mapping[str, str]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def series_key(labels: Labels) -> str:
    """A stable identity for a label set: ``name{a="1",b="2"}`` with labels sorted."""
    name = labels.get("__name__", "")
    rest = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}"


@dataclass(frozen=True)
class SeriesBatch:
    """Series sharing one time grid.

    Attributes:
        labels: one label mapping per series (row of ``values``).
        timestamps: unix seconds, int64, strictly increasing, shape ``(T,)``.
        values: float64, shape ``(N, T)``; NaN marks a missing sample.
    """

    labels: tuple[Labels, ...]
    timestamps: IntArray
    values: FloatArray

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 2:
            raise ValueError(f"values must be 2-D (series x time), got shape {values.shape}")
        ts = np.asarray(self.timestamps, dtype=np.int64)
        if values.shape != (len(self.labels), ts.shape[0]):
            raise ValueError(
                f"values shape {values.shape} does not match "
                f"{len(self.labels)} series x {ts.shape[0]} timestamps"
            )
        if ts.size > 1 and not bool(np.all(np.diff(ts) > 0)):
            raise ValueError("timestamps must be strictly increasing")
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "labels", tuple(self.labels))

    @cached_property
    def keys(self) -> tuple[str, ...]:
        """``series_key`` of each row: computed on first use, then shared by the batches cut
        from this one (``between``, ``take``), so 100,000 label sets are keyed once a read."""
        return tuple(series_key(lb) for lb in self.labels)

    def _with_keys(self, keys: tuple[str, ...]) -> SeriesBatch:
        self.__dict__["keys"] = keys  # where cached_property keeps it; the batch is frozen
        return self

    @classmethod
    def empty(cls, timestamps: Sequence[int] | IntArray = ()) -> SeriesBatch:
        ts = np.asarray(timestamps, dtype=np.int64)
        return cls((), ts, np.empty((0, ts.size)))

    @classmethod
    def from_points(
        cls,
        series: Iterable[tuple[Labels, Sequence[int] | IntArray, Sequence[float] | FloatArray]],
        timestamps: IntArray,
    ) -> SeriesBatch:
        """Place each series' (timestamp, value) points on the grid; off-grid points are dropped."""
        grid = np.asarray(timestamps, dtype=np.int64)
        labels: list[Labels] = []
        rows: list[FloatArray] = []
        for lb, ts, vs in series:
            row = np.full(grid.size, np.nan)
            t = np.asarray(ts, dtype=np.int64)
            idx = np.searchsorted(grid, t)
            ok = (idx < grid.size) & (grid[np.minimum(idx, grid.size - 1)] == t)
            row[idx[ok]] = np.asarray(vs, dtype=np.float64)[ok]
            labels.append(dict(lb))
            rows.append(row)
        values = np.vstack(rows) if rows else np.empty((0, grid.size))
        return cls(tuple(labels), grid, values)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def step(self) -> int | None:
        """The grid spacing in seconds, or None for fewer than two timestamps."""
        return int(self.timestamps[1] - self.timestamps[0]) if self.timestamps.size > 1 else None

    def on_grid(self, start: int, end: int, step: int) -> SeriesBatch:
        """This batch re-read on the grid ``ceil(start/step)*step, ... <= end``, as a range query
        would return it: series without any sample in the range are left out."""
        first = -(-start // step) * step
        grid = np.arange(first, end + 1, step, dtype=np.int64)
        if not self.timestamps.size:
            return SeriesBatch.empty(grid)
        idx = np.searchsorted(self.timestamps, grid)
        hit = (idx < self.timestamps.size) & (
            self.timestamps[np.minimum(idx, self.timestamps.size - 1)] == grid
        )
        values = np.full((len(self), grid.size), np.nan)
        values[:, hit] = self.values[:, idx[hit]]
        present = np.flatnonzero(~np.all(np.isnan(values), axis=1))
        return SeriesBatch(self.labels, grid, values).take(present)

    def take(self, rows: Sequence[int] | npt.NDArray[np.intp]) -> SeriesBatch:
        """The subset of series at ``rows``, same grid."""
        idx = np.asarray(rows, dtype=np.intp)
        rows_ = idx.tolist()
        keys, labels = self.keys, self.labels
        out = SeriesBatch(tuple(labels[i] for i in rows_), self.timestamps, self.values[idx])
        return out._with_keys(tuple(keys[i] for i in rows_))

    def between(self, start: int, end: int) -> SeriesBatch:
        """The part of the grid with ``start < t <= end`` (a window is open on the left)."""
        mask = (self.timestamps > start) & (self.timestamps <= end)
        out = SeriesBatch(self.labels, self.timestamps[mask], self.values[:, mask])
        return out._with_keys(self.keys)

    def concat_time(self, later: SeriesBatch) -> SeriesBatch:
        """This batch followed in time by ``later`` (series matched by key, union of series)."""
        keys = list(dict.fromkeys(self.keys + later.keys))
        pos = {k: i for i, k in enumerate(keys)}
        labels = {
            **dict(zip(later.keys, later.labels, strict=True)),
            **dict(zip(self.keys, self.labels, strict=True)),
        }
        keep = later.timestamps > (self.timestamps[-1] if self.timestamps.size else -(2**62))
        ts = np.concatenate([self.timestamps, later.timestamps[keep]])
        values = np.full((len(keys), ts.size), np.nan)
        values[[pos[k] for k in self.keys], : self.timestamps.size] = self.values
        values[[pos[k] for k in later.keys], self.timestamps.size :] = later.values[:, keep]
        return SeriesBatch(tuple(labels[k] for k in keys), ts, values)


@dataclass(frozen=True)
class Forecast:
    """What a model expects for a batch: ``yhat`` and its interval, all shaped like ``values``."""

    yhat: FloatArray
    lower: FloatArray
    upper: FloatArray

    def __post_init__(self) -> None:
        shapes = {self.yhat.shape, self.lower.shape, self.upper.shape}
        if len(shapes) != 1:
            raise ValueError(f"forecast arrays differ in shape: {sorted(shapes)}")

    def take(self, rows: Sequence[int] | npt.NDArray[np.intp]) -> Forecast:
        idx = np.asarray(rows, dtype=np.intp)
        return Forecast(self.yhat[idx], self.lower[idx], self.upper[idx])

    @classmethod
    def stack(
        cls, parts: Sequence[tuple[npt.NDArray[np.intp], Forecast]], n: int, t: int
    ) -> Forecast:
        """Reassemble per-row-subset forecasts into one ``(n, t)`` forecast (NaN where unset)."""
        out = [np.full((n, t), np.nan) for _ in range(3)]
        for rows, fc in parts:
            for arr, part in zip(out, (fc.yhat, fc.lower, fc.upper), strict=True):
                arr[rows] = part
        return cls(*out)
