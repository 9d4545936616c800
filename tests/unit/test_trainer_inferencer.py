"""Trainer, Inferencer, windows and backtest against the in-memory fakes."""

import logging
import re
from typing import Any, Self

import numpy as np
import pytest

from openanomaly.adapters.memory import (
    MeanEngine,
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryMetrics,
    MemoryRegistry,
)
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import ModelSpec, Pipeline
from openanomaly.domain.windows import due_window, windows
from openanomaly.errors import EngineError, NoData, NotEnoughHistory
from openanomaly.services.backtest import backtest
from openanomaly.services.inferencer import Inferencer
from openanomaly.services.trainer import Trainer

STEP = 60
T0 = 1_700_000_040 - 1_700_000_040 % 3600


def panel(n_series: int = 3, hours: int = 6, seed: int = 0) -> SeriesBatch:
    rng = np.random.default_rng(seed)
    ts = np.arange(T0, T0 + hours * 3600, STEP)
    values = 100 + rng.normal(0, 1, size=(n_series, ts.size))
    labels = tuple({"__name__": "m", "host": f"h{i}"} for i in range(n_series))
    return SeriesBatch(labels, ts, values)


def pipeline(**kw: object) -> Pipeline:
    base = {
        "id": "p1",
        "query": "m",
        "step": "1m",
        "train": {"window": "2h"},
        "infer": {"every": "5m", "context": "30m", "delay": "1s"},
    }
    return Pipeline.model_validate({**base, **kw})


@pytest.fixture
def world() -> dict[str, Any]:
    metrics = MemoryMetrics({"m": panel()})
    registry = MemoryRegistry()
    artifacts = MemoryArtifactStore()
    engines = MemoryEngineFactory()
    trainer = Trainer(reader=metrics, engines=engines, artifacts=artifacts, registry=registry)
    inferencer = Inferencer(
        reader=metrics,
        writer=metrics,
        engines=engines,
        artifacts=artifacts,
        registry=registry,
        checkpoints=registry,
    )
    return {
        "metrics": metrics,
        "registry": registry,
        "artifacts": artifacts,
        "engines": engines,
        "trainer": trainer,
        "inferencer": inferencer,
    }


def test_train_saves_artifact_and_activates_version(world: dict[str, Any]) -> None:
    p = pipeline()
    v = world["trainer"].train(p, end=T0 + 3 * 3600)
    assert v.series == 3
    assert v.artifact in world["artifacts"].saved
    assert world["registry"].active("p1") == v
    assert v.train_end - v.train_start == 7200
    again = world["trainer"].train(p, end=T0 + 3 * 3600)
    assert again.version == v.version  # same window -> same version id (retry-safe)


