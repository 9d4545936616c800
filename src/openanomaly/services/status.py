"""A pipeline's status for people: can it run, how did its last train and infer end, how old is
its model, how much did it flag in the last day. The API (``/status``, the list) and
``openanomaly status`` show it.

The points flagged are counted by the TSDB from the written scores (the store keeps no
per-point record): ``sum(count_over_time((<score>{pipeline="id"} > 1)[24h:<step>]))``. It is
None when the TSDB cannot answer; a series that stopped is counted again for up to the TSDB's
lookback (5 minutes) after its last point, so the figure is close, not exact.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from openanomaly.domain.shards import shards
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import OpenAnomalyError
from openanomaly.ports import JobOutcome, MetricsReader, ModelRegistry
from openanomaly.services.health import PipelineHealth
from openanomaly.services.validation import PipelineValidator

DAY = 86_400


@dataclass(frozen=True)
class Model:
    version: str
    created_at: float
    age_seconds: float
    series: int


@dataclass(frozen=True)
class PipelineReport:
    """``state`` is ``ok``, ``broken`` (see ``problems`` and ``broken``) or ``disabled``;
    ``last_error`` is the newest failure of a train or infer job, even if one succeeded since."""

    pipeline_id: str
    enabled: bool
    state: str
    problems: list[str]
    broken: str | None
    waiting: str | None  # runs, but writes no score yet (too little history): domain/trust.py
    last_train: JobOutcome | None
    last_infer: JobOutcome | None
    last_error: str | None
    last_error_at: float | None
    model: Model | None
    flagged_24h: int | None


def report(
    pipeline: Pipeline,
    *,
    validator: PipelineValidator,
    health: PipelineHealth,
    registry: ModelRegistry,
    reader: MetricsReader,
    now: float,
) -> PipelineReport:
    problems = validator.messages(pipeline)
    broken = health.reason(pipeline.id)
    outcomes = health.outcomes(pipeline.id)
    failures = [(o.error_at, f"{k}: {o.error}") for k, o in outcomes.items() if o.error_at]
    error_at, error = max(failures, default=(None, None))
    model = None
    actives = [registry.active(s.key(pipeline.id)) for s in shards(pipeline.shards)]
    if actives and all(a is not None for a in actives):
        # A sharded pipeline is shown as one: its oldest shard model, all shards' series.
        active = min((a for a in actives if a is not None), key=lambda a: a.created_at)
        series = sum(a.series for a in actives if a is not None)
        model = Model(active.version, active.created_at, now - active.created_at, series)
    state = "broken" if problems or broken else "ok" if pipeline.enabled else "disabled"
    return PipelineReport(
        pipeline_id=pipeline.id,
        enabled=pipeline.enabled,
        state=state,
        problems=problems,
        broken=broken,
        waiting=health.waiting_reason(pipeline.id),
        last_train=outcomes.get("train"),
        last_infer=outcomes.get("infer"),
        last_error=error,
        last_error_at=error_at,
        model=model,
        flagged_24h=flagged(reader, pipeline, now),
    )


def flagged(reader: MetricsReader, pipeline: Pipeline, now: float) -> int | None:
    """Points scored above 1 in the 24 hours before ``now``; None if the TSDB cannot say."""
    step = pipeline.step
    selector = f"{pipeline.outputs.score}{{pipeline={json.dumps(pipeline.id)}}}"
    query = f"sum(count_over_time(({selector} > 1)[{DAY}s:{step}s]))"
    end = int(now) // step * step
    try:
        batch = reader.query_range(query, end - step, end, step)
    except OpenAnomalyError:
        return None
    if len(batch) == 0:
        return 0  # nothing above 1: the sum of nothing is no series
    finite = [v for v in batch.values[0].tolist() if math.isfinite(v)]
    return int(finite[-1]) if finite else 0
