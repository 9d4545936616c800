"""No score until the model has seen enough history; the learned floor at 0; flavour detection."""

import logging

import httpx
import numpy as np
import pytest

from openanomaly.adapters.memory import (
    MemoryArtifactStore,
    MemoryEngineFactory,
    MemoryMetrics,
    MemoryRegistry,
)
from openanomaly.adapters.prometheus.probe import detect_flavor
from openanomaly.domain.series import Forecast, SeriesBatch
from openanomaly.domain.spec import Pipeline
from openanomaly.domain.trust import required_history, untrusted_reason
from openanomaly.services.inferencer import Inferencer, floor_at_zero
from openanomaly.services.trainer import Trainer

STEP = 60
T0 = 1_700_000_000 - 1_700_000_000 % 3600


def test_the_rule_is_a_quarter_of_the_window_at_most_a_day() -> None:
    assert required_history(14 * 86400) == 86400
    assert required_history(3600) == 900
    assert untrusted_reason(3600, T0, T0 + 900) is None
    assert "needs 900s" in str(untrusted_reason(3600, T0, T0 + 899))
    assert untrusted_reason(3600, None, T0) is None  # a version from before the rule


def _world(hours: float) -> tuple[Trainer, Inferencer, MemoryMetrics]:
    ts = np.arange(T0, T0 + int(hours * 3600), STEP)
    values = 5 + np.random.default_rng(0).normal(0, 1, size=(2, ts.size))
    labels = tuple({"__name__": "m", "host": f"h{i}"} for i in range(2))
    metrics = MemoryMetrics({"m": SeriesBatch(labels, ts, values)})
    registry, artifacts, engines = MemoryRegistry(), MemoryArtifactStore(), MemoryEngineFactory()
    trainer = Trainer(reader=metrics, engines=engines, artifacts=artifacts, registry=registry)
    inferencer = Inferencer(
        reader=metrics,
        writer=metrics,
        engines=engines,
        artifacts=artifacts,
        registry=registry,
        checkpoints=registry,
    )
    return trainer, inferencer, metrics


def _pipeline(window: str) -> Pipeline:
    return Pipeline.model_validate(
        {
            "id": "p1",
            "query": "m",
            "step": "1m",
            "train": {"window": window},
            "infer": {"every": "5m", "context": "30m", "delay": "1s"},
        }
    )


def test_a_model_trained_on_too_little_history_writes_nothing_and_says_why_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    trainer, inferencer, metrics = _world(hours=2)  # 2 h of data, a 14-day window wants 1 day
    p = _pipeline("14d")
    trainer.train(p, end=T0 + 3600)
    with caplog.at_level(logging.WARNING):
        first = inferencer.infer(p, T0 + 3600, T0 + 3900)
        second = inferencer.infer(p, T0 + 3900, T0 + 4200)
    assert first.points > 0 and first.samples_written == 0 and not metrics.written
    assert first.waiting is not None and "needs 86400s" in first.waiting
    assert second.waiting == first.waiting
    assert sum("writes no score yet" in r.message for r in caplog.records) == 1


def test_a_model_trained_on_enough_history_writes() -> None:
    trainer, inferencer, metrics = _world(hours=2)
    p = _pipeline("1h")  # needs 15 min; trained on a full hour
    trainer.train(p, end=T0 + 3600)
    result = inferencer.infer(p, T0 + 3600, T0 + 3900)
    assert result.waiting is None and result.samples_written > 0 and metrics.written


def test_the_lower_band_of_a_never_negative_series_stops_at_zero() -> None:
    history = np.array([[0.0, 1.0, np.nan], [-1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]])
    band = np.full((3, 2), -0.5)
    f = floor_at_zero(Forecast(np.zeros((3, 2)), band, np.ones((3, 2))), history)
    assert f.lower.tolist() == [[0.0, 0.0], [-0.5, -0.5], [-0.5, -0.5]]
    assert band.tolist() == [[-0.5, -0.5]] * 3  # the engine's forecast is not changed


def _server(routes: dict[str, tuple[int, str]]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        status, body = routes.get(request.url.path, (404, "404 page not found"))
        return httpx.Response(status, text=body)

    return httpx.Client(transport=httpx.MockTransport(handler))


# What the real servers answered (Prometheus 2.42, VictoriaMetrics 1.x on this machine).
PROMETHEUS = {"/api/v1/status/buildinfo": (200, '{"status":"success","data":{"version":"2.42.0"}}')}
VICTORIA = {"/health": (200, "OK"), "/api/v1/status/buildinfo": (200, '{"data":{}}')}
MIMIR = {
    "/api/v1/status/buildinfo": (
        200,
        '{"status":"success","data":{"application":"Grafana Mimir","version":"2.10.0"}}',
    )
}


@pytest.mark.parametrize(
    ("routes", "flavor"),
    [(PROMETHEUS, "prometheus"), (VICTORIA, "victoriametrics"), (MIMIR, "mimir")],
)
def test_the_flavor_is_read_from_the_server(
    routes: dict[str, tuple[int, str]], flavor: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), _server(routes) as client:
        assert detect_flavor("http://tsdb", client) == flavor
    assert f"detected as {flavor}" in caplog.text


def test_an_unknown_server_falls_back_to_prometheus_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with _server({}) as client:
        assert detect_flavor("http://tsdb", client) == "prometheus"
    assert "could not tell which TSDB" in caplog.text and "OA_TSDB__FLAVOR" in caplog.text

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with httpx.Client(transport=httpx.MockTransport(down)) as client:
        assert detect_flavor("http://tsdb", client) == "prometheus"
