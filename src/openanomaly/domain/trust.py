"""When a model has seen enough history for its scores to be written: one rule, stated here
and in the README.

A model trained on minutes of a series cannot know its spread: with minutes of data against a
14-day window the first windows flagged 6 of 55 points where 1 in 1,000 was expected. So a
pipeline writes no score and no band until the history its active model was trained on spans
at least ``required_history(train.window)``: a quarter of the window, at most one day (14d ->
1d, 1d -> 6h, 1h -> 15 min). The trainer records the span; the inferencer checks it; the
pipeline's status says why nothing is written yet.
"""

from __future__ import annotations

import numpy as np

from openanomaly.domain.series import SeriesBatch

DAY = 86_400

HISTORY_KEY = "history_start"
"""``ModelVersion.extra`` key: unix seconds of the first point the model was trained on."""


def required_history(window: int) -> int:
    """Seconds of history a model needs before its pipeline's scores are written."""
    return min(window // 4, DAY)


def untrusted_reason(window: int, history_start: int | None, train_end: int) -> str | None:
    """Why scores are not written yet, or None when the model has seen enough history."""
    if history_start is None:
        return None  # a model with no recorded span (no fit, or trained before this rule)
    have, need = max(0, train_end - history_start), required_history(window)
    if have >= need:
        return None
    return (
        f"trained on {have}s of history, needs {need}s (a quarter of train.window, at most "
        "a day) before scores are written"
    )


def first_point(history: SeriesBatch) -> int:
    """Unix seconds of the first sample of any series in ``history`` (its grid's end if none)."""
    present = np.isfinite(history.values).any(axis=0)
    if not present.any():
        return int(history.timestamps[-1]) if history.timestamps.size else 0
    return int(history.timestamps[int(np.argmax(present))])
