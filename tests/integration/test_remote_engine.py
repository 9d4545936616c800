"""The remote engine against the real model server (uvicorn on a free loopback port), with the
built-in engines behind it; and ``openanomaly serve-model`` started as a process."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

import httpx
import numpy as np
import pytest
import uvicorn
from pydantic import SecretStr

from openanomaly.domain.series import Forecast, IntArray, SeriesBatch
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines import DefaultEngineFactory
from openanomaly.engines.remote import RemoteEngine, RemoteEngineError, RemoteUnavailable, loads
from openanomaly.ports import ModelEngine
from tests.engines.test_engines import PANEL, STEP
from tests.servers import free_port

pytestmark = pytest.mark.integration

TOKEN = "integration-token-5678"
PROFILE = {"engine": "builtin", "name": "profile", "params": {"season": "1d"}}


class Exploding:
    """An engine that fails the way a bug would (not with an EngineError)."""

    requires_fit = False

    def fit(self, history: SeriesBatch) -> Self:
        return self

    def known(self, keys: Any) -> Any:
        return np.ones(len(keys), dtype=bool)

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        raise RuntimeError("CUDA out of memory")

    def dumps(self) -> bytes:
        return b""


class Factory(DefaultEngineFactory):
    """The default engines, plus ``{engine: test, name: exploding}``."""

    def create(self, spec: ModelSpec, *, step: int) -> ModelEngine:
        if spec.engine == "test":
            return Exploding()
        return super().create(spec, step=step)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    from openanomaly.engines.remote.server import create_model_app

    app = create_model_app(Factory(), token=SecretStr(TOKEN))
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not running.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the model server did not start")
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


OPENED: list[RemoteEngine] = []


@pytest.fixture(autouse=True)
def close_engines() -> Iterator[None]:
    """Each engine owns an HTTP client: every one a test made is closed after it."""
    yield
    while OPENED:
        OPENED.pop().close()


def remote(url: str, model: dict[str, Any] = PROFILE, **kw: Any) -> RemoteEngine:
    kw.setdefault("token", TOKEN)
    OPENED.append(RemoteEngine(url, model, step=STEP, backoff=0.01, **kw))
    return OPENED[-1]


def test_fit_predict_and_reload_match_the_local_engine(server: str) -> None:
    engine = remote(server).fit(PANEL.history)
    expected = DefaultEngineFactory().create(ModelSpec.model_validate(PROFILE), step=STEP)
    expected.fit(PANEL.history)
    want = expected.predict(PANEL.context, PANEL.future, 0.99)
    # A worker that did not train: the token comes from its own settings.
    reloaded = loads(engine.dumps(), step=STEP, token=SecretStr(TOKEN))
    OPENED.append(reloaded)
    for got in (
        engine.predict(PANEL.context, PANEL.future, 0.99),
        reloaded.predict(PANEL.context, PANEL.future, 0.99),
    ):
        for name in ("yhat", "lower", "upper"):
            np.testing.assert_array_equal(getattr(got, name), getattr(want, name))
    keys = (*PANEL.context.keys, 'm{i="new"}')
    assert reloaded.known(keys).tolist() == expected.known(keys).tolist()


def test_the_token_is_refused_or_accepted(server: str) -> None:
    for token in (None, "wrong"):
        engine = remote(server, token=token)
        with pytest.raises(RemoteEngineError, match="refused \\(401\\): missing or wrong") as exc:
            engine.fit(PANEL.history)
        assert exc.value.status == 401
    assert remote(server).requires_fit
    health = httpx.get(f"{server}/v1/health")  # needs no token: probes have none
    assert health.json() == {"status": "ok", "protocol": 1}


def test_the_server_message_reaches_the_user(server: str) -> None:
    with pytest.raises(RemoteEngineError, match="unknown builtin model 'lstm'; known: mad"):
        _ = remote(server, {"engine": "builtin", "name": "lstm"}).requires_fit
    with pytest.raises(RemoteEngineError, match="no parameter 'seasn'"):
        remote(server, {"name": "profile", "params": {"seasn": "1d"}}).fit(PANEL.history)
    crashing = remote(server, {"engine": "test", "name": "exploding"}, retries=2)
    with pytest.raises(
        RemoteUnavailable,
        match="failed \\(500\\): /v1/predict failed: RuntimeError: CUDA out of memory "
        "\\(gave up after 2 attempts\\)",
    ):
        crashing.predict(PANEL.context, PANEL.future, 0.99)


def test_a_server_that_is_down_is_a_clear_error() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(RemoteUnavailable, match=f"cannot reach model server {url}/v1/fit.*3 att"):
        remote(url, retries=3).fit(PANEL.history)
    assert time.monotonic() - began < 5


def test_the_serve_model_command(tmp_path: Path) -> None:
    port = free_port()
    command = Path(sys.executable).with_name("openanomaly")
    env = {**os.environ, "OA_MODEL_SERVER__TOKEN": TOKEN}
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(command), "serve-model", "--port", str(port)], stdout=log, stderr=log, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/v1/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail(f"serve-model did not start: {(tmp_path / 'serve.log').read_text()}")
            time.sleep(0.1)
        engine = remote(url, {"engine": "builtin", "name": "mad"})
        fc = engine.predict(PANEL.context, PANEL.future, 0.99)
        assert np.isfinite(fc.yhat).all()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    assert TOKEN not in (tmp_path / "serve.log").read_text()
