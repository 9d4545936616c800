"""The remote engine's HTTP side: one JSON POST with retries, the errors it raises, and the
check of the server's URL."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
from pydantic import SecretStr
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from openanomaly.engines.remote import wire
from openanomaly.errors import EngineError, EngineUnavailable

log = logging.getLogger(__name__)


class RemoteEngineError(EngineError):
    """The model server refused a call; ``str()`` carries the server's own message."""

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        self.url, self.status = url, status
        super().__init__(message)


class RemoteUnavailable(RemoteEngineError, EngineUnavailable):
    """The model server could not be reached, or kept answering 5xx/429, after retries."""


def post_json(
    client: httpx.Client,
    url: str,
    content: bytes,
    *,
    token: SecretStr | None,
    attempts: int,
    backoff: float,
) -> dict[str, Any]:
    """POST the JSON ``content`` to ``url``; the JSON object answered.

    Connection errors, timeouts, 429 and 5xx are retried ``attempts`` times in all, waiting
    ``backoff``, 2x ``backoff``... seconds (at most 30 s); other refusals are not retried.

    Raises:
        RemoteUnavailable: still failing after the last attempt.
        RemoteEngineError: refused with a 4xx; the message is the server's.
    """
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.get_secret_value()}"

    def once() -> dict[str, Any]:
        try:
            response = client.post(url, content=content, headers=headers)
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise RemoteUnavailable(f"cannot reach model server {url}: {detail}", url=url) from None
        return _answer(response, url)

    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff, max=30),
        retry=retry_if_exception_type(RemoteUnavailable),
        before_sleep=_log_retry,
        reraise=True,
    )
    try:
        return retrying(once)
    except RemoteUnavailable as exc:
        if attempts <= 1:
            raise
        message = f"{exc} (gave up after {attempts} attempts)"
        raise RemoteUnavailable(message, url=url, status=exc.status) from None


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("model server call failed (attempt %d), retrying: %s", state.attempt_number, exc)


def _answer(response: httpx.Response, url: str) -> dict[str, Any]:
    """The JSON body of a 2xx answer; otherwise the error, with the server's own message."""
    status = response.status_code
    if status < 300:
        return wire.loads(response.content, f"the answer of {url}")
    detail = _detail(response)
    if status == 429 or status >= 500:
        raise RemoteUnavailable(
            f"model server {url} failed ({status}): {detail}", url=url, status=status
        )
    if status == 401:
        detail += "; give the token the server expects (the setting remote_engine.token)"
    raise RemoteEngineError(
        f"model server {url} refused ({status}): {detail}", url=url, status=status
    )


def _detail(response: httpx.Response) -> str:
    """The message of an error answer (ours, or FastAPI's ``detail``), else the body, else the
    reason."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):  # api/errors.py
        return str(error["message"])
    if isinstance(body, dict) and isinstance(body.get("detail"), str):
        return str(body["detail"])
    if isinstance(body, dict) and body.get("detail") is not None:
        return orjson.dumps(body["detail"]).decode()[:500]
    text = response.text.strip()
    return (text[:500] + "...") if len(text) > 500 else (text or response.reason_phrase)


def check_url(url: str) -> str:
    """``url`` without a trailing slash, if it is an http(s) URL without credentials."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise EngineError(f"url must be an http(s) URL of the model server, got {url!r}")
    if parts.username or parts.password:
        raise EngineError(
            "url must not hold credentials (they would be logged): set remote_engine.token"
        )
    return url.rstrip("/")
