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
sends back with every ``/v1/predict``. The bearer token is never stored: the composition root
hands it in (the setting ``remote_engine.token``, through ``DefaultEngineFactory``).
A large panel is sent in batches of at most ``max_points`` values, each fitted separately:
per-series models do not notice, but a global model (one fitted across series) sees only its
batch, so raise ``max_points`` for those.
"""

from __future__ import annotations

import logging
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
from openanomaly.engines.base import (
    Engine,
    KeyIndex,
    check_int,
    check_number,
    check_unique,
    unknown_params,
)
from openanomaly.engines.remote import wire
from openanomaly.engines.remote.client import (
    RemoteEngineError,
    RemoteUnavailable,
    check_url,
    post_json,
)
from openanomaly.errors import EngineError, UnknownModel

log = logging.getLogger(__name__)

DEFAULT_MODEL = "http"
PARAMS = ("url", "model", "timeout", "retries", "backoff", "max_points")


class RemoteEngine(KeyIndex, Engine):
    """A model that lives on a model server (see the module doc).

    Args:
        url: the model server's base URL (``http(s)://host:port``, no credentials in it).
        model: the served model, ``{engine, name, params}`` (default: the built-in profile).
        step: the grid spacing in seconds.
        token: the bearer token of the model server (None: send none).
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

    ENGINE = "remote"
    FORMAT = 2  # 2: the envelope, no token_env
    batch_: IntArray
    states_: list[str]

    def __init__(
        self,
        url: str,
        model: ModelSpec | Mapping[str, Any] | None = None,
        *,
        step: int,
        token: SecretStr | str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_points: int = 2_000_000,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = check_url(url)
        self.model = model if isinstance(model, ModelSpec) else wire.model_from_json(model or {})
        self.step = check_int("step", step, 1)
        self.timeout = check_number("timeout", timeout, 0, open_low=True)
        self.retries = check_int("retries", retries, 1)
        self.backoff = check_number("backoff", backoff, 0)
        self.max_points = check_int("max_points", max_points, 1)
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
            "timeout": self.timeout,
            "retries": self.retries,
            "backoff": self.backoff,
            "max_points": self.max_points,
        }

    def fit(self, history: SeriesBatch) -> Self:
        """Fit the served model on ``history``, batch by batch; returns self."""
        check_unique(history.keys)
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
        self._set_keys(history.keys, known)
        self.batch_, self.states_ = batch, states
        log.info("fitted %s on %s: %d series", self._label(), self.url, len(history))
        return self

    def known(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Which series the fitted model knows; a model needing no fit knows every series."""
        if "states_" not in self.__dict__:
            return np.full(len(keys), not self.requires_fit, dtype=bool)
        return super().known(keys)

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
        """How to reach the server, the model, which series are known and the states (JSON)."""
        meta: dict[str, Any] = {"params": self.get_params(), "requires_fit": self._requires_fit}
        if "states_" in self.__dict__:
            meta |= {"keys": self.keys_, "known": self.known_, "batch": self.batch_}
            meta["states"] = self.states_
        return self.pack({"remote.json": orjson.dumps(meta, option=orjson.OPT_SERIALIZE_NUMPY)})

    def close(self) -> None:
        """Close the HTTP client this engine made (a client handed in is left open)."""
        with self._lock:
            if self._client is not None and self._own_client:
                self._client.close()
                self._client = None

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
                self.check_fitted("states_")
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


def create(
    name: str, params: Mapping[str, Any], *, step: int, token: SecretStr | None = None
) -> RemoteEngine:
    """A new remote engine; ``params`` are ``RemoteEngine``'s keyword arguments (``url``...),
    ``token`` the server's (from Settings). The former ``token_env`` is ignored, with a warning:
    the token now comes from Settings."""
    if name != DEFAULT_MODEL:
        raise UnknownModel("remote model", name, [DEFAULT_MODEL])
    rest = dict(params)
    if rest.pop("token_env", None) is not None:
        log.warning("remote engine: params.token_env is ignored; set remote_engine.token instead")
    unknown_params("remote engine", rest, PARAMS)
    if "url" not in rest:
        raise EngineError("remote engine needs parameter 'url' (the model server)")
    return RemoteEngine(rest.pop("url"), step=step, token=token, **rest)


def loads(data: bytes, *, step: int, token: SecretStr | None = None) -> RemoteEngine:
    """An engine saved by ``dumps``, with the ``token`` of the composition root."""
    _, members = RemoteEngine.unpack(data, step=step)
    try:
        meta = orjson.loads(members["remote.json"])
        params, requires_fit = meta["params"], meta["requires_fit"]
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        raise EngineError(f"not a remote model artifact: {exc}") from None
    engine = create(DEFAULT_MODEL, params, step=step, token=token)
    engine._requires_fit = requires_fit
    if meta.get("states") is not None:
        engine._set_keys(meta["keys"], np.array(meta["known"], dtype=bool))
        engine.batch_ = np.array(meta["batch"], dtype=np.int64)
        engine.states_ = list(meta["states"])
    return engine


__all__ = [
    "DEFAULT_MODEL",
    "RemoteEngine",
    "RemoteEngineError",
    "RemoteUnavailable",
    "create",
    "loads",
]
