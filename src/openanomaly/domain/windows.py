"""Which window an inference run should score, from the checkpoint and the clock."""

from __future__ import annotations

from itertools import pairwise

from openanomaly.domain.grid import align
from openanomaly.domain.records import InferWindow
from openanomaly.domain.spec import Pipeline


def due_window(pipeline: Pipeline, last_end: int | None, now: float) -> InferWindow | None:
    """The window from the last checkpoint up to the latest complete step, or None if no new
    step is complete yet. A long outage is not replayed past ``infer.max_catchup``, and a new
    pipeline starts by scoring that much of the recent past."""
    end = align(now - pipeline.delay, pipeline.step)
    start = end - pipeline.infer.max_catchup if last_end is None else last_end
    start = max(start, end - pipeline.infer.max_catchup)
    if end <= start:
        return None
    return InferWindow(pipeline.id, start, end)


def windows(pipeline: Pipeline, start: int, end: int) -> list[InferWindow]:
    """Production-sized windows (``infer.every``) covering ``(start, end]`` on the step grid."""
    every = pipeline.infer.every
    first = align(start, pipeline.step)
    bounds = [*range(first, end, every), align(end, pipeline.step)]
    return [InferWindow(pipeline.id, a, b) for a, b in pairwise(bounds) if b > a]
