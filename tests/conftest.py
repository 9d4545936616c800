"""Shared fixtures. Real servers are session-scoped (started once, on free loopback ports, in
temp directories, stopped at the end); tests keep apart by writing series with a random id."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.cluster_servers import postgres, rabbitmq, redis_server, s3_server
from tests.servers import RecordingProxy, TsdbServer, start_prometheus, start_victoriametrics

__all__ = ["postgres", "rabbitmq", "redis_server", "s3_server"]  # fixtures for every test

TIERS = ("unit", "engines", "integration", "e2e")
"""The test tiers, one directory each; every test gets its tier's marker (``-m engines``)."""


@pytest.fixture(autouse=True)
def _root_log_level_kept() -> Iterator[None]:
    """A test that sets logging up in this process (a Celery worker started in a thread sets the
    root logger to ERROR) must not hide the warnings the next tests' ``caplog`` looks for."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        tier = item.path.relative_to(root).parts[0]
        if tier in TIERS:
            item.add_marker(tier)


# --- TSDB servers -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TsdbServer]:
    """Prometheus 2.x with the remote-write receiver on, no scrape targets."""
    server = start_prometheus(tmp_path_factory.mktemp("prometheus"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def victoriametrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TsdbServer]:
    """Single-node VictoriaMetrics; call ``.flush()`` after a write to query it at once."""
    server = start_victoriametrics(tmp_path_factory.mktemp("victoriametrics"))
    yield server
    server.stop()


@pytest.fixture(params=["prometheus", "victoriametrics"])
def tsdb(request: pytest.FixtureRequest) -> TsdbServer:
    """Each TSDB in turn, for tests that must pass on every flavor."""
    server: TsdbServer = request.getfixturevalue(request.param)
    return server


@pytest.fixture
def recording_proxy() -> Iterator[Callable[..., RecordingProxy]]:
    """A factory of ``RecordingProxy(upstream, require=...)``, all closed after the test."""
    proxies: list[RecordingProxy] = []

    def make(upstream: str, *, require: Mapping[str, str] | None = None) -> RecordingProxy:
        proxies.append(RecordingProxy(upstream, require=require))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()
