"""The pipeline: what a user writes, validated at the edge.

```yaml
- id: api-latency
  query: sum by (service) (rate(http_requests_total[5m]))
  step: 1m
  train: {window: 14d, every: 1d}
  infer: {every: 1m, context: 1d}
  model: {engine: statsforecast, name: AutoETS, params: {season_length: 1440}}
  scoring: {direction: above, interval: 0.99, min_deviation: 0.05}
  outputs: {labels: {team: payments}}
```
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from openanomaly.domain.durations import Duration, format_duration

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_METRIC = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainSpec(_Spec):
    """How much history to fit on and how often to refit (``every`` or a 5-field ``cron``)."""

    window: Duration = 7 * 86400
    every: Duration | None = 86400
    cron: str | None = None

    @field_validator("cron")
    @classmethod
    def _cron_fields(cls, v: str | None) -> str | None:
        if v is not None and len(v.split()) != 5:
            raise ValueError(f"cron needs 5 fields (minute hour day month weekday): {v!r}")
        return v


class InferSpec(_Spec):
    """How often to score new points, how much history a model sees, how late data may arrive."""

    every: Duration = 60
    context: Duration = 3600
    delay: Duration | None = None
    max_catchup: Duration = 3600


class ModelSpec(_Spec):
    """``engine`` picks the library, ``name`` its model (default: the engine's own default),
    ``params`` go to the model's constructor. ``band_floor: profile`` (the default) keeps each
    side of the engine's band at least the built-in profile's (``engines/floor.py``); ``none``
    leaves the engine's own band (and no forecast where the engine has none)."""

    engine: str = "builtin"
    name: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    band_floor: Literal["profile", "none"] = "profile"


class ScoringSpec(_Spec):
    """How reality is compared with the forecast interval.

    ``interval`` is the central probability of the forecast band (default 0.999: at 0.99 a
    well-calibrated band is crossed by one point in a hundred, several alerts a day for a
    5-minute metric); ``min_deviation`` is the smallest absolute distance from ``yhat`` that
    may count as anomalous (the band is widened to it); ``data_range`` clips the band to values
    the metric can take (e.g. ``[0, null]``).
    """

    direction: Literal["both", "above", "below"] = "both"
    interval: float = Field(0.999, gt=0.5, lt=1.0)
    min_deviation: float = Field(0.0, ge=0.0)
    data_range: tuple[float | None, float | None] | None = None

    @field_validator("data_range")
    @classmethod
    def _ordered(
        cls, v: tuple[float | None, float | None] | None
    ) -> tuple[float | None, float | None] | None:
        if v is not None and v[0] is not None and v[1] is not None and v[0] >= v[1]:
            raise ValueError(f"data_range must be [low, high] with low < high, got {list(v)}")
        return v


class OutputSpec(_Spec):
    """Names and extra labels of the written series; ``future`` opts in to forecast points ahead
    of now (only for TSDBs that accept them, never vanilla Prometheus)."""

    score: str = "anomaly_score"
    pred: str | None = "anomaly_pred"
    lower: str | None = "anomaly_lower"
    upper: str | None = "anomaly_upper"
    source_label: str = "source_metric"
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("score", "pred", "lower", "upper")
    @classmethod
    def _metric_name(cls, v: str | None) -> str | None:
        if v is not None and not _METRIC.match(v):
            raise ValueError(f"not a valid metric name: {v!r}")
        return v

    @field_validator("labels")
    @classmethod
    def _label_names(cls, v: dict[str, str]) -> dict[str, str]:
        bad = [k for k in v if not _LABEL.match(k) or k.startswith("__")]
        if bad:
            raise ValueError(f"not valid label names: {bad}")
        return v


class Pipeline(_Spec):
    id: str
    query: str = Field(min_length=1)
    step: Duration = 60
    train: TrainSpec = Field(default_factory=TrainSpec)
    infer: InferSpec = Field(default_factory=InferSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    scoring: ScoringSpec = Field(default_factory=ScoringSpec)
    outputs: OutputSpec = Field(default_factory=OutputSpec)
    shards: int = Field(1, ge=1, le=1024)
    """Series split by a hash of their labels into this many shards, each trained and
    inferred by its own job (domain/shards.py); 1: one job for the whole query."""
    enabled: bool = True

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(
                f"id must be 1-63 chars of a-z, 0-9, '_', '.', '-' starting alphanumeric: {v!r}"
            )
        return v

    @model_validator(mode="after")
    def _windows_fit_step(self) -> Pipeline:
        for name, value in (
            ("train.window", self.train.window),
            ("infer.every", self.infer.every),
            ("infer.context", self.infer.context),
        ):
            if value < self.step:
                raise ValueError(
                    f"{name} ({format_duration(value)}) is shorter than step "
                    f"({format_duration(self.step)})"
                )
        if self.infer.every % self.step:
            raise ValueError(
                f"infer.every ({format_duration(self.infer.every)}) must be a multiple of step "
                f"({format_duration(self.step)})"
            )
        return self

    @property
    def delay(self) -> int:
        """How long after a step ends its sample is trusted to be in the TSDB."""
        return self.infer.delay if self.infer.delay is not None else self.step


class PipelineFile(_Spec):
    pipelines: list[Pipeline] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids(self) -> PipelineFile:
        seen: set[str] = set()
        dups = {p.id for p in self.pipelines if p.id in seen or seen.add(p.id)}  # type: ignore[func-returns-value]
        if dups:
            raise ValueError(f"duplicate pipeline ids: {sorted(dups)}")
        return self


def spec_hash(pipeline: Pipeline) -> str:
    """A short hash of what makes a fitted model valid: query, step, model spec and the shard
    count (left out at 1, so that an unsharded pipeline keeps the hash it had)."""
    text = pipeline.model_dump_json(include={"query", "step", "model"})
    if pipeline.shards != 1:
        text += f"|shards={pipeline.shards}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]
