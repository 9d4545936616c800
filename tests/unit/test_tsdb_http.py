"""What build_client puts on the shared TSDB client (the values are checked by TsdbSettings)."""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
import pytest

from openanomaly.adapters.prometheus.http import Tls, _ssl_context, build_client
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
