"""Which windows an inference run scores, from the checkpoint and the clock.

Window ends sit on multiples of ``infer.every`` (itself a multiple of ``step``), so whoever
computes them (the scheduler, a manual run, another process) gets the same windows.
"""

from __future__ import annotations

from itertools import pairwise

from openanomaly.domain.grid import align
from openanomaly.domain.records import InferWindow
from openanomaly.domain.spec import Pipeline


def due_end(pipeline: Pipeline, now: float) -> int:
    """The end of the newest window whose points are all complete at ``now``."""
    return align(now - pipeline.delay, pipeline.infer.every)


def due_window(pipeline: Pipeline, last_end: int | None, now: float) -> InferWindow | None:
    """The range to bring up to date, or None if no new window is complete yet.

    It starts ``infer.max_catchup`` before its end whatever the checkpoint: the Inferencer
    starts at the checkpoint when that is later, and skips (and reports) what lies between an
    older checkpoint and the range. A new pipeline scores the last ``max_catchup``.
    """
    end = due_end(pipeline, now)
    if last_end is not None and end <= last_end:
        return None
    start = -(-(end - pipeline.infer.max_catchup) // pipeline.infer.every) * pipeline.infer.every
    return InferWindow(pipeline.id, min(start, end - pipeline.infer.every), end)


def windows(pipeline: Pipeline, start: int, end: int) -> list[InferWindow]:
    """The ``infer.every`` windows covering ``(start, end]``: their ends are the multiples of
    ``infer.every`` in between, plus ``end`` (on the step grid), so a range that starts or ends
    off that grid still shares its inner windows with the scheduled ones."""
    every = pipeline.infer.every
    first = align(start, pipeline.step)
    last = align(end, pipeline.step)
    inner = range(align(first, every) + every, last, every)
    bounds = [first, *inner, last]
    return [InferWindow(pipeline.id, a, b) for a, b in pairwise(bounds) if b > a]


def points_between(pipeline: Pipeline, start: int, end: int) -> int:
    """How many steps of the grid lie in ``(start, end]``: what a skipped range did not score
    (per series)."""
    return max(0, align(end, pipeline.step) - align(start, pipeline.step)) // pipeline.step
