"""PNG plots of scored series: the actual values, the forecast band, flagged points, the score."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import Labels, SeriesBatch
from openanomaly.services.backtest import BacktestResult

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The date and the zone go in the axis' offset text (bottom right), the ticks keep only what
# changes between them; the time is always UTC, whatever the machine's zone.
OFFSET_FORMATS = [
    "UTC",
    "%Y UTC",
    "%Y-%m UTC",
    "%Y-%m-%d UTC",
    "%Y-%m-%d UTC",
    "%Y-%m-%d %H:%M UTC",
]


def plot_backtest(result: BacktestResult, path: Path, *, max_series: int = 4) -> Path:
    """Draw the ``max_series`` series with the highest peak score (two panels each)."""
    title = f"pipeline {result.pipeline_id}: {len(result.events)} anomalies"
    return plot_scored(result.batch, result.scored, path, title=title, max_series=max_series)


def plot_scored(
    batch: SeriesBatch,
    scored: Scored,
    path: Path,
    *,
    title: str,
    max_series: int = 4,
    spans: Sequence[tuple[int, int]] = (),
) -> Path:
    """Save :func:`draw_scored`'s figure as a PNG at ``path``."""
    import matplotlib.pyplot as plt

    fig = draw_scored(batch, scored, title=title, max_series=max_series, spans=spans)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def draw_scored(
    batch: SeriesBatch,
    scored: Scored,
    *,
    title: str,
    max_series: int = 4,
    spans: Sequence[tuple[int, int]] = (),
) -> Figure:
    """Actual, forecast band and flagged points above, the score below, for the ``max_series``
    series with the highest peak score; ``spans`` (unix seconds, inclusive) are shaded on
    every panel: labelled anomaly windows, say."""
    import matplotlib  # a core dependency, imported only when a plot is drawn

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    peaks = np.nanmax(np.nan_to_num(scored.score, nan=0.0), axis=1, initial=0.0)
    rows = np.argsort(-peaks, kind="stable")[:max_series]
    times = np.array([datetime.fromtimestamp(int(t), UTC) for t in batch.timestamps])
    # matplotlib.dates has no annotations on date2num
    to_num = mdates.date2num
    shaded = [[to_num(datetime.fromtimestamp(t, UTC)) for t in s] for s in spans]  # type: ignore[no-untyped-call]
    fig = plt.figure(figsize=(12, 3.2 * len(rows) + 0.8), layout="constrained")
    fig.get_layout_engine().set(h_pad=0.01)  # type: ignore[union-attr,call-arg]
    # A series' value and score panels close together, the series further apart.
    outer = fig.add_gridspec(len(rows), 1, hspace=0.08)
    axes: list[Axes] = []
    for i, row in enumerate(rows):
        inner = outer[i].subgridspec(2, 1, height_ratios=[3, 1], hspace=0)
        ax = fig.add_subplot(inner[0], sharex=axes[0] if axes else None)
        sax = fig.add_subplot(inner[1], sharex=ax)
        axes += [ax, sax]
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
        ax.scatter(times[bad], y[bad], color="red", s=14, zorder=3, label="anomaly (score > 1)")
        ax.set_title(batch.keys[row], fontsize=9, loc="left")
        ax.set_ylabel(value_label(batch.labels[row]), fontsize=8)
        sax.plot(times, s, color="tab:red", lw=0.8)
        sax.axhline(1.0, color="gray", ls="--", lw=0.8)
        sax.set_ylabel("anomaly score", fontsize=8)
        peak = float(np.nanmax(s, initial=0.0))
        sax.set_ylim(0, min(max(2.0, peak * 1.1), 20.0))
        for k, (left, right) in enumerate(shaded):
            for axis in (ax, sax):
                axis.axvspan(
                    left,
                    right,
                    color="tab:orange",
                    alpha=0.15,
                    lw=0,
                    label="labelled window" if axis is ax and not k else None,
                )
    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
    time_axis(axes[-1])
    fig.suptitle(title, fontsize=11)
    # One legend, above the first series on the right of its title: inside it would hide data.
    axes[0].legend(
        loc="lower right", bbox_to_anchor=(1, 1), ncol=4, fontsize=7, frameon=False, borderaxespad=0
    )
    return fig


def value_label(labels: Labels) -> str:
    """The y label of a series' values: its metric name, when the query kept one."""
    return labels.get("__name__") or "value"


def time_axis(ax: Axes) -> None:
    """Label ``ax``'s (shared) time axis in UTC, with the date and the zone in its offset text."""
    import matplotlib.dates as mdates

    # matplotlib.dates has no annotations on these constructors
    locator = mdates.AutoDateLocator(tz=UTC)  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(  # type: ignore[no-untyped-call]
        locator, tz=UTC, offset_formats=OFFSET_FORMATS
    )
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlabel("time (UTC)", fontsize=8)
