"""Synthetic panels with known anomalies, for the demo, the end-to-end tests and benchmarks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openanomaly.domain.records import OutputSeries
from openanomaly.domain.series import IntArray, SeriesBatch


@dataclass(frozen=True)
class Injected:
    """Where anomalies were injected: ``(row, first index, last index)`` per anomaly."""

    spikes: list[tuple[int, int]]
    shifts: list[tuple[int, int, int]]

    def mask(self, shape: tuple[int, int], *, settle: int = 0) -> np.ndarray:
        """True on anomalous points; a shift also marks ``settle`` points after it returns."""
        m = np.zeros(shape, dtype=bool)
        for row, i in self.spikes:
            m[row, i] = True
        for row, a, b in self.shifts:
            m[row, a : b + 1 + settle] = True
        return m


def seasonal_panel(
    n_series: int,
    timestamps: IntArray,
    *,
    period: int = 86400,
    metric: str = "demo_requests",
    noise: float = 0.03,
    seed: int = 0,
) -> SeriesBatch:
    """Positive series with a seasonal shape of ``period`` seconds, its own level per series,
    and Gaussian noise of ``noise`` times the level."""
    rng = np.random.default_rng(seed)
    ts = np.asarray(timestamps, dtype=np.int64)
    level = rng.uniform(50, 500, size=(n_series, 1))
    phase = 2 * np.pi * (ts % period) / period
    shape = 1 + 0.3 * np.sin(phase)[None, :] + 0.1 * np.sin(2 * phase + 1)[None, :]
    values = level * shape * (1 + noise * rng.standard_normal((n_series, ts.size)))
    labels = tuple({"__name__": metric, "instance": f"host-{i:05d}"} for i in range(n_series))
    return SeriesBatch(labels, ts, values)


def inject(
    batch: SeriesBatch,
    *,
    spikes: Sequence[tuple[int, int]] = (),
    shifts: Sequence[tuple[int, int, int]] = (),
    spike_size: float = 0.6,
    shift_size: float = 0.35,
) -> tuple[SeriesBatch, Injected]:
    """A copy of ``batch`` with multiplicative spikes at ``(row, index)`` and level shifts over
    ``(row, first, last)``."""
    values = batch.values.copy()
    for row, i in spikes:
        values[row, i] *= 1 + spike_size
    for row, a, b in shifts:
        values[row, a : b + 1] *= 1 + shift_size
    return SeriesBatch(batch.labels, batch.timestamps, values), Injected(list(spikes), list(shifts))


def as_output(batch: SeriesBatch) -> list[OutputSeries]:
    """The batch as series to remote-write (NaN points are left out by the writer)."""
    return [
        OutputSeries(dict(lb), batch.timestamps, batch.values[i])
        for i, lb in enumerate(batch.labels)
    ]
