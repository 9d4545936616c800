"""Checks a pipeline against what can run it: its engine, model and parameters (asked of the
engine factory), its cron expression and the size of its windows. The schema (pydantic) has
already run; this is what it cannot know. The CLI, the API and the config stores call it, so a
pipeline that cannot run is refused where it is written, not found when the service starts."""

from __future__ import annotations

from dataclasses import dataclass

from openanomaly.domain.cron import cron_problem
from openanomaly.domain.durations import format_duration
from openanomaly.domain.spec import Pipeline
from openanomaly.domain.text import shorten
from openanomaly.domain.timeparse import iso
from openanomaly.errors import ConfigError, EngineError, EngineNotInstalled, UnknownModel
from openanomaly.ports import EngineFactory, PipelineStore

Loc = tuple[str, ...]

MAX_RANGE_STEPS = 500_000
"""Most steps one read may span (a dense row of 8-byte floats per series): 347 days at 1m."""


def range_problem(start: int, end: int, step: int, *, limit: int = MAX_RANGE_STEPS) -> str | None:
    """Why ``(start, end]`` at ``step`` is too long to read at once, or None. Checked before any
    array is allocated: ``infer --from 2000-01-01`` is an error, not a MemoryError."""
    if end <= start:
        return f"the range is empty: its end ({iso(end)}) is not after its start ({iso(start)})"
    steps = (end - start) // step
    if steps > limit:
        return (
            f"the range spans {steps:,} steps of {format_duration(step)}, more than the limit of "
            f"{limit:,} ({limit * step // 86400} days at this step): score it in shorter ranges"
        )
    return None


def check_range(start: int, end: int, step: int, *, limit: int = MAX_RANGE_STEPS) -> None:
    """Raise ConfigError with :func:`range_problem`'s message."""
    problem = range_problem(start, end, step, limit=limit)
    if problem:
        raise ConfigError(problem)


@dataclass(frozen=True)
class PipelineValidator:
    """The checks of a pipeline that need the engines (a ``PipelineCheck``).

    Args:
        engines: The factory that knows the engines installed here.
        max_steps: Most steps a window (``train.window``, ``infer.context``) may span.
    """

    engines: EngineFactory
    max_steps: int = MAX_RANGE_STEPS

    def __call__(self, pipeline: Pipeline) -> list[tuple[Loc, str]]:
        return self.problems(pipeline)

    def problems(self, pipeline: Pipeline) -> list[tuple[Loc, str]]:
        """Every problem as (field path, message); empty when the pipeline can run."""
        found = self._model(pipeline)
        if pipeline.train.cron is not None:
            problem = cron_problem(pipeline.train.cron)
            if problem:
                found.append((("train", "cron"), problem))
        for loc, seconds in (
            (("train", "window"), pipeline.train.window),
            (("infer", "context"), pipeline.infer.context),
            (("infer", "max_catchup"), pipeline.infer.max_catchup),
        ):
            if seconds // pipeline.step > self.max_steps:
                found.append(
                    (loc, f"{seconds // pipeline.step:,} steps, more than {self.max_steps:,}")
                )
        return found

    def resolve(self, pipeline: Pipeline) -> Pipeline:
        """``pipeline`` with its model's default name filled in (``EngineFactory.resolve``)."""
        model = self.engines.resolve(pipeline.model)
        return pipeline if model is pipeline.model else pipeline.model_copy(update={"model": model})

    def messages(self, pipeline: Pipeline) -> list[str]:
        """Every problem as ``field.path: message``."""
        return [f"{'.'.join(loc)}: {message}" for loc, message in self.problems(pipeline)]

    def check(self, pipeline: Pipeline) -> None:
        """Raise ConfigError listing every problem as ``field: message``."""
        messages = self.messages(pipeline)
        if messages:
            raise ConfigError("; ".join(messages), where=f"pipeline {pipeline.id!r}")

    def _model(self, pipeline: Pipeline) -> list[tuple[Loc, str]]:
        try:
            self.engines.validate(pipeline.model, step=pipeline.step)
        except UnknownModel as exc:
            field = "engine" if str(exc).startswith("unknown engine ") else "name"
            return [(("model", field), str(exc))]
        except EngineNotInstalled as exc:
            return [(("model", "engine"), str(exc))]
        except EngineError as exc:
            return [(("model", "params"), shorten(str(exc), 500))]
        return []


@dataclass
class ValidatingPipelineStore:
    """A PipelineStore that refuses, on ``put``, a pipeline its validator finds problems in
    (ConfigError naming the fields); reads and deletes pass through, so a pipeline stored before
    a check existed can still be read, shown as broken and deleted. Pipelines are read and
    stored with their model's default name filled in: one from a file that says
    ``name: profile`` and one from the API that says nothing read back the same."""

    inner: PipelineStore
    validator: PipelineValidator

    def list(self) -> list[Pipeline]:
        return [self.validator.resolve(p) for p in self.inner.list()]

    def get(self, pipeline_id: str) -> Pipeline:
        return self.validator.resolve(self.inner.get(pipeline_id))

    def put(self, pipeline: Pipeline) -> None:
        self.validator.check(pipeline)
        self.inner.put(self.validator.resolve(pipeline))

    def delete(self, pipeline_id: str) -> None:
        self.inner.delete(pipeline_id)


@dataclass(frozen=True)
class PipelineStatus:
    """Whether a pipeline can run: what the checks find in its spec, and why it is broken when
    it failed at run time in this process (see ``PipelineHealth``)."""

    pipeline_id: str
    problems: list[str]
    broken: str | None
    waiting: str | None = None  # runs, but writes no score yet: domain/trust.py

    @property
    def ok(self) -> bool:
        return not self.problems and self.broken is None

    def summary(self) -> str:
        """``ok``, or ``broken: <reasons>`` for a table cell."""
        reasons = [*self.problems, *([self.broken] if self.broken else [])]
        if reasons:
            return "broken: " + "; ".join(reasons)
        return f"waiting: {self.waiting}" if self.waiting else "ok"


def pipeline_status(
    pipeline: Pipeline,
    validator: PipelineValidator,
    broken: str | None,
    waiting: str | None = None,
) -> PipelineStatus:
    return PipelineStatus(pipeline.id, validator.messages(pipeline), broken, waiting)
