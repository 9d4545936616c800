"""Backtest: replay a time range the way production would have run it.

The range (plus the history the first fit and context need) is read once; then the model is
fitted on the train window before the range, refitted every ``train.every``, and every
``infer.every`` window is scored from what preceded it, exactly as the Inferencer would. A fit
refused for too short a history (``NotEnoughHistory``) keeps the current model, or the
cold-start one before any, as a failed training job does in production.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from openanomaly.domain.outputs import build_outputs
from openanomaly.domain.records import OutputSeries
from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import Pipeline
from openanomaly.domain.text import shorten
from openanomaly.domain.windows import windows
from openanomaly.errors import NoData, NotEnoughHistory
from openanomaly.ports import EngineFactory, MetricsReader, MetricsWriter, ModelEngine, SampleReader
from openanomaly.services.inferencer import score_window
from openanomaly.services.recovery import drop_before, missing, output_selector

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Event:
    """A run of consecutive anomalous points of one series."""

    series: str
    start: int
    end: int
    points: int
    peak: float


@dataclass(frozen=True)
class BacktestResult:
    pipeline_id: str
    start: int
    end: int
    batch: SeriesBatch
    scored: Scored
    events: list[Event]
    trains: int
    windows: int
    written: BacktestWrite | None = None
    """What ``write`` sent, when the outputs were written."""

    @property
    def anomalies(self) -> int:
        return int(np.nansum(self.scored.score > 1))

    @property
    def points(self) -> int:
        """Points scored (an input point with a score)."""
        return int(np.isfinite(self.scored.score).sum())


@dataclass(frozen=True)
class BacktestWrite:
    """What writing a backtest's outputs did: samples ``sent``, not sent as ``too_old`` (behind
    the TSDB's write horizon), not sent as ``held`` (at timestamps the TSDB already holds),
    and the TSDB's ``flavor`` when the writer knows it."""

    sent: int
    too_old: int
    held: int
    flavor: str | None


def find_events(batch: SeriesBatch, score: np.ndarray, threshold: float = 1.0) -> list[Event]:
    """Runs of ``score > threshold`` per series, in time order."""
    events: list[Event] = []
    flagged = np.nan_to_num(score, nan=0.0) > threshold
    for row in np.flatnonzero(flagged.any(axis=1)):
        padded = np.concatenate([[False], flagged[row], [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(padded))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            events.append(
                Event(
                    batch.keys[row],
                    int(batch.timestamps[a]),
                    int(batch.timestamps[b - 1]),
                    int(b - a),
                    float(np.nanmax(score[row, a:b])),
                )
            )
    return sorted(events, key=lambda e: (e.start, e.series))


def backtest(
    pipeline: Pipeline,
    reader: MetricsReader,
    engines: EngineFactory,
    *,
    start: int,
    end: int,
    progress: Progress | None = None,
) -> BacktestResult:
    """Score ``(start, end]`` in production-sized steps; nothing is written."""
    lead = max(pipeline.train.window, pipeline.infer.context)
    full = reader.query_range(pipeline.query, start - lead, end, pipeline.step)
    if not len(full):
        raise NoData(shorten(pipeline.query), start - lead, end)
    plan = windows(pipeline, start, end)
    target = full.between(plan[0].start if plan else start, end)
    keys = {k: i for i, k in enumerate(target.keys)}
    cols = {int(t): i for i, t in enumerate(target.timestamps)}
    out = [np.full(target.values.shape, np.nan) for _ in range(4)]
    model: ModelEngine | None = None
    next_train, trains = -(2**62), 0
    for n, w in enumerate(plan):
        if w.start >= next_train:
            try:
                model = _fit(pipeline, engines, full, w.start)
                trains += 1
            except NotEnoughHistory as exc:  # as in production: the current model stays
                log.warning("backtest %s: no refit at %d: %s", pipeline.id, w.start, exc)
            every = pipeline.train.every
            next_train = w.start + every if every else 2**62
        ws = score_window(pipeline, full, start=w.start, end=w.end, model=model, engines=engines)
        rows = [keys[k] for k in ws.batch.keys]
        idx = [cols[int(t)] for t in ws.batch.timestamps]
        for arr, part in zip(
            out, (ws.scored.score, ws.scored.yhat, ws.scored.lower, ws.scored.upper), strict=True
        ):
            arr[np.ix_(rows, idx)] = part
        if progress is not None:
            progress(n + 1, len(plan))
    scored = Scored(*out)
    return BacktestResult(
        pipeline.id,
        start,
        end,
        target,
        scored,
        find_events(target, scored.score),
        trains,
        len(plan),
    )


def _fit(
    pipeline: Pipeline, engines: EngineFactory, full: SeriesBatch, end: int
) -> ModelEngine | None:
    model = engines.create(pipeline.model, step=pipeline.step)
    if not model.requires_fit:
        return model
    history = full.between(end - pipeline.train.window, end)
    present = np.flatnonzero(~np.all(np.isnan(history.values), axis=1))
    if not present.size:
        return None
    return model.fit(history.take(present))


def write_backtest(
    result: BacktestResult,
    pipeline: Pipeline,
    writer: MetricsWriter,
    samples: SampleReader | None,
) -> BacktestResult:
    """Write the replayed outputs; ``result`` with what was sent (``written``).

    Only VictoriaMetrics stores a rewrite (beside the live sample: both copies stay).
    Prometheus, Mimir and Thanos refuse a sample at a timestamp they hold, and with it the whole
    request: there the timestamps already held are read back first and left out (the live
    scores stay), and nothing older than the TSDB's write horizon (Prometheus: about an hour)
    is sent.
    """
    batch = result.batch
    outputs: Sequence[OutputSeries]
    outputs = build_outputs(batch.labels, batch.timestamps, result.scored, pipeline)
    outputs, too_old = drop_before(outputs, writer.oldest_accepted())
    flavor = getattr(writer, "flavor", None)  # a RemoteWriteWriter's resolved flavour
    held = 0
    if flavor != "victoriametrics" and samples is not None and batch.timestamps.size:
        ts = batch.timestamps
        present = samples.timestamps(output_selector(pipeline), int(ts[0]) - 1, int(ts[-1]))
        kept = missing(outputs, present)
        held = _count(outputs) - _count(kept)
        outputs = kept
    sent = writer.write(outputs) if outputs else 0
    return replace(result, written=BacktestWrite(sent, too_old, held, flavor))


def _count(series: Sequence[OutputSeries]) -> int:
    return sum(int(np.isfinite(s.values).sum()) for s in series)