def test_training_and_window_log_their_phases(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """Where a job's time went is in its log line (``name=<seconds>s``): the scale bench and an
    operator reading a worker's log take the phases from there."""
    p = pipeline()
    with caplog.at_level(logging.INFO, logger="openanomaly.services"):
        world["trainer"].train(p, end=T0 + 3 * 3600)
        world["inferencer"].infer(p, T0 + 3 * 3600, T0 + 3 * 3600 + 300)
    trained, inferred = (
        next(r.getMessage() for r in caplog.records if r.getMessage().startswith(verb))
        for verb in ("trained", "inferred")
    )
    phase = r"=\d+\.\d\ds\b"
    for name in ("fit", "read", "model", "save"):
        assert re.search(rf"\b{name}{phase}", trained), trained
    for name in ("read", "model", "score", "write"):
        assert re.search(rf"\b{name}{phase}", inferred), inferred


def test_train_without_data_raises_nodata(world: dict[str, Any]) -> None:
    with pytest.raises(NoData, match="no data"):
        world["trainer"].train(pipeline(query="absent"), end=T0 + 3600)


def test_infer_writes_four_series_per_input_at_observation_timestamps(
    world: dict[str, Any],
) -> None:
    p = pipeline(outputs={"labels": {"team": "sre"}})
    world["trainer"].train(p, end=T0 + 3 * 3600)
    start, end = T0 + 3 * 3600, T0 + 3 * 3600 + 300
    r = world["inferencer"].infer(p, start, end)
    assert (r.series, r.points, r.cold_series) == (3, 15, 0)
    m: MemoryMetrics = world["metrics"]
    scores = m.samples("anomaly_score")
    assert len(scores) == 3
    for key, points in scores.items():
        labels = dict(key)
        assert labels["source_metric"] == "m" and labels["pipeline"] == "p1"
        assert labels["team"] == "sre" and "host" in labels
        assert sorted(points) == list(range(start + 60, end + 1, 60))
    for name in ("anomaly_pred", "anomaly_lower", "anomaly_upper"):
        assert len(m.samples(name)) == 3
    assert world["registry"].last_end("p1") == end


def test_same_window_twice_writes_it_once(world: dict[str, Any]) -> None:
    p = pipeline()
    world["trainer"].train(p, end=T0 + 3 * 3600)
    m: MemoryMetrics = world["metrics"]
    first = world["inferencer"].infer(p, T0 + 4 * 3600, T0 + 4 * 3600 + 300)
    again = world["inferencer"].infer(p, T0 + 4 * 3600, T0 + 4 * 3600 + 300)
    assert first.samples_written == 60 and again.samples_written == 0
    assert m.duplicates() == 0 and len(m.written) == 60


def test_spike_scores_above_one(world: dict[str, Any]) -> None:
    m: MemoryMetrics = world["metrics"]
    b = m.batches["m"]
    b.values[1, 250] += 50
    p = pipeline()
    world["trainer"].train(p, end=T0 + 3 * 3600)
    ts = int(b.timestamps[250])
    world["inferencer"].infer(p, ts - 300, ts)
    spike = [pts[ts] for k, pts in m.samples("anomaly_score").items() if ("host", "h1") in k]
    assert spike[0] > 1


def test_new_series_after_training_gets_cold_start(world: dict[str, Any]) -> None:
    p = pipeline()
    world["trainer"].train(p, end=T0 + 3 * 3600)
    m: MemoryMetrics = world["metrics"]
    b = m.batches["m"]
    extra = SeriesBatch(
        ({"__name__": "m", "host": "new"},), b.timestamps, np.full((1, b.timestamps.size), 5.0)
    )
    m.batches["m"] = SeriesBatch(
        b.labels + extra.labels, b.timestamps, np.vstack([b.values, extra.values])
    )
    r = world["inferencer"].infer(p, T0 + 4 * 3600, T0 + 4 * 3600 + 300)
    assert (r.series, r.cold_series) == (4, 1)
    assert any(("host", "new") in k for k in m.samples("anomaly_score"))


def test_no_model_yet_scores_everything_cold(world: dict[str, Any]) -> None:
    r = world["inferencer"].infer(pipeline(), T0 + 3600, T0 + 3600 + 300)
    assert r.cold_series == 3 and r.points == 15


def test_model_cached_per_version(world: dict[str, Any]) -> None:
    p = pipeline()
    world["trainer"].train(p, end=T0 + 3 * 3600)
    for k in range(3):
        world["inferencer"].infer(p, T0 + 4 * 3600 + k * 300, T0 + 4 * 3600 + (k + 1) * 300)
    assert world["engines"].loaded == 1


def test_missing_points_write_nothing_for_them(world: dict[str, Any]) -> None:
    m: MemoryMetrics = world["metrics"]
    m.batches["m"].values[0, 241:244] = np.nan
    p = pipeline()
    world["trainer"].train(p, end=T0 + 3 * 3600)
    ts = m.batches["m"].timestamps
    world["inferencer"].infer(p, int(ts[239]), int(ts[244]))
    h0 = next(pts for k, pts in m.samples("anomaly_score").items() if ("host", "h0") in k)
    assert sorted(h0) == [int(ts[240]), int(ts[244])]


def test_due_window_catches_up_from_checkpoint_and_bounds_outages() -> None:
    p = pipeline()
    now = T0 + 1000
    w = due_window(p, None, now)
    assert w is not None and w.end == T0 + 900 and w.start == w.end - p.infer.max_catchup
    assert due_window(p, w.end, now) is None
    late = due_window(p, w.end, now + 10 * 3600)
    assert late is not None and late.end - late.start == p.infer.max_catchup
    assert late.end % p.infer.every == 0  # the same windows whoever computes them


def test_windows_are_production_sized() -> None:
    ws = windows(pipeline(), T0, T0 + 3600)
    assert len(ws) == 12 and all(w.end - w.start == 300 for w in ws)
    assert ws[0].start == T0 and ws[-1].end == T0 + 3600


def test_backtest_flags_the_injected_spike_only(world: dict[str, Any]) -> None:
    m: MemoryMetrics = world["metrics"]
    m.batches["m"].values[2, 300] += 40
    result = backtest(pipeline(), m, world["engines"], start=T0 + 3 * 3600, end=T0 + 6 * 3600 - 60)
    assert result.windows == 36 and result.trains >= 1
    spikes = [e for e in result.events if e.peak > 5]
    assert [(e.series, e.start) for e in spikes] == [
        ('m{host="h2"}', int(m.batches["m"].timestamps[300]))
    ]
    assert m.written == []


class _NeedsTwoHours(MeanEngine):
    """Refuses to fit on less than two hours of data, as ML engines do on short histories."""

    def fit(self, history: SeriesBatch) -> Self:
        if np.count_nonzero(~np.isnan(history.values[0])) < 120:
            raise NotEnoughHistory("need two hours")
        return super().fit(history)


class _EnginesOf(MemoryEngineFactory):
    """The fake factory, creating ``engine`` instead of MeanEngine."""

    def __init__(self, engine: type[MeanEngine]) -> None:
        super().__init__()
        self._engine = engine

    def create(self, spec: ModelSpec, *, step: int) -> MeanEngine:
        self.created += 1
        return self._engine()


def test_backtest_keeps_the_cold_start_model_until_the_history_suffices() -> None:
    metrics = MemoryMetrics({"m": panel(hours=4)})
    p = pipeline(train={"window": "2h", "every": "30m"})
    # The first fit sees one hour: refused, so the first windows are scored by the cold start.
    engines = _EnginesOf(_NeedsTwoHours)
    result = backtest(p, metrics, engines, start=T0 + 3600, end=T0 + 4 * 3600 - 60)
    assert result.trains == 4  # the fits at 2h, 2h30, 3h and 3h30 succeed
    assert np.isfinite(result.scored.score).all()


class _BadParameter(MeanEngine):
    def fit(self, history: SeriesBatch) -> Self:
        raise EngineError("num_leaves must be in [2, 131072]")


def test_backtest_does_not_swallow_other_fit_errors() -> None:
    metrics = MemoryMetrics({"m": panel(hours=4)})
    with pytest.raises(EngineError, match="num_leaves"):
        backtest(pipeline(), metrics, _EnginesOf(_BadParameter), start=T0 + 3600, end=T0 + 7200)
