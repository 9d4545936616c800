"""Does a band keep its promise on clean data? The share of points above 1 against 1 - interval.

On a series without anomalies a band at ``interval`` should leave out about ``1 - interval`` of
the points (0.1% at the default 0.999). A model calibrated on its own training errors can be far
more optimistic than that when the history is short: a profile learnt from a few cycles fits
their noise. This replays clean synthetic panels (``openanomaly.synthetic.seasonal_panel``: a
seasonal shape and Gaussian noise) through the backtest, fitted once on ``history`` and scored
point by point from the context, and reports the share of scores above 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from rich.table import Table

from openanomaly.adapters.memory import MemoryMetrics
from openanomaly.domain.spec import Pipeline
from openanomaly.engines import DefaultEngineFactory
from openanomaly.services.backtest import backtest
from openanomaly.synthetic import seasonal_panel

STEP = 60
SCORED = 86400  # seconds scored after the fit: a whole day, every phase of a daily season


@dataclass(frozen=True)
class Calibration:
    """The share of clean points scored above 1, and what the interval promises."""

    engine: str
    history: int  # seconds of training history
    period: int  # seconds of the synthetic season
    points: int
    above: int
    interval: float

    @property
    def share(self) -> float:
        return self.above / self.points if self.points else float("nan")

    @property
    def ratio(self) -> float:
        """Observed share over the promised ``1 - interval`` (1 is perfect)."""
        return self.share / (1.0 - self.interval)


def clean_share(
    engine: str,
    *,
    history: int,
    period: int,
    series: int = 200,
    params: dict[str, object] | None = None,
    interval: float = 0.999,
    seed: int = 0,
) -> Calibration:
    """Fit ``engine`` (``lib[:name]``) once on ``history`` seconds of a clean panel, score the
    next ``SCORED`` seconds step by step (an hour of context) and count the scores above 1."""
    lib, _, name = engine.partition(":")
    end = 1_700_006_400  # a midnight, so that every run sees the same phase of the season
    start = end - SCORED
    ts = np.arange(start - history - 3600, end + 1, STEP)
    panel = seasonal_panel(series, ts, period=period, metric="clean", seed=seed)
    pipeline = Pipeline.model_validate(
        {
            "id": "calibration",
            "query": "clean",
            "step": STEP,
            "train": {"window": history},
            "infer": {"every": STEP, "context": 3600},
            "model": {"engine": lib, "name": name or None, "params": params or {}},
            "scoring": {"interval": interval},
        }
    )
    result = backtest(
        pipeline, MemoryMetrics({"clean": panel}), DefaultEngineFactory(), start=start, end=end
    )
    score = result.scored.score
    scored = np.isfinite(score)
    above = int(np.count_nonzero(scored & (score > 1.0)))
    return Calibration(engine, history, period, int(scored.sum()), above, interval)


HISTORIES = (2 * 3600, 6 * 3600, 86400, 7 * 86400)
# The clean panels: the throughput benchmark's (a 24-minute season, given to the model as
# bench/throughput.py gives it) and a daily one left to the model's own season choice.
PANELS: tuple[tuple[int, dict[str, object]], ...] = ((24 * 60, {"season": 24 * 60}), (86400, {}))


def calibration_table(engines: list[str], *, series: int = 100) -> Table:
    """Every engine on every panel and history: the share of clean points above 1."""
    table = Table(title="clean synthetic series (no anomaly): share of points scored above 1")
    for h in ("engine", "season", "model params", "history", "points", "above 1", "share", "x"):
        table.add_column(h, justify="left" if h in ("engine", "model params") else "right")
    for engine in engines:
        builtin = engine.startswith("builtin")
        for period, params in PANELS:
            for history in HISTORIES:
                c = clean_share(
                    engine,
                    history=history,
                    period=period,
                    series=series,
                    params=params if builtin else None,
                )
                table.add_row(
                    engine, f"{period // 60}m", str(params if builtin else {}),
                    f"{history / 3600:g}h", f"{c.points:,}", str(c.above),
                    f"{100 * c.share:.3f}%", f"{c.ratio:.2f}",
                )  # fmt: skip
        table.add_section()
    return table


CALIBRATION_LEGEND = """\
Fitted once on the history, then scored point by point over the next day from an hour of
  context (one point a minute). x: the share over the 1 - interval that the band promises (0.1% at
  0.999); within a factor of two (0.5 to 2) is the target, short histories included."""
