"""PNG plots of scored series: the actual values, the forecast band, flagged points, the score."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import SeriesBatch
from openanomaly.services.backtest import BacktestResult


def plot_backtest(result: BacktestResult, path: Path, *, max_series: int = 4) -> Path:
    """Draw the ``max_series`` series with the highest peak score (two panels each)."""
    title = f"pipeline {result.pipeline_id}: {len(result.events)} anomalies"
    return plot_scored(result.batch, result.scored, path, title=title, max_series=max_series)


def plot_scored(
    batch: SeriesBatch, scored: Scored, path: Path, *, title: str, max_series: int = 4
) -> Path:
    """Actual, forecast band and flagged points above, the score below, per series."""
    import matplotlib  # a core dependency, imported only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peaks = np.nanmax(np.nan_to_num(scored.score, nan=0.0), axis=1, initial=0.0)
    rows = np.argsort(-peaks)[:max_series]
    times = [datetime.fromtimestamp(int(t), UTC) for t in batch.timestamps]
    fig, axes = plt.subplots(
        2 * len(rows),
        1,
        figsize=(12, 3.2 * len(rows) + 0.5),
        sharex=True,
        squeeze=False,
        gridspec_kw={"height_ratios": [3, 1] * len(rows)},
    )
    for i, row in enumerate(rows):
        ax, sax = axes[2 * i, 0], axes[2 * i + 1, 0]
        y, s = batch.values[row], scored.score[row]
        ax.fill_between(
            times,
            scored.lower[row],
            scored.upper[row],
            color="tab:blue",
            alpha=0.18,
            label="forecast interval",
        )
        ax.plot(times, scored.yhat[row], color="tab:blue", lw=0.8, label="forecast")
        ax.plot(times, y, color="black", lw=0.9, label="actual")
        bad = np.nan_to_num(s, nan=0.0) > 1
        ax.scatter(np.array(times)[bad], y[bad], color="red", s=14, zorder=3, label="anomaly")
        ax.set_title(batch.keys[row], fontsize=9, loc="left")
        ax.legend(loc="upper left", fontsize=7, ncol=4)
        sax.plot(times, s, color="tab:red", lw=0.8)
        sax.axhline(1.0, color="gray", ls="--", lw=0.8)
        sax.set_ylabel("score", fontsize=8)
        peak = float(np.nanmax(s, initial=0.0))
        sax.set_ylim(0, min(max(2.0, peak * 1.1), 20.0))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
