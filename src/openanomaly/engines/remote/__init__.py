"""The ``remote`` engine: fit and predict run on a model server over HTTP
(``openanomaly serve-model``, or anything speaking ``docs/remote-protocol.md``).

```yaml
model:
  engine: remote
  params:
    url: http://gpu-box:8765
    model: {engine: statsforecast, name: AutoETS, params: {season_length: 24}}
    timeout: 120
```

The server is stateless: ``/v1/fit`` returns an opaque, server-signed ``state`` which this
engine keeps in its artifact (with the URL, the model spec and which series are known) and
sends back with every ``/v1/predict``. The bearer token is never stored: it comes from the
environment variable named by ``token_env`` (default ``OA_REMOTE_TOKEN``), or is handed in.
A large panel is sent in batches of at most ``max_points`` values, each fitted separately:
per-series models do not notice, but a global model (one fitted across series) sees only its
batch, so raise ``max_points`` for those.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Self

import httpx
import numpy as np
import numpy.typing as npt
import orjson
from pydantic import SecretStr

from openanomaly.domain.series import Forecast, IntArray, SeriesBatch
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines.remote import wire
from openanomaly.engines.remote.client import (
    RemoteEngineError,
    RemoteUnavailable,
    check_url,
    positive,
    post_json,
)
from openanomaly.errors import EngineError, UnknownModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = "http"
_FORMAT = 1  # version of the dumps() layout


class RemoteEngine:
    """A model that lives on a model server (see the module doc).

    Args:
        url: the model server's base URL (``http(s)://host:port``, no credentials in it).
        model: the served model, ``{engine, name, params}`` (default: the built-in profile).
        step: the grid spacing in seconds.
        token: the bearer token; default: the environment variable named by ``token_env``.
        token_env: where to read the token from when none is given (also after ``loads``).
        timeout: seconds to wait for one response (> 0; connecting waits at most 10 s).
        retries: attempts per call on connection errors, timeouts, 429 and 5xx (>= 1).
        backoff: seconds before the first retry, doubling after each (>= 0).
        max_points: the most values sent in one request (>= 1); larger panels are batched.
        client: the HTTP client to use (tests); default one of our own, made on first use.

    Attributes:
        keys_: the series identities seen by ``fit``.
        known_: ``(series,)`` which of them the remote model can forecast.
        batch_: ``(series,)`` the index in ``states_`` of each series' fitted state.
        states_: the opaque states ``/v1/fit`` returned, one per batch.
    """

    keys_: tuple[str, ...]
    known_: npt.NDArray[np.bool_]
    batch_: IntArray
    states_: list[str]

    def __init__(
        self,
        url: str,
        model: ModelSpec | Mapping[str, Any] | None = None,
        *,
        step: int,
        token: SecretStr | str | None = None,
        token_env: str | None = "OA_REMOTE_TOKEN",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_points: int = 2_000_000,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = check_url(url)
        self.model = model if isinstance(model, ModelSpec) else wire.model_from_json(model or {})
        self.step = positive("step", step, int, 1)
        self.timeout = float(positive("timeout", timeout, (int, float), 0, strict=True))
        self.retries = positive("retries", retries, int, 1)
        self.backoff = float(positive("backoff", backoff, (int, float), 0))
        self.max_points = positive("max_points", max_points, int, 1)
        self.token_env = token_env
        if token is None and token_env:
            token = os.environ.get(token_env) or None
        self._token = SecretStr(token) if isinstance(token, str) else token
        self._client, self._own_client, self._lock = client, False, threading.Lock()
        self._requires_fit: bool | None = None

    @property
    def requires_fit(self) -> bool:
        """Whether the served model needs a fit, asked once of the server (``/v1/describe``)."""
        if self._requires_fit is None:
            body = {"model": wire.model_to_json(self.model), "step": self.step}
            answer = self._post("/v1/describe", body)
            self._requires_fit = bool(wire.field(answer, "requires_fit", bool))
        return self._requires_fit

    @requires_fit.setter
    def requires_fit(self, value: bool) -> None:
        self._requires_fit = value

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters as ``create`` takes them (never the token)."""
        return {
            "url": self.url,
            "model": wire.model_to_json(self.model),
            "token_env": self.token_env,
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": self.backoff,
            "max_points": self.max_points,
        }

    def fit(self, history: SeriesBatch) -> Self:
        """Fit the served model on ``history``, batch by batch; returns self."""
        if len(set(history.keys)) != len(history):
            raise EngineError("history has duplicate series keys")
        states: list[str] = []
        known = np.zeros(len(history), dtype=bool)
        batch = np.zeros(len(history), dtype=np.int64)
        for rows in self._batches(len(history), history.timestamps.size):
            part = history.take(rows)
            body = {
                "model": wire.model_to_json(self.model),
                "step": self.step,
                "history": wire.panel_to_json(part),
            }
            answer = self._post("/v1/fit", body)
            flags = wire.field(answer, "known", list)
            if len(flags) != rows.size:
                raise wire.ProtocolError(f"known: expected {rows.size} flags, got {len(flags)}")
            known[rows] = np.array(flags, dtype=bool)
            batch[rows] = len(states)
            states.append(wire.field(answer, "state", str))
        self.keys_, self.known_, self.batch_, self.states_ = history.keys, known, batch, states
        self._index: dict[str, int] = {k: i for i, k in enumerate(self.keys_)}
        log.info("fitted %s on %s: %d series", self._label(), self.url, len(history))
        return self

    def known(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Which series the fitted model knows; a model needing no fit knows every series."""
        if "states_" not in self.__dict__:
            return np.full(len(keys), not self.requires_fit, dtype=bool)
        rows = self._rows(keys)
        return np.asarray((rows >= 0) & self.known_[np.maximum(rows, 0)], dtype=bool)

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """The server's forecast of ``timestamps`` for every series of ``context``."""
        ts = np.asarray(timestamps, dtype=np.int64)
        base: dict[str, Any] = {"step": self.step, "interval": interval, "timestamps": ts}
        parts: list[tuple[npt.NDArray[np.intp], Forecast]] = []
        for rows, state in self._predict_batches(context):
            part = context.take(rows)
            body = {**base, "context": wire.panel_to_json(part)}
            if state is None:
                body["model"] = wire.model_to_json(self.model)
            else:
                body["state"] = state
            answer = self._post("/v1/predict", body)
            parts.append((rows, wire.forecast_from_json(answer, (rows.size, ts.size))))
        return Forecast.stack(parts, len(context), ts.size)

    def dumps(self) -> bytes:
        """JSON: how to reach the server, the model, which series are known, the states."""
        meta: dict[str, Any] = {"format": _FORMAT, "step": self.step, **self.get_params()}
        meta["requires_fit"] = self._requires_fit
        if "states_" in self.__dict__:
            meta |= {"keys": self.keys_, "known": self.known_, "batch": self.batch_}
            meta["states"] = self.states_
        return orjson.dumps(meta, option=orjson.OPT_SERIALIZE_NUMPY)

    def close(self) -> None:
        """Close the HTTP client this engine made (a client handed in is left open)."""
        with self._lock:
            if self._client is not None and self._own_client:
                self._client.close()
                self._client = None

    def _rows(self, keys: Sequence[str]) -> IntArray:
        index = self._index
        return np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def _batches(self, n: int, width: int) -> Iterator[npt.NDArray[np.intp]]:
        size = max(1, self.max_points // max(1, width))
        for start in range(0, n, size):
            yield np.arange(start, min(n, start + size), dtype=np.intp)

    def _predict_batches(
        self, context: SeriesBatch
    ) -> Iterator[tuple[npt.NDArray[np.intp], str | None]]:
        """Rows of ``context`` grouped by the state that serves them (unseen series go with the
        first state: the remote model forecasts them from their context, as a local one would)."""
        width = context.timestamps.size
        if "states_" not in self.__dict__:
            if self.requires_fit:
                raise EngineError(f"remote {self._label()}: predict() before fit()")
            for rows in self._batches(len(context), width):
                yield rows, None
            return
        rows = self._rows(context.keys)
        batch = np.where(rows >= 0, self.batch_[np.maximum(rows, 0)], 0)
        for b in np.unique(batch):
            same = np.flatnonzero(batch == b)
            for sub in self._batches(same.size, width):
                yield same[sub], self.states_[int(b)]

    def _label(self) -> str:
        return f"{self.model.engine}/{self.model.name or 'default'}"

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                timeout = httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0))
                self._client = httpx.Client(timeout=timeout, headers={"User-Agent": "openanomaly"})
                self._own_client = True
            return self._client

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return post_json(
            self._http(),
            f"{self.url}{path}",
            wire.dumps(body),
            token=self._token,
            attempts=self.retries,
            backoff=self.backoff,
        )


