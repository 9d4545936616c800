"""The model server: any local engine served over the remote-engine protocol
(``docs/remote-protocol.md``), so that a GPU box hosts the heavy models while workers stay light.

The server keeps no model store. ``/v1/fit`` hands the fitted model back to the client as an
opaque ``state`` (the engine's own ``dumps()`` plus its spec and step, signed with HMAC-SHA256);
the client keeps it as its artifact and sends it with every ``/v1/predict``. Any replica holding
the same state key can therefore serve any client, and a restart loses nothing. The signature
matters: some engines' artifacts are pickles, and loading a blob a client made up would let
any token holder run code here. Loaded and zero-shot engines are kept in a small LRU cache.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import SecretStr

from openanomaly.api import errors
from openanomaly.api.auth import bearer, check_bearer
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines.remote import wire
from openanomaly.errors import EngineError, OpenAnomalyError
from openanomaly.ports import EngineFactory, ModelEngine

log = logging.getLogger(__name__)

Body = dict[str, Any]


class ModelServerError(OpenAnomalyError):
    """An engine failed in an unexpected way (a bug, not a bad request): HTTP 500."""


class StateSealer:
    """Signs fitted states so that the server only ever loads what it produced itself.

    A state is ``base64(mac || header || "\\n" || dumps)``: ``header`` is JSON with the model
    spec and step, ``mac`` the HMAC-SHA256 of the rest under ``key``.
    """

    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("the state key must be at least 16 bytes")
        self._key = key

    def seal(self, spec: ModelSpec, step: int, data: bytes) -> tuple[str, str]:
        """The state for ``data``, plus the digest naming it (as ``open`` returns it)."""
        header = orjson.dumps({"v": 1, "model": spec.model_dump(), "step": step})
        payload = header + b"\n" + data
        mac = hmac.digest(self._key, payload, hashlib.sha256)
        return base64.b64encode(mac + payload).decode("ascii"), mac.hex()

    def open(self, state: str) -> tuple[ModelSpec, int, bytes, str]:
        """The spec, step and engine bytes of ``state``, plus a digest naming it."""
        try:
            raw = base64.b64decode(state, validate=True)
        except (binascii.Error, ValueError):
            raise wire.ProtocolError("state: not base64; send back what /v1/fit returned") from None
        mac, payload = raw[:32], raw[32:]
        if not hmac.compare_digest(mac, hmac.digest(self._key, payload, hashlib.sha256)):
            raise wire.ProtocolError(
                "state: not issued by this server, or its state key changed: retrain the model"
            )
        header, _, data = payload.partition(b"\n")
        meta = orjson.loads(header)
        return wire.model_from_json(meta["model"]), int(meta["step"]), data, mac.hex()


def derive_key(token: SecretStr | None, key: SecretStr | None) -> bytes:
    """The explicit key, else one derived from the token, else a random one for this process."""
    if key is not None:
        return hashlib.sha256(b"openanomaly-state-key:" + key.get_secret_value().encode()).digest()
    if token is not None:
        return hashlib.sha256(b"openanomaly-state:" + token.get_secret_value().encode()).digest()
    log.warning("no token or state key: fitted states stay valid only until this server restarts")
    return secrets.token_bytes(32)


class ModelHost:
    """What the routes call: creates, fits, loads and caches engines through ``engines``."""

    def __init__(self, engines: EngineFactory, sealer: StateSealer, *, cache_size: int = 16):
        self._engines, self._sealer, self._size = engines, sealer, cache_size
        self._cache: OrderedDict[str, ModelEngine] = OrderedDict()
        self._lock = threading.Lock()

    def describe(self, body: Body) -> Body:
        spec, step = wire.model_from_json(body.get("model", {})), _step(body)
        engine = self._unfitted(spec, step)
        return {"model": wire.model_to_json(spec), "requires_fit": bool(engine.requires_fit)}

    def fit(self, body: Body) -> Body:
        spec, step = wire.model_from_json(body.get("model", {})), _step(body)
        history = wire.panel_from_json(body.get("history"), "history")
        engine = self._engines.create(spec, step=step)
        if engine.requires_fit:
            engine.fit(history)
        known = engine.known(history.keys)
        state, digest = self._sealer.seal(spec, step, engine.dumps())
        self._put(digest, engine)
        log.info("fitted %s on %d series", _resolved(spec), len(history))
        return {"state": state, "known": [bool(k) for k in known]}

    def predict(self, body: Body) -> Body:
        step = _step(body)
        interval = float(wire.field(body, "interval", (int, float)))
        context = wire.panel_from_json(body.get("context"), "context")
        timestamps = wire.timestamps_from_json(body.get("timestamps"), "timestamps")
        if body.get("state") is not None:
            spec, engine = self._fitted(wire.field(body, "state", str), step)
        else:
            spec = wire.model_from_json(body.get("model", {}))
            engine = self._unfitted(spec, step)
            if engine.requires_fit:
                raise EngineError(
                    f"model {_resolved(spec)} needs a fit: send the state /v1/fit returned"
                )
        fc = engine.predict(context, timestamps, interval)
        if fc.yhat.shape != (len(context), timestamps.size):
            raise ModelServerError(
                f"{_resolved(spec)} returned a forecast of shape {fc.yhat.shape}"
            )
        return wire.forecast_to_json(fc)

    def _fitted(self, state: str, step: int) -> tuple[ModelSpec, ModelEngine]:
        spec, fitted_step, data, digest = self._sealer.open(state)
        if fitted_step != step:
            raise wire.ProtocolError(f"state was fitted at step {fitted_step}s, not {step}s")
        engine = self._get(digest)
        if engine is None:
            engine = self._engines.load(spec, data, step=step)
            self._put(digest, engine)
        return spec, engine

    def _unfitted(self, spec: ModelSpec, step: int) -> ModelEngine:
        key = f"{spec.model_dump_json()}@{step}"
        engine = self._get(key)
        if engine is None:
            engine = self._engines.create(spec, step=step)
            self._put(key, engine)
        return engine

    def _get(self, key: str) -> ModelEngine | None:
        with self._lock:
            engine = self._cache.get(key)
            if engine is not None:
                self._cache.move_to_end(key)
            return engine

    def _put(self, key: str, engine: ModelEngine) -> None:
        with self._lock:
            self._cache[key] = engine
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)


def _step(body: Body) -> int:
    step: int = wire.field(body, "step", int)
    if step < 1:
        raise wire.ProtocolError(f"step: must be >= 1 second, got {step}")
    return step


def _resolved(spec: ModelSpec) -> str:
    return f"{spec.engine}/{spec.name or 'default'}"


def create_model_app(
    engines: EngineFactory,
    *,
    token: SecretStr | None = None,
    state_key: SecretStr | None = None,
    cache_size: int = 16,
) -> FastAPI:
    """The model server's FastAPI app.

    Args:
        engines: builds the engines served (``DefaultEngineFactory()``: every installed one).
        token: the bearer token every ``/v1`` call but health must carry; None: no check.
        state_key: the secret that signs fitted states; default derived from ``token`` (then
            rotating the token invalidates the states: give a key to rotate tokens freely).
        cache_size: how many loaded engines to keep in memory.
    """
    app = FastAPI(title="OpenAnomaly model server", version=f"{wire.PROTOCOL}")
    errors.install(app)
    host = ModelHost(engines, StateSealer(derive_key(token, state_key)), cache_size=cache_size)
    auth = [Depends(_token_check(token))]

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "protocol": wire.PROTOCOL}

    @app.post("/v1/describe", dependencies=auth)
    async def describe(request: Request) -> Response:
        return await _serve(host.describe, request)

    @app.post("/v1/fit", dependencies=auth)
    async def fit(request: Request) -> Response:
        return await _serve(host.fit, request)

    @app.post("/v1/predict", dependencies=auth)
    async def predict(request: Request) -> Response:
        return await _serve(host.predict, request)

    return app


async def _serve(call: Callable[[Body], Body], request: Request) -> Response:
    body = wire.loads(await request.body(), "request body")
    try:
        result = await run_in_threadpool(call, body)
    except OpenAnomalyError:
        raise
    except Exception as exc:
        log.exception("%s failed", request.url.path)
        raise ModelServerError(f"{request.url.path} failed: {type(exc).__name__}: {exc}") from exc
    return Response(wire.dumps(result), media_type="application/json")


def _token_check(token: SecretStr | None) -> Callable[..., None]:
    # The annotation names a module global: with postponed annotations FastAPI resolves it there.
    def check(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        check_bearer(creds, token)

    return check


__all__ = ["ModelHost", "ModelServerError", "StateSealer", "create_model_app"]
