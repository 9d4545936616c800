"""The plot's axes: the values labelled by their metric, the score labelled, the time in UTC
with the date and the zone shown, whatever the zone matplotlib was told to use."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np

from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import SeriesBatch
from openanomaly.plot import draw_scored, plot_scored

# 2026-12-02T00:30Z to 01:30Z: the evening of 2026-12-01 in New York.
START = 1796171400
TS = np.arange(START, START + 3600 + 1, 60)


def batch_and_scores() -> tuple[SeriesBatch, Scored]:
    labels = ({"__name__": "http_requests", "instance": "a"}, {"instance": "b"})
    values = np.vstack([np.linspace(10, 20, TS.size), np.linspace(5, 6, TS.size)])
    score = np.full(values.shape, 0.2)
    score[1, 30] = 3.0  # the series without a name scores highest: drawn first
    return SeriesBatch(labels, TS, values), Scored(score, values, values - 1, values + 1)


def test_y_axes_are_labelled_with_the_metric_or_value_and_the_anomaly_score() -> None:
    fig = draw_scored(*batch_and_scores(), title="t")
    try:
        assert [ax.get_ylabel() for ax in fig.axes] == [
            "value",
            "anomaly score",
            "http_requests",
            "anomaly score",
        ]
    finally:
        plt.close(fig)


def test_time_axis_shows_the_date_and_utc_whatever_the_configured_zone() -> None:
    with matplotlib.rc_context({"timezone": "America/New_York"}):
        fig = draw_scored(*batch_and_scores(), title="t")
        try:
            fig.canvas.draw()
            bottom = fig.axes[-1]
            ticks = [t.get_text() for t in bottom.get_xticklabels() if t.get_text()]
            assert bottom.get_xlabel() == "time (UTC)"
            assert bottom.xaxis.get_offset_text().get_text() == "2026-12-02 UTC"
            assert "01:00" in ticks  # UTC hours, not New York's 20:00
            # only the bottom axis carries the time labels
            assert all(not any(t.get_text() for t in ax.get_xticklabels()) for ax in fig.axes[:-1])
        finally:
            plt.close(fig)


def test_plot_scored_writes_a_png(tmp_path: Path) -> None:
    path = plot_scored(*batch_and_scores(), tmp_path / "sub" / "p.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