def create(name: str, params: Mapping[str, Any], *, step: int) -> RemoteEngine:
    """A new remote engine; ``params`` are ``RemoteEngine``'s keyword arguments (``url``...)."""
    if name != DEFAULT_MODEL:
        raise UnknownModel("remote model", name, [DEFAULT_MODEL])
    accepted = ("url", "model", "token_env", "timeout", "retries", "backoff", "max_points")
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise EngineError(
            f"remote engine has no parameter {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(accepted)}"
        )
    if "url" not in params:
        raise EngineError("remote engine needs parameter 'url' (the model server)")
    rest = {k: v for k, v in params.items() if k != "url"}
    return RemoteEngine(params["url"], step=step, **rest)


def loads(data: bytes, *, step: int) -> RemoteEngine:
    """An engine saved by ``dumps``; the token is read again from ``token_env``."""
    try:
        meta = orjson.loads(data)
        if meta.pop("format") != _FORMAT:
            raise ValueError("unknown format version")
    except (orjson.JSONDecodeError, ValueError, KeyError, AttributeError, TypeError) as exc:
        raise EngineError(f"not a remote model artifact: {exc}") from None
    if meta.pop("step") != step:
        raise EngineError(f"model was trained at another step than {step}s: retrain it")
    requires_fit, states = meta.pop("requires_fit"), meta.pop("states", None)
    keys, known, batch = (meta.pop(k, None) for k in ("keys", "known", "batch"))
    engine = create(DEFAULT_MODEL, meta, step=step)
    engine._requires_fit = requires_fit
    if states is not None:
        engine.keys_, engine.states_ = tuple(keys), list(states)
        engine.known_ = np.array(known, dtype=bool)
        engine.batch_ = np.array(batch, dtype=np.int64)
        engine._index = {k: i for i, k in enumerate(engine.keys_)}
    return engine


__all__ = [
    "DEFAULT_MODEL",
    "RemoteEngine",
    "RemoteEngineError",
    "RemoteUnavailable",
    "create",
    "loads",
]
