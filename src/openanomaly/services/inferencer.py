"""The Inferencer: score a range window by window and write each window exactly once.

A range (a live window, a catch-up after an outage, a new pipeline's first ``max_catchup``)
is read once with its context, cut into ``infer.every`` windows scored each from its own
context, as the live service would have scored them, and written in time order. For each
window: journal it, write it, then move the checkpoint (fenced by the pipeline's lease). A
window found journalled and not committed (a crash, a failed write) is completed by sending
only the samples the TSDB does not hold yet. Windows older than the TSDB takes are skipped,
and said so.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from openanomaly.domain.outputs import build_outputs
from openanomaly.domain.records import InferResult, InferWindow, ModelVersion, OutputSeries
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.shards import WHOLE, Shard
from openanomaly.domain.spec import Pipeline, spec_hash
from openanomaly.domain.text import phases
from openanomaly.domain.trust import HISTORY_KEY, untrusted_reason
from openanomaly.domain.windows import points_between, windows
from openanomaly.errors import WriteUncertain
from openanomaly.ports import (
    ArtifactStore,
    CheckpointStore,
    EngineFactory,
    MetricsReader,
    MetricsWriter,
    ModelEngine,
    ModelRegistry,
    SampleReader,
)
from openanomaly.services.cache import ModelCache
from openanomaly.services.recovery import drop_before, missing, output_selector
from openanomaly.services.shards import read, roll_up, start_state
from openanomaly.services.window_scores import WindowScores, score_window

log = logging.getLogger(__name__)


RECOVER_ATTEMPTS = 2
RECOVER_BACKOFF = 0.5
"""Seconds before the first read-back after a write of unknown outcome, doubled each time."""


@dataclass(frozen=True)
class _Run:
    """What every window of one run shares: the range read once, the model, the journalled
    window to complete (if any), the lease owner fencing the commits, the tally; ``key`` is
    where the shard's checkpoint and journal live (the pipeline's id when unsharded)."""

    pipeline: Pipeline
    key: str
    batch: SeriesBatch
    model: ModelEngine | None
    pending: tuple[int, int] | None
    owner: str | None
    result: InferResult


class Inferencer:
    def __init__(
        self,
        *,
        reader: MetricsReader,
        writer: MetricsWriter,
        engines: EngineFactory,
        artifacts: ArtifactStore,
        registry: ModelRegistry,
        checkpoints: CheckpointStore,
        samples: SampleReader | None = None,
        cache: ModelCache | None = None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._engines = engines
        self._artifacts = artifacts
        self._registry = registry
        self._checkpoints = checkpoints
        self._samples = samples
        self._cache = cache or ModelCache()
        self._told_waiting: set[tuple[str, str]] = set()

    def infer(
        self,
        pipeline: Pipeline,
        start: int,
        end: int,
        *,
        owner: str | None = None,
        shard: Shard = WHOLE,
    ) -> InferResult:
        """Bring the outputs of ``shard``'s series up to ``end``, scoring nothing at or before
        ``start`` nor before the shard's checkpoint; ``owner`` (the lease holder of the shard)
        fences every journal and checkpoint move.
        """
        t0 = time.perf_counter()
        key = shard.key(pipeline.id)
        state = start_state(self._checkpoints, pipeline.id, shard)
        first = start if state.last_end is None else max(start, state.last_end)
        result = InferResult(pipeline.id, first, end)
        plan = windows(pipeline, first, end)
        if not plan:
            return result
        batch = read(self._reader, pipeline, plan[0].start - pipeline.infer.context, end, shard)
        result.timings["read"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        version = self._active(pipeline, key)
        model = self._model(pipeline, version, key)
        result.model_version = version.version if version else None
        result.waiting = self._untrusted(pipeline, version)
        result.timings["model"] = time.perf_counter() - t1
        run = _Run(pipeline, key, batch, model, state.pending, owner, result)
        if state.last_end is not None and state.last_end < start:
            self._skip(run, state.last_end, start, "catchup")
        for w in self._writable(run, plan):
            self._window(run, w)
        roll_up(self._checkpoints, pipeline)
        log.info(
            "inferred pipeline=%s range=(%d,%d] windows=%d series=%d points=%d anomalies=%d "
            "cold=%d samples=%d recovered=%d %s",
            key,
            result.start,
            end,
            result.windows,
            result.series,
            result.points,
            result.anomalies,
            result.cold_series,
            result.samples_written,
            result.recovered,
            phases(result.timings),
        )
        return result

    def _window(self, run: _Run, w: InferWindow) -> None:
        """Score, journal, write (only what is missing if an earlier run may have written
        part of it), commit."""
        pipeline, result = run.pipeline, run.result
        scores = score_window(
            pipeline, run.batch, start=w.start, end=w.end, model=run.model, engines=self._engines
        )
        outputs: Sequence[OutputSeries] = build_outputs(
            scores.batch.labels, scores.batch.timestamps, scores.scored, pipeline
        )
        if result.waiting is not None:
            outputs = []  # the model has not seen enough history yet: domain/trust.py
        outputs, too_old = drop_before(outputs, self._writer.oldest_accepted())
        t0 = time.perf_counter()
        if outputs:
            self._checkpoints.begin(run.key, w.start, w.end, owner=run.owner)
            if run.pending is not None and run.pending[0] < w.end and w.start < run.pending[1]:
                outputs = self._missing(pipeline, outputs, w)
                result.recovered += 1
            result.samples_written += self._write(pipeline, outputs, w)
        result.timings["write"] = result.timings.get("write", 0.0) + time.perf_counter() - t0
        self._checkpoints.advance(run.key, w.end, owner=run.owner)
        if too_old:
            result.skipped["too_old"] = result.skipped.get("too_old", 0) + too_old
            log.warning(
                "pipeline=%s window=(%d,%d]: %d points not written, older than the TSDB takes",
                pipeline.id,
                w.start,
                w.end,
                too_old,
            )
        _tally(result, scores)

    def _write(self, pipeline: Pipeline, outputs: Sequence[OutputSeries], w: InferWindow) -> int:
        """Write; when a request's fate is unknown, read back and send what is missing (a
        retry that cannot duplicate), a few times before leaving the window to the next run."""
        attempt = 0
        while True:
            try:
                return self._writer.write(outputs) if outputs else 0
            except WriteUncertain as exc:
                attempt += 1
                if attempt > RECOVER_ATTEMPTS or self._samples is None:
                    raise
                log.warning("pipeline=%s window=(%d,%d]: %s", pipeline.id, w.start, w.end, exc)
                time.sleep(RECOVER_BACKOFF * 2 ** (attempt - 1))
                outputs = self._missing(pipeline, outputs, w)

    def _missing(
        self, pipeline: Pipeline, outputs: Sequence[OutputSeries], w: InferWindow
    ) -> list[OutputSeries]:
        if self._samples is None:
            raise RuntimeError("recovering a window needs a SampleReader")
        present = self._samples.timestamps(output_selector(pipeline), w.start, w.end)
        todo = missing(outputs, present)
        log.warning(
            "pipeline=%s window=(%d,%d] was interrupted: %d of %d samples already in the TSDB, "
            "sending the other %d",
            pipeline.id,
            w.start,
            w.end,
            sum(s.timestamps.size for s in outputs) - sum(s.timestamps.size for s in todo),
            sum(s.timestamps.size for s in outputs),
            sum(s.timestamps.size for s in todo),
        )
        return todo

    def _writable(self, run: _Run, plan: list[InferWindow]) -> list[InferWindow]:
        """The windows with samples the TSDB still takes; the checkpoint moves over the rest."""
        oldest = self._writer.oldest_accepted()
        if oldest is None or plan[0].end >= oldest:
            return plan
        keep = [w for w in plan if w.end >= oldest]
        last_old = plan[len(plan) - len(keep) - 1].end
        self._skip(run, plan[0].start, last_old, "too_old")
        return keep

    def _skip(self, run: _Run, start: int, end: int, reason: str) -> None:
        """Move the checkpoint over ``(start, end]`` unscored, and say how much that is."""
        pipeline, result, series = run.pipeline, run.result, len(run.batch)
        points = points_between(pipeline, start, end) * series
        why = {
            "catchup": "the outage is longer than infer.max_catchup",
            "too_old": "older than the TSDB accepts (its write horizon)",
        }[reason]
        log.warning(
            "pipeline=%s skipped (%d,%d]: %d points (%d series) not scored: %s",
            pipeline.id,
            start,
            end,
            points,
            series,
            why,
        )
        result.skipped[reason] = result.skipped.get(reason, 0) + points
        self._checkpoints.advance(run.key, end, owner=run.owner)

    def _untrusted(self, pipeline: Pipeline, version: ModelVersion | None) -> str | None:
        """Why this window's scores are not written (logged once per model version)."""
        if version is None or HISTORY_KEY not in version.extra:
            return None
        reason = untrusted_reason(
            pipeline.train.window, int(version.extra[HISTORY_KEY]), version.train_end
        )
        if reason is not None and (pipeline.id, version.version) not in self._told_waiting:
            self._told_waiting.add((pipeline.id, version.version))
            log.warning("pipeline=%s writes no score yet: %s", pipeline.id, reason)
        return reason

    def _active(self, pipeline: Pipeline, key: str) -> ModelVersion | None:
        version = self._registry.active(key)
        if version is not None and version.spec_hash != spec_hash(pipeline):
            log.warning(
                "pipeline=%s model changed since version %s was trained: cold start until the "
                "next train",
                pipeline.id,
                version.version,
            )
            return None
        return version

    def _model(
        self, pipeline: Pipeline, version: ModelVersion | None, shard_key: str
    ) -> ModelEngine | None:
        """The active fitted model; without one, the engine itself if it needs no fit. A version
        without an artifact of an engine that needs one was fitted on no series (an empty
        shard): no model, every series that comes is cold-started."""
        key = (shard_key, version.version if version else f"unfitted-{spec_hash(pipeline)}")
        model = self._cache.get(key)
        if model is None:
            if version is None or version.artifact is None:
                model = self._engines.create(pipeline.model, step=pipeline.step)
                if model.requires_fit:
                    return None
            else:
                data = self._artifacts.load(version.artifact)
                model = self._engines.load(pipeline.model, data, step=pipeline.step)
            self._cache.put(key, model)
        return model


def _tally(result: InferResult, scores: WindowScores) -> None:
    s = scores.scored.score
    result.windows += 1
    result.series = max(result.series, len(scores.batch))
    result.points += int(np.isfinite(s).sum())
    result.anomalies += int((s > 1).sum())
    result.cold_series = max(result.cold_series, scores.cold)
    for phase, seconds in (("model", scores.model_seconds), ("score", scores.score_seconds)):
        result.timings[phase] = result.timings.get(phase, 0.0) + seconds


__all__ = ["InferResult", "Inferencer", "WindowScores", "score_window"]
