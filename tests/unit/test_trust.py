"""No score until the model has seen enough history; the learned floor at 0; flavour detection."""

import logging
from typing import Any

import httpx
import numpy as np
import pytest

from openanomaly.adapters.prometheus.probe import detect_flavor
from openanomaly.domain.scoring import score
from openanomaly.domain.series import Forecast
from openanomaly.domain.spec import ScoringSpec
from openanomaly.domain.trust import required_history, untrusted_reason
from openanomaly.services.window_scores import floor_at_zero
from tests.unit import test_trainer_inferencer as fakes
from tests.unit.test_trainer_inferencer import T0, pipeline

world = fakes.world  # the Trainer and Inferencer on the in-memory fakes


def test_the_rule_is_a_quarter_of_the_window_at_most_a_day() -> None:
    assert required_history(14 * 86400) == 86400
    assert required_history(3600) == 900
    assert untrusted_reason(3600, T0, T0 + 900) is None
    assert "needs 900s" in str(untrusted_reason(3600, T0, T0 + 899))
    assert untrusted_reason(3600, None, T0) is None  # a version from before the rule


def test_a_model_trained_on_too_little_history_writes_nothing_and_says_why_once(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    p = pipeline(train={"window": "14d"})  # 1 h of history where a 14-day window wants a day
    world["trainer"].train(p, end=T0 + 3600)
    with caplog.at_level(logging.WARNING):
        first = world["inferencer"].infer(p, T0 + 3600, T0 + 3900)
        second = world["inferencer"].infer(p, T0 + 3900, T0 + 4200)
    assert first.points > 0 and first.samples_written == 0 and not world["metrics"].written
    assert first.waiting is not None and "needs 86400s" in first.waiting
    assert second.waiting == first.waiting
    assert sum("writes no score yet" in r.message for r in caplog.records) == 1


def test_a_model_trained_on_enough_history_writes(world: dict[str, Any]) -> None:
    p = pipeline(train={"window": "1h"})  # needs 15 min; trained on a full hour
    world["trainer"].train(p, end=T0 + 3600)
    result = world["inferencer"].infer(p, T0 + 3600, T0 + 3900)
    assert result.waiting is None and result.samples_written > 0 and world["metrics"].written


def test_the_lower_band_of_a_never_negative_series_stops_just_below_zero() -> None:
    history = np.array([[0.0, 1.0, np.nan], [-1.0, 2.0, 3.0], [np.nan, np.nan, np.nan]])
    band = np.full((3, 2), -0.5)
    yhat = np.ones((3, 2))
    f = floor_at_zero(Forecast(yhat, band, np.full((3, 2), 2.0)), history)
    assert f.lower.tolist() == [[-0.1, -0.1], [-0.5, -0.5], [-0.5, -0.5]]
    assert band.tolist() == [[-0.5, -0.5]] * 3  # the engine's forecast is not changed


def test_a_zero_of_a_never_negative_series_is_not_on_the_alarm_line() -> None:
    # An idle CPU at 0 with a band reaching below 0: 0 is normal, not on the edge (score 1).
    history = np.array([[0.0, 3.0, 5.0, 0.0, 4.0]])
    forecast = Forecast(np.full((1, 1), 2.0), np.full((1, 1), -3.0), np.full((1, 1), 7.0))
    s = score(np.zeros((1, 1)), floor_at_zero(forecast, history), ScoringSpec()).score
    assert 0.5 < s[0, 0] < 1.0
    below = Forecast(np.full((1, 1), -1.0), forecast.lower, forecast.upper)
    floored = floor_at_zero(below, history)
    assert floored.lower[0, 0] == -3.0  # never above yhat


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
