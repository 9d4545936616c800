"""PrometheusReader and RemoteWriteWriter against real Prometheus and VictoriaMetrics: what
each TSDB does differently (limits, auth, rewrites, future samples). What every store does alike
is the contract in ``tests/metrics_contract.py``.

Every test writes series labelled with its own random ``run`` id, within the last half hour
(a fresh Prometheus refuses samples more than an hour behind its newest one).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import cramjam
import httpx
import numpy as np
import pytest

from openanomaly.adapters.prometheus.http import build_client
from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter, write_request_class
from openanomaly.domain.records import OutputSeries
from openanomaly.errors import QueryError, TsdbUnavailable, WriteRejected
from tests.servers import RecordingProxy, TsdbServer, basic_auth, free_port

pytestmark = pytest.mark.integration

STEP = 60
POINTS = 30

Proxy = Callable[..., RecordingProxy]
Adapter = TypeVar("Adapter", PrometheusReader, RemoteWriteWriter)
OPENED: list[PrometheusReader | RemoteWriteWriter] = []


@pytest.fixture(autouse=True)
def close_adapters() -> Iterator[None]:
    """A reader or writer made without a client owns one: each is closed after its test."""
    yield
    while OPENED:
        OPENED.pop().close()


def opened(adapter: Adapter) -> Adapter:
    OPENED.append(adapter)
    return adapter


@pytest.fixture
def run() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture
def grid() -> np.ndarray[Any, np.dtype[np.int64]]:
    """The last ``POINTS`` multiples of ``STEP`` up to now."""
    now = int(time.time()) // STEP * STEP
    return np.arange(now - (POINTS - 1) * STEP, now + 1, STEP, dtype=np.int64)


def writer(server: TsdbServer, **kwargs: Any) -> RemoteWriteWriter:
    kwargs.setdefault("flavor", server.flavor)
    return opened(RemoteWriteWriter(server.write_url, **kwargs))


def decoded_timestamps(proxy: RecordingProxy) -> list[int]:
    """Millisecond timestamps of every sample the proxy saw being remote-written."""
    out = []
    for request in proxy.requests:
        message = write_request_class()()
        message.ParseFromString(bytes(cramjam.snappy.decompress_raw(request.body)))
        out += [s.timestamp for ts in message.timeseries for s in ts.samples]
    return out


def test_more_points_than_prometheus_allows_are_read_in_chunks(
    prometheus: TsdbServer, run: str, grid: Any
) -> None:
    labels = {"__name__": "oa_it_long", "run": run}
    writer(prometheus).write([OutputSeries(labels, grid, np.ones(grid.size))])
    end = int(grid[-1])
    start = end - 12_000  # 12,001 points at a 1 s step
    query = f'oa_it_long{{run="{run}"}}'

    form = {"query": query, "start": str(start), "end": str(end), "step": "1"}
    refused = httpx.post(f"{prometheus.url}/api/v1/query_range", data=form, timeout=30)
    assert refused.status_code == 400 and "11,000 points" in refused.text
    batch = opened(PrometheusReader(prometheus.url)).query_range(query, start, end, 1)
    # Chunks asked (12,001 steps), from the end back; the grid begins where the data does.
    np.testing.assert_array_equal(batch.timestamps, np.arange(grid[0], end + 1))
    # Prometheus' 5 min lookback repeats each sample for up to 300 s after it.
    assert np.all(batch.values[0] == 1)


def test_an_unreachable_tsdb_fails_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    with pytest.raises(
        TsdbUnavailable, match=re.escape(f"cannot reach TSDB at {url}/api/v1/query_range")
    ):
        opened(PrometheusReader(url)).query_range("up", 0, 600, 60)  # default retries, backoff
    assert time.monotonic() - started < 2
    with pytest.raises(
        TsdbUnavailable, match=re.escape(f"cannot reach TSDB at {url}/api/v1/write")
    ):
        opened(RemoteWriteWriter(f"{url}/api/v1/write", max_retries=2, backoff=0.05)).write(
            [OutputSeries({"__name__": "m"}, np.array([1]), np.array([1.0]))]
        )


def test_prometheus_refuses_a_whole_request_with_an_out_of_bounds_sample(
    prometheus: TsdbServer, run: str, grid: Any
) -> None:
    now = int(grid[-1])
    fresh = OutputSeries({"__name__": "oa_it_bounds", "run": run}, np.array([now]), np.array([1.0]))
    old = OutputSeries(
        {"__name__": "oa_it_bounds", "run": run, "old": "yes"},
        np.array([now - 3 * 3600]),
        np.array([2.0]),
    )
    w = writer(prometheus, backoff=0.05)
    w.write([fresh])
    with pytest.raises(WriteRejected, match="out of bounds") as info:
        w.write([fresh, old])
    assert info.value.status == 400


def test_prometheus_rewrite_is_refused_whole_and_raised(
    prometheus: TsdbServer, run: str, grid: Any
) -> None:
    # Prometheus refuses a rewrite of samples older than a series' newest as out of order
    # (only the newest sample may be repeated) and drops the whole request, new samples with
    # the old: the writer raises, it never counts that as written.
    series = OutputSeries({"__name__": "oa_it_rewrite", "run": run}, grid, np.ones(grid.size))
    newer = OutputSeries({"__name__": "oa_it_rewrite", "run": run, "k": "new"}, grid, grid * 0.0)
    w = writer(prometheus)
    assert w.write([series]) == POINTS
    assert w.write([OutputSeries(series.labels, grid[-1:], series.values[-1:])]) == 1
    with pytest.raises(WriteRejected, match="out of order"):
        w.write([series, newer])
    prometheus.flush()
    back = opened(PrometheusReader(prometheus.url)).query_range(
        f'oa_it_rewrite{{run="{run}"}}', int(grid[0]), int(grid[-1]), STEP
    )
    assert back.values.tolist() == [[1.0] * POINTS]  # "newer" was dropped with the rest


def test_victoriametrics_accepts_identical_rewrites(
    victoriametrics: TsdbServer, run: str, grid: Any
) -> None:
    series = OutputSeries({"__name__": "oa_it_rewrite", "run": run}, grid, np.ones(grid.size))
    w = writer(victoriametrics)
    assert w.write([series]) == w.write([series]) == POINTS


def test_basic_auth_and_tenant_reach_the_server(
    victoriametrics: TsdbServer, recording_proxy: Proxy, run: str, grid: Any
) -> None:
    required = {"Authorization": basic_auth("oa", "s3cret"), "X-Scope-OrgID": "team-a"}
    proxy = recording_proxy(victoriametrics.url, require=required)
    labels = {"__name__": "oa_it_auth", "run": run}
    with build_client(username="oa", password="s3cret", tenant="team-a") as client:
        sent = RemoteWriteWriter(
            f"{proxy.url}/api/v1/write", client=client, flavor="victoriametrics"
        ).write([OutputSeries(labels, grid, np.full(grid.size, 3.0))])
        victoriametrics.flush()
        batch = PrometheusReader(proxy.url, client=client).query_range(
            f'oa_it_auth{{run="{run}"}}', int(grid[0]), int(grid[-1]), STEP
        )

    assert sent == POINTS
    assert batch.values.tolist() == [[3.0] * POINTS]
    assert [(r.method, r.path) for r in proxy.requests] == [
        ("POST", "/api/v1/write"),
        ("POST", "/api/v1/query_range"),
    ]
    for r in proxy.requests:
        assert r.headers["authorization"] == required["Authorization"]
        assert r.headers["x-scope-orgid"] == "team-a"


def test_missing_or_wrong_credentials_are_refused(
    victoriametrics: TsdbServer, recording_proxy: Proxy, grid: Any
) -> None:
    proxy = recording_proxy(victoriametrics.url, require={"Authorization": "Bearer right"})
    with (
        build_client(bearer_token="wrong") as wrong,
        pytest.raises(QueryError, match="unauthorized") as info,
    ):
        PrometheusReader(proxy.url, client=wrong).query_range("up", 0, 600, 60)
    assert info.value.status == 401
    with httpx.Client() as plain, pytest.raises(WriteRejected, match="HTTP 401"):
        RemoteWriteWriter(f"{proxy.url}/api/v1/write", client=plain).write(
            [OutputSeries({"__name__": "m"}, grid[:1], np.array([1.0]))]
        )
    with build_client(bearer_token="right") as right:
        PrometheusReader(proxy.url, client=right).query_range("up", 0, 600, 60)
    assert proxy.requests[-1].headers["authorization"] == "Bearer right"
    assert "x-scope-orgid" not in proxy.requests[-1].headers


@pytest.mark.parametrize("flavor", ["prometheus", "victoriametrics"])
def test_future_samples_reach_only_victoriametrics(
    flavor: str, request: pytest.FixtureRequest, recording_proxy: Proxy, run: str, grid: Any
) -> None:
    server: TsdbServer = request.getfixturevalue(flavor)
    proxy = recording_proxy(server.url)
    now = int(time.time())
    ts = np.array([now - 30, now + 600, now + 3 * 86400])
    w = opened(RemoteWriteWriter(f"{proxy.url}/api/v1/write", flavor=server.flavor))

    sent = w.write([OutputSeries({"__name__": "oa_it_future", "run": run}, ts, np.ones(3))])

    sent_ms = decoded_timestamps(proxy)
    if flavor == "prometheus":
        assert sent == 1
        assert sent_ms == [(now - 30) * 1000]
    else:
        assert sent == 3
        assert sent_ms == [t * 1000 for t in ts]


@pytest.mark.parametrize("flavor", ["prometheus", "victoriametrics"])
def test_a_long_window_over_recent_data_reads_what_a_short_one_does(
    request: pytest.FixtureRequest, flavor: str, run: str
) -> None:
    # Two days at 15 s (11,521 steps) over 50 minutes of data with a 20-minute hole: read back
    # from the end, the TSDB answers an empty chunk before the data, the hole is read through.
    server: TsdbServer = request.getfixturevalue(flavor)
    step, now = 15, int(time.time()) // 15 * 15
    new = np.arange(now - 600 + step, now + 1, step, dtype=np.int64)
    old = np.arange(now - 3000, now - 1800, step, dtype=np.int64)
    writer(server).write(
        [
            OutputSeries({"__name__": "oa_it_back", "run": run, "s": "old"}, old, np.full(80, 2.0)),
            OutputSeries({"__name__": "oa_it_back", "run": run, "s": "new"}, new, np.ones(40)),
        ]
    )
    server.flush()
    query = f'oa_it_back{{run="{run}"}}'
    reader = opened(PrometheusReader(server.url))
    long = reader.query_range(query, now - 2 * 86_400, now, step, recent=True)
    short = reader.query_range(query, now - 3600, now, step)  # 241 steps: one request

    assert long.timestamps[0] == old[0]
    assert sorted(long.keys) == sorted(short.keys)
    np.testing.assert_array_equal(long.timestamps, short.timestamps)
    rows = {k: i for i, k in enumerate(short.keys)}
    np.testing.assert_array_equal(long.values, short.values[[rows[k] for k in long.keys]])
