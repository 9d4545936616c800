"""HTTP plumbing shared by the Prometheus reader and the remote-write writer.

``build_client`` makes the ``httpx.Client`` that both adapters share (auth, TLS, tenant).
``call_with_retries`` and ``response_message`` give both adapters the same retry policy and
the same error wording.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Self, TypeVar

import certifi
import httpx
import orjson
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_none,
)

from openanomaly.errors import ConfigError, TsdbUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")

USER_AGENT = "openanomaly"


@dataclass(frozen=True)
class Tls:
    """How to check the TSDB's certificate and which one to show it.

    Attributes:
        verify: check the server certificate; turn off only for a self-signed test server.
        ca_file: PEM bundle of the CAs to trust instead of the public ones.
        cert_file: client certificate (PEM) for mutual TLS.
        key_file: the client certificate's key, when it is not inside ``cert_file``.
    """

    verify: bool = True
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


def build_client(
    *,
    username: str | None = None,
    password: str | None = None,
    bearer_token: str | None = None,
    tenant: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 30.0,
    tls: Tls = Tls(),
) -> httpx.Client:
    """An ``httpx.Client`` for the reader and the writer to share: basic auth (``username``,
    ``password``) or ``bearer_token``, the tenant as ``X-Scope-OrgID``, extra ``headers``, and
    ``timeout`` seconds per response (connecting waits at most 10 s). The settings check these
    values (``TsdbSettings``); the caller closes the client.

    Raises:
        ConfigError: a TLS file cannot be read.
    """
    sent = {"User-Agent": USER_AGENT, **(headers or {})}
    if tenant:
        sent["X-Scope-OrgID"] = tenant
    if bearer_token is not None:
        sent["Authorization"] = f"Bearer {bearer_token}"
    auth = httpx.BasicAuth(username, password or "") if username else None
    return httpx.Client(
        auth=auth,
        headers=sent,
        verify=_ssl_context(tls),
        timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
    )


class ClientOwner:
    """The HTTP client of a reader or writer: the one handed in (shared, closed by whoever made
    it), or a plain one of its own, closed by ``close()`` or at the end of a ``with`` block."""

    def __init__(self, client: httpx.Client | None) -> None:
        self._client = client if client is not None else httpx.Client(timeout=30.0)
        self._owns_client = client is None

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _ssl_context(tls: Tls) -> ssl.SSLContext:
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
    detail = str(exc) or type(exc).__name__
    return TsdbUnavailable(f"cannot reach TSDB at {url}: {detail}", url=url)


def call_with_retries(fn: Callable[[], T], *, attempts: int, backoff: float, what: str) -> T:
    """Call ``fn``, retrying while it raises ``TsdbUnavailable``, with exponential backoff
    (``backoff``, 2x ``backoff``, ... seconds, at most 30 s apart).

    The last ``TsdbUnavailable`` is raised again, with the number of attempts appended.
    """
    retrying = Retrying(
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff, max=30) if backoff > 0 else wait_none(),
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


def _log_retry(what: str) -> Callable[[RetryCallState], None]:
    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        logger.warning(
            "%s failed (attempt %d), retrying in %.2fs: %s", what, state.attempt_number, wait, exc
        )

    return log
