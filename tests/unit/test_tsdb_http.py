"""TsdbHttpConfig validation, secret hiding, and what build_client puts on the client."""

from __future__ import annotations

import logging
import ssl
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from openanomaly.adapters.prometheus.http import (
    MAX_RETRY_AFTER,
    TlsConfig,
    TsdbHttpConfig,
    build_client,
    retry_after,
)
from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.errors import ConfigError


def test_secrets_never_appear_in_repr_str_or_logs(caplog: pytest.LogCaptureFixture) -> None:
    cfg = TsdbHttpConfig(
        url="http://p:9090", username="u", password="hunter2", headers={"X-Api-Key": "k3y"}
    )
    bearer = TsdbHttpConfig(url="http://p:9090", bearer_token="t0ken")
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("config %s %r %s", cfg, cfg, bearer)
    for text in (repr(cfg), str(cfg), repr(bearer), caplog.text, str(cfg.model_dump())):
        assert "hunter2" not in text and "t0ken" not in text and "k3y" not in text


def test_urls_are_checked_and_normalised() -> None:
    cfg = TsdbHttpConfig(url="http://p:9090/")
    assert cfg.url == "http://p:9090"
    assert cfg.remote_write_url == "http://p:9090/api/v1/write"
    mimir = TsdbHttpConfig(url="http://m/prometheus", write_url="http://m/api/v1/push")
    assert mimir.remote_write_url == "http://m/api/v1/push"
    with pytest.raises(ValidationError, match="http"):
        TsdbHttpConfig(url="localhost:9090")
    with pytest.raises(ValidationError, match="credentials in the URL"):
        TsdbHttpConfig(url="http://u:secret@p:9090")


def test_auth_settings_must_be_consistent() -> None:
    with pytest.raises(ValidationError, match="not both"):
        TsdbHttpConfig(url="http://p", username="u", password="x", bearer_token="t")
    with pytest.raises(ValidationError, match="password is set without username"):
        TsdbHttpConfig(url="http://p", password="x")
    with pytest.raises(ValidationError, match="key_file"):
        TlsConfig(key_file="/k.pem")


def test_config_is_immutable() -> None:
    cfg = TsdbHttpConfig(url="http://p")
    with pytest.raises(ValidationError):
        cfg.url = "http://q"  # type: ignore[misc]


def test_client_carries_auth_tenant_headers_and_timeout() -> None:
    cfg = TsdbHttpConfig(
        url="http://p",
        username="u",
        password="pw",
        tenant="team-a",
        timeout=7,
        headers={"X-Extra": "1"},
    )
    with build_client(cfg) as client:
        assert isinstance(client.auth, httpx.BasicAuth)
        assert client.headers["X-Scope-OrgID"] == "team-a"
        assert client.headers["X-Extra"] == "1"
        assert client.timeout.read == 7 and client.timeout.connect == 7
    with build_client(TsdbHttpConfig(url="http://p", bearer_token="tok")) as client:
        assert client.headers["Authorization"] == "Bearer tok"
        assert "X-Scope-OrgID" not in client.headers


def test_tls_verify_off_and_unreadable_files(tmp_path: Path) -> None:
    cfg = TsdbHttpConfig(url="https://p", tls=TlsConfig(verify=False))
    with build_client(cfg) as client:
        assert isinstance(client, httpx.Client)
    missing = TsdbHttpConfig(url="https://p", tls=TlsConfig(ca_file=str(tmp_path / "no.pem")))
    with pytest.raises(ConfigError, match=r"tsdb\.tls"):
        build_client(missing)


def test_tls_verify_off_makes_an_unverified_context() -> None:
    from openanomaly.adapters.prometheus.http import _ssl_context

    ctx = _ssl_context(TlsConfig(verify=False))
    assert ctx.verify_mode == ssl.CERT_NONE and not ctx.check_hostname
    assert _ssl_context(TlsConfig()).verify_mode == ssl.CERT_REQUIRED


def test_a_mistyped_scheme_does_not_echo_the_credentials() -> None:
    with pytest.raises(ValidationError) as exc:
        TsdbHttpConfig(url="htp://user:hunter2@p:9090")
    assert "hunter2" not in str(exc.value) and "htp://user:***@p:9090" in str(exc.value)


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
