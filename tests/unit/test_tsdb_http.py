"""What build_client puts on the shared TSDB client (the values are checked by TsdbSettings)."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

import httpx
import pytest

from openanomaly.adapters.prometheus.http import (
    MAX_RETRY_AFTER,
    Tls,
    _ssl_context,
    build_client,
    retry_after,
)
from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.errors import ConfigError


def test_client_carries_auth_tenant_headers_and_timeout() -> None:
    with build_client(
        username="u", password="pw", tenant="team-a", timeout=7, headers={"X-Extra": "1"}
    ) as client:
        assert isinstance(client.auth, httpx.BasicAuth)
        assert client.headers["X-Scope-OrgID"] == "team-a"
        assert client.headers["X-Extra"] == "1"
        assert client.timeout.read == 7 and client.timeout.connect == 7
    with build_client(bearer_token="tok") as client:
        assert client.headers["Authorization"] == "Bearer tok"
        assert "X-Scope-OrgID" not in client.headers
        assert client.auth is None


def test_a_long_timeout_still_connects_within_ten_seconds() -> None:
    with build_client(timeout=120) as client:
        assert client.timeout.read == 120 and client.timeout.connect == 10


def test_tls_verify_off_and_unreadable_files(tmp_path: Path) -> None:
    with build_client(tls=Tls(verify=False)) as client:
        assert isinstance(client, httpx.Client)
    with pytest.raises(ConfigError, match=r"tsdb\.tls"):
        build_client(tls=Tls(ca_file=str(tmp_path / "no.pem")))


def test_tls_verify_off_makes_an_unverified_context() -> None:
    ctx = _ssl_context(Tls(verify=False))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert _ssl_context(Tls()).verify_mode == ssl.CERT_REQUIRED


def _answers(*responses: httpx.Response) -> httpx.Client:
    queue = list(responses)
    return httpx.Client(transport=httpx.MockTransport(lambda request: queue.pop(0)))


MATRIX = {"status": "success", "data": {"resultType": "matrix", "result": []}}


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_in_seconds_is_honoured(status: int) -> None:
    client = _answers(
        httpx.Response(status, headers={"Retry-After": "1"}, text="slow down"),
        httpx.Response(200, json=MATRIX),
    )
    reader = PrometheusReader("http://p", client=client, max_retries=1, backoff=0)

    began = time.monotonic()
    reader.query_range("up", 0, 60, 60)

    assert time.monotonic() - began >= 0.95


def test_retry_after_as_a_date_and_its_cap() -> None:
    def answer(value: str) -> httpx.Response:
        return httpx.Response(503, headers={"Retry-After": value})

    now = 1_700_000_000.0
    assert retry_after(answer("Tue, 14 Nov 2023 22:13:40 GMT"), now=now) == pytest.approx(20)
    assert retry_after(answer("Tue, 14 Nov 2023 22:13:00 GMT"), now=now) == 0.0  # past
    assert retry_after(answer("3600"), now=now) == MAX_RETRY_AFTER
    assert retry_after(answer("soon"), now=now) is None
    assert retry_after(httpx.Response(503), now=now) is None
