"""HTTP plumbing shared by the Prometheus reader and the remote-write writer.

``TsdbHttpConfig`` describes how to reach a TSDB (auth, TLS, tenant); ``build_client`` turns it
into an ``httpx.Client`` that both adapters share. ``call_with_retries`` and
``response_message`` give both adapters the same retry policy and the same error wording.
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import ssl
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

import certifi
import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_none,
)

from openanomaly.domain.text import mask_url
from openanomaly.errors import ConfigError, TsdbUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

USER_AGENT = "openanomaly"

MAX_RETRY_AFTER = 30.0
"""Longest wait honoured from a ``Retry-After`` header, in seconds (the backoff's own cap)."""


class TlsConfig(BaseModel):
    """TLS settings for talking to the TSDB.

    Attributes:
        verify: check the server certificate; turn off only for a self-signed test server.
        ca_file: PEM bundle of the CAs to trust instead of the public ones.
        cert_file: client certificate (PEM) for mutual TLS.
        key_file: the client certificate's key, when it is not inside ``cert_file``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _key_needs_cert(self) -> TlsConfig:
        if self.key_file and not self.cert_file:
            raise ValueError("tls.key_file is set without tls.cert_file")
        return self


class TsdbHttpConfig(BaseModel):
    """How to reach a Prometheus-compatible TSDB over HTTP.

    Secrets are ``SecretStr`` and extra header values are left out of ``repr``, so printing or
    logging a config never shows a credential.

    Attributes:
        url: base URL of the Prometheus HTTP API, e.g. ``http://localhost:9090``.
        write_url: remote-write endpoint; ``None`` means ``<url>/api/v1/write``.
        username: basic-auth user.
        password: basic-auth password.
        bearer_token: sent as ``Authorization: Bearer ...`` (exclusive with basic auth).
        tls: certificate checks and client certificates.
        tenant: multi-tenant id (Mimir, Cortex, Thanos), sent as ``X-Scope-OrgID``.
        timeout: seconds to wait for a response (connecting waits at most 10 s).
        headers: extra headers sent with every request; values are secret (API keys...).
    """

    # A refused value may hold a credential: errors name the field, never echo the input.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str
    write_url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    bearer_token: SecretStr | None = None
    tls: TlsConfig = TlsConfig()
    tenant: str | None = None
    timeout: float = Field(default=30.0, gt=0)
    headers: dict[str, SecretStr] = Field(default_factory=dict)

    @field_validator("url", "write_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {mask_url(value)!r}")
        # A URL with user:password@ would print the secret in every log line and error.
        if parts.username or parts.password:
            raise ValueError("credentials in the URL would be logged; use username/password")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_auth(self) -> TsdbHttpConfig:
        if self.password is not None and not self.username:
            raise ValueError("password is set without username")
        if self.username and self.bearer_token is not None:
            raise ValueError("choose basic auth (username/password) or bearer_token, not both")
        return self

    @property
    def remote_write_url(self) -> str:
        """``write_url``, or the Prometheus/VictoriaMetrics default ``<url>/api/v1/write``."""
        return self.write_url or f"{self.url}/api/v1/write"


def build_client(cfg: TsdbHttpConfig) -> httpx.Client:
    """An ``httpx.Client`` carrying ``cfg``'s auth, TLS settings, tenant and extra headers.

    Raises:
        ConfigError: a TLS file cannot be read.
    """
    headers = {"User-Agent": USER_AGENT}
    headers.update({name: value.get_secret_value() for name, value in cfg.headers.items()})
    if cfg.tenant:
        headers["X-Scope-OrgID"] = cfg.tenant
    if cfg.bearer_token is not None:
        headers["Authorization"] = f"Bearer {cfg.bearer_token.get_secret_value()}"
    auth = None
    if cfg.username:
        password = cfg.password.get_secret_value() if cfg.password else ""
        auth = httpx.BasicAuth(cfg.username, password)
    return httpx.Client(
        auth=auth,
        headers=headers,
        verify=_ssl_context(cfg.tls),
        timeout=httpx.Timeout(cfg.timeout, connect=min(cfg.timeout, 10.0)),
    )


def _ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    # httpx 0.28 deprecates verify=<path> and cert=...: an SSLContext is the supported way.
    try:
        ctx = ssl.create_default_context(cafile=tls.ca_file or certifi.where())
        if not tls.verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if tls.cert_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS files: {exc}", where="tsdb.tls") from None
    return ctx


def response_message(response: httpx.Response, limit: int = 500) -> str:
    """The server's own error text: the ``error`` field of a Prometheus API error, else the
    body (truncated), else the HTTP reason phrase."""
    text = response.text.strip()
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        text = body["error"]
    if len(text) > limit:
        text = text[:limit] + "..."
    return text or response.reason_phrase


def is_retryable(status: int) -> bool:
    """5xx and 429 are worth retrying: the server is overloaded or restarting."""
    return status == 429 or status >= 500


def unreachable(url: str, exc: httpx.TransportError) -> TsdbUnavailable:
    """The error for a connection failure or timeout talking to ``url``."""
    detail = mask_url(str(exc) or type(exc).__name__)
    return TsdbUnavailable(f"cannot reach TSDB at {mask_url(url)}: {detail}", url=url)


def overloaded(message: str, url: str, response: httpx.Response) -> TsdbUnavailable:
    """The error for a retryable answer (5xx, 429), carrying the server's ``Retry-After``."""
    return TsdbUnavailable(
        message, url=url, status=response.status_code, retry_after=retry_after(response)
    )


def retry_after(response: httpx.Response, *, now: float | None = None) -> float | None:
    """The wait a 429/503 asks for: ``Retry-After`` in seconds or as an HTTP date, capped at
    ``MAX_RETRY_AFTER``; None without a usable header."""
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # an obsolete date form: HTTP dates are GMT
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def call_with_retries(fn: Callable[[], T], *, attempts: int, backoff: float, what: str) -> T:
    """Call ``fn``, retrying while it raises ``TsdbUnavailable``, with exponential backoff
    (``backoff``, 2x ``backoff``, ... seconds, at most 30 s apart).

    The last ``TsdbUnavailable`` is raised again, with the number of attempts appended.
    """
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=_wait(backoff),
        retry=retry_if_exception_type(TsdbUnavailable),
        before_sleep=_log_retry(what),
        reraise=True,
    )
    try:
        return retrying(fn)
    except TsdbUnavailable as exc:
        if attempts <= 1:
            raise
        raise TsdbUnavailable(
            f"{exc} (gave up after {attempts} attempts)", url=exc.url, status=exc.status
        ) from None


def _wait(backoff: float) -> Callable[[RetryCallState], float]:
    """Exponential backoff, or longer when the server said how long (``Retry-After``)."""
    base = wait_exponential(multiplier=backoff, max=30) if backoff > 0 else wait_none()

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        asked = exc.retry_after if isinstance(exc, TsdbUnavailable) else None
        return max(base(state), asked or 0.0)

    return wait


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "%s failed (attempt %d), retrying in %.2fs: %s", what, state.attempt_number, wait, exc
        )

    return log
