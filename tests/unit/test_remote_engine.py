"""The remote engine and the model server, in process: the engine talks to the app through
Starlette's TestClient, or to an ``httpx.MockTransport`` for protocol edge cases. The same over
real loopback HTTP is in tests/integration/test_remote_engine.py."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any, cast

import httpx
import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from openanomaly.domain.spec import ModelSpec
from openanomaly.engines import DefaultEngineFactory
from openanomaly.engines.remote import RemoteEngine, RemoteEngineError, RemoteUnavailable, loads
from openanomaly.engines.remote.server import create_model_app
from openanomaly.errors import EngineError
from openanomaly.ports import ModelEngine
from tests.engines.test_engines import PANEL, STEP

PROFILE = {"engine": "builtin", "name": "profile", "params": {"season": "1d"}}
TOKEN = "unit-token-1234"


@pytest.fixture(scope="module")
def client() -> httpx.Client:
    app = create_model_app(DefaultEngineFactory(), token=SecretStr(TOKEN))
    # starlette's TestClient is an httpx2.Client: httpx's API, which is all the engine uses.
    return cast(httpx.Client, TestClient(app, base_url="http://model-server"))


def remote(client: httpx.Client, model: dict[str, Any] = PROFILE, **kw: Any) -> RemoteEngine:
    kw.setdefault("token", TOKEN)
    return RemoteEngine("http://model-server", model, step=STEP, client=client, **kw)


def local(spec: dict[str, Any] = PROFILE) -> ModelEngine:
    return DefaultEngineFactory().create(ModelSpec.model_validate(spec), step=STEP)


def assert_same(a: Any, b: Any) -> None:
    for name in ("yhat", "lower", "upper"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_batched_fit_and_predict_match_the_local_engine(client: httpx.Client) -> None:
    engine = remote(client, max_points=3 * PANEL.history.timestamps.size)  # 3 series a batch
    assert engine.requires_fit
    engine.fit(PANEL.history)
    assert len(engine.states_) == 4
    expected = local().fit(PANEL.history)
    got = engine.predict(PANEL.context, PANEL.future, 0.99)
    assert_same(got, expected.predict(PANEL.context, PANEL.future, 0.99))
    keys = (*PANEL.context.keys, 'm{i="new"}')
    assert engine.known(keys).tolist() == expected.known(keys).tolist()


def test_artifact_round_trip_holds_no_token(client: httpx.Client) -> None:
    engine = remote(client).fit(PANEL.history)
    data = engine.dumps()
    assert TOKEN.encode() not in data
    # The worker that loads it gets the token from its composition root, as the factory's.
    factory = DefaultEngineFactory(remote_token=SecretStr(TOKEN))
    again: Any = factory.load(ModelSpec(engine="remote"), data, step=STEP)
    again._client = client
    assert again.url == "http://model-server"
    assert again._token.get_secret_value() == TOKEN
    assert_same(
        again.predict(PANEL.context, PANEL.future, 0.9),
        engine.predict(PANEL.context, PANEL.future, 0.9),
    )
    with pytest.raises(EngineError, match="step"):
        loads(data, step=60)
    with pytest.raises(EngineError, match="not a remote model artifact"):
        loads(b"\x00", step=STEP)


def test_token_env_of_old_params_is_ignored_and_old_artifacts_are_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The token comes from Settings now: a pipeline still naming token_env keeps working (with
    # a warning), and nothing reads the environment variable it names.
    spec = ModelSpec(engine="remote", params={"url": "http://x", "token_env": "OA_REMOTE_TOKEN"})
    factory = DefaultEngineFactory(remote_token=SecretStr("from-settings"))
    with caplog.at_level("WARNING"):
        engine: Any = factory.create(spec, step=STEP)
    assert "token_env is ignored" in caplog.text
    assert engine._token.get_secret_value() == "from-settings"
    assert "token_env" not in engine.get_params()
    old = orjson.dumps({"format": 1, "step": STEP, "url": "http://x", "token_env": "T"})
    with pytest.raises(EngineError, match="retrain the model"):
        factory.load(ModelSpec(engine="remote"), old, step=STEP)


def test_a_model_without_fit_predicts_at_once(client: httpx.Client) -> None:
    engine = remote(client, {"engine": "builtin", "name": "mad"})
    assert not engine.requires_fit
    assert engine.known(["a", "b"]).all()
    fc = engine.predict(PANEL.context, PANEL.future, 0.99)
    assert_same(
        fc, local({"engine": "builtin", "name": "mad"}).predict(PANEL.context, PANEL.future, 0.99)
    )
    assert b"states" not in engine.dumps()


def test_predict_before_fit_is_an_error(client: httpx.Client) -> None:
    with pytest.raises(EngineError, match=r"predict\(\) before fit\(\)"):
        remote(client).predict(PANEL.context, PANEL.future, 0.99)


def test_the_server_refuses_a_forged_state(client: httpx.Client) -> None:
    engine = remote(client).fit(PANEL.history)
    raw = base64.b64decode(engine.states_[0])
    engine.states_ = [base64.b64encode(raw[:-1] + b"x").decode()]
    with pytest.raises(RemoteEngineError, match="not issued by this server") as exc:
        engine.predict(PANEL.context, PANEL.future, 0.99)
    assert exc.value.status == 422


def test_bad_requests_name_the_field(client: httpx.Client) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        ({"model": PROFILE}, "step: expected int"),
        ({"model": {"engine": "builtin", "nam": "x"}, "step": 60}, "model.nam"),
        ({"model": PROFILE, "step": 60, "history": {"timestamps": [1, 2]}}, "history.series"),
    ]
    for body, message in cases:
        response = client.post("/v1/fit", json=body, headers=headers)
        assert response.status_code == 422
        assert message in response.json()["error"]["message"]
    assert client.post("/v1/fit", content=b"{", headers=headers).status_code == 422


def test_params_are_checked() -> None:
    factory = DefaultEngineFactory()
    for params, message in [
        ({}, "needs parameter 'url'"),
        ({"url": "ftp://x"}, "http"),
        ({"url": "http://u:p@x"}, "credentials"),
        ({"url": "http://x", "timeout": 0}, "timeout must be a number > 0"),
        ({"url": "http://x", "retries": 0}, "retries must be an integer >= 1"),
        ({"url": "http://x", "token": "t"}, "no parameter 'token'"),
    ]:
        with pytest.raises(EngineError, match=message):
            factory.create(ModelSpec(engine="remote", params=params), step=STEP)


Handler = Callable[[httpx.Request], httpx.Response]


def mocked(handler: Handler, **kw: Any) -> RemoteEngine:
    client = httpx.Client(transport=httpx.MockTransport(handler))
    return RemoteEngine("http://m", {"name": "mad"}, step=STEP, client=client, backoff=0, **kw)


def test_5xx_is_retried_then_succeeds_and_4xx_is_not() -> None:
    calls: list[str] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            return httpx.Response(503, json={"detail": "warming up"})
        return httpx.Response(200, json={"model": {}, "requires_fit": False})

    assert not mocked(flaky).requires_fit
    assert len(calls) == 3

    def refuses(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        return httpx.Response(422, json={"error": "UnknownModel", "detail": "unknown model 'x'"})

    calls.clear()
    with pytest.raises(RemoteEngineError, match=r"refused \(422\): unknown model .x."):
        _ = mocked(refuses).requires_fit
    assert len(calls) == 1


def test_giving_up_says_how_often_and_why() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    with pytest.raises(RemoteUnavailable, match=r"connection refused.*gave up after 2 attempts"):
        _ = mocked(down, retries=2).requires_fit


def test_the_token_is_sent_as_bearer_and_never_shown() -> None:
    seen: list[str | None] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, json={"model": {}, "requires_fit": False})

    engine = mocked(record, token=SecretStr("xyz-secret"))
    _ = engine.requires_fit
    assert seen == ["Bearer xyz-secret"]
    assert "xyz-secret" not in repr(engine.__dict__) + str(engine.get_params())


def test_a_malformed_answer_is_an_engine_error() -> None:
    def wrong(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"yhat": [[1.0]], "lower": [], "upper": []})

    engine = mocked(wrong)
    engine.requires_fit = False
    with pytest.raises(EngineError, match="expected shape"):
        engine.predict(PANEL.context, PANEL.future, 0.99)
