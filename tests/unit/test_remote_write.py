"""RemoteWriteWriter against httpx.MockTransport: the wire format and the retry policy."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import cramjam
import httpx
import numpy as np
import pytest

from openanomaly.adapters.prometheus.remote_write import (
    RemoteWriteWriter,
    encode,
    flatten,
    write_request_class,
)
from openanomaly.adapters.telemetry.prometheus import PrometheusTelemetry
from openanomaly.domain.records import OutputSeries
from openanomaly.errors import TsdbUnavailable, WriteRejected, WriteUncertain
from openanomaly.ports import MetricsWriter

URL = "http://tsdb.test/api/v1/write"
NOW = 1_700_000_000


def decode(body: bytes) -> Any:
    request = write_request_class()()
    request.ParseFromString(bytes(cramjam.snappy.decompress_raw(body)))
    return request


def samples_of(request: Any) -> dict[str, list[tuple[int, float]]]:
    """``{"name{a=..}": [(ts_ms, value), ...]}`` of a decoded WriteRequest."""
    out: dict[str, list[tuple[int, float]]] = {}
    for ts in request.timeseries:
        key = ",".join(f"{lb.name}={lb.value}" for lb in ts.labels)
        out.setdefault(key, []).extend((s.timestamp, s.value) for s in ts.samples)
    return out


class Tsdb:
    """A scripted remote-write endpoint: answers from ``responses`` (the last one repeats)."""

    def __init__(self, *responses: httpx.Response | Exception) -> None:
        self.responses = list(responses) or [httpx.Response(204)]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    @property
    def bodies(self) -> list[Any]:
        return [decode(r.content) for r in self.requests]


def writer(tsdb: Tsdb, **kwargs: Any) -> RemoteWriteWriter:
    kwargs.setdefault("backoff", 0.0)
    kwargs.setdefault("clock", lambda: float(NOW))
    client = httpx.Client(transport=httpx.MockTransport(tsdb))
    return RemoteWriteWriter(URL, client=client, **kwargs)


def series(labels: dict[str, str], ts: list[int], values: list[float]) -> OutputSeries:
    return OutputSeries(labels, np.asarray(ts, dtype=np.int64), np.asarray(values, dtype=float))


def test_is_a_metrics_writer() -> None:
    assert isinstance(writer(Tsdb()), MetricsWriter)


def test_sends_sorted_labels_ms_timestamps_in_time_order_with_headers() -> None:
    tsdb = Tsdb()
    labels = {"zone": "b", "__name__": "anomaly_score", "app": "api", "pipeline": "p1"}
    sent = writer(tsdb).write([series(labels, [NOW - 60, NOW - 180, NOW - 120], [2, 0, 1])])

    assert sent == 3
    (request,) = tsdb.requests
    assert request.headers["Content-Encoding"] == "snappy"
    assert request.headers["Content-Type"] == "application/x-protobuf"
    assert request.headers["X-Prometheus-Remote-Write-Version"] == "0.1.0"
    (ts,) = decode(request.content).timeseries
    assert [lb.name for lb in ts.labels] == ["__name__", "app", "pipeline", "zone"]
    assert [(s.timestamp, s.value) for s in ts.samples] == [
        ((NOW - 180) * 1000, 0.0),
        ((NOW - 120) * 1000, 1.0),
        ((NOW - 60) * 1000, 2.0),
    ]


def test_non_finite_values_and_empty_labels_are_dropped() -> None:
    tsdb = Tsdb()
    values = [1.0, np.nan, np.inf, -np.inf, 5.0]
    sent = writer(tsdb).write([series({"__name__": "m", "empty": ""}, [1, 2, 3, 4, 5], values)])

    assert sent == 2
    assert samples_of(tsdb.bodies[0]) == {"__name__=m": [(1000, 1.0), (5000, 5.0)]}


def test_nothing_to_send_sends_no_request() -> None:
    tsdb = Tsdb()
    w = writer(tsdb)
    assert w.write([]) == 0
    assert w.write([series({"__name__": "m"}, [1, 2], [np.nan, np.nan])]) == 0
    assert tsdb.requests == []


def test_repeated_timestamp_keeps_the_last_value() -> None:
    tsdb = Tsdb()
    writer(tsdb).write([series({"__name__": "m"}, [2, 1, 2], [20.0, 10.0, 21.0])])
    assert samples_of(tsdb.bodies[0]) == {"__name__=m": [(1000, 10.0), (2000, 21.0)]}


def test_batches_are_bounded_and_split_series_stay_in_time_order() -> None:
    tsdb = Tsdb()
    batch = [
        series({"__name__": "m", "i": str(i)}, list(range(7, 0, -1)), [7.0] * 7) for i in range(3)
    ]
    sent = writer(tsdb, batch_samples=5).write(batch)

    assert sent == 21
    bodies = [samples_of(b) for b in tsdb.bodies]
    assert [sum(len(v) for v in b.values()) for b in bodies] == [5, 5, 5, 5, 1]
    merged: dict[str, list[tuple[int, float]]] = {}
    for body in bodies:
        for key, points in body.items():
            assert points == sorted(points)
            merged.setdefault(key, []).extend(points)
    assert merged == {f"__name__=m,i={i}": [(t * 1000, 7.0) for t in range(1, 8)] for i in range(3)}


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(503, text="overloaded"),
        httpx.Response(429, text="slow down"),
        httpx.ConnectError("connection refused"),
    ],
    ids=["503", "429", "connect-error"],
)
def test_retries_transient_failures_then_succeeds(failure: httpx.Response | Exception) -> None:
    tsdb = Tsdb(failure, failure, httpx.Response(204))
    assert writer(tsdb).write([series({"__name__": "m"}, [1], [1.0])]) == 1
    assert len(tsdb.requests) == 3
    assert tsdb.requests[0].content == tsdb.requests[2].content


def test_gives_up_with_the_servers_last_message() -> None:
    tsdb = Tsdb(httpx.Response(503, text="overloaded"), httpx.Response(503, text="still down"))
    with pytest.raises(TsdbUnavailable, match="HTTP 503: still down") as info:
        writer(tsdb, max_retries=2).write([series({"__name__": "m"}, [1], [1.0])])
    assert len(tsdb.requests) == 3
    assert info.value.status == 503
    assert info.value.url == URL


@pytest.mark.parametrize(
    "failure",
    [
        httpx.Response(500, text="disk full"),
        httpx.Response(504, text="gateway timeout"),
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("server disconnected"),
    ],
    ids=["500", "504", "read-timeout", "disconnected"],
)
def test_a_request_whose_fate_is_unknown_is_not_sent_again(
    failure: httpx.Response | Exception,
) -> None:
    # VictoriaMetrics would store a second copy: the caller completes the window from what
    # the TSDB holds instead.
    tsdb = Tsdb(httpx.Response(204), failure, httpx.Response(204))
    w = writer(tsdb, batch_samples=1)
    with pytest.raises(WriteUncertain, match="1 samples written before it"):
        w.write([series({"__name__": "m"}, [1, 2, 3], [1.0, 2.0, 3.0])])
    assert len(tsdb.requests) == 2


def test_out_of_order_is_an_error_not_a_success() -> None:
    # Prometheus drops the whole request: the new samples in it were not written either.
    tsdb = Tsdb(httpx.Response(400, text="out of order sample"))
    with pytest.raises(WriteRejected, match="out of order"):
        writer(tsdb, flavor="prometheus").write([series({"__name__": "m"}, [1], [1.0])])


def test_the_write_horizon_is_the_flavors() -> None:
    assert writer(Tsdb(), flavor="prometheus").oldest_accepted() == NOW - 3300
    assert writer(Tsdb(), flavor="victoriametrics").oldest_accepted() is None


def test_a_client_error_is_not_retried_and_surfaces_the_server_text() -> None:
    tsdb = Tsdb(httpx.Response(400, text="out of bounds"))
    with pytest.raises(WriteRejected, match="HTTP 400: out of bounds") as info:
        writer(tsdb).write([series({"__name__": "m"}, [1], [1.0])])
    assert len(tsdb.requests) == 1
    assert info.value.status == 400


def test_retries_back_off_exponentially() -> None:
    sleeps: list[float] = []
    tsdb = Tsdb(httpx.Response(503))
    w = writer(tsdb, max_retries=3, backoff=0.5)
    # tenacity sleeps through time.sleep; record the delays instead of waiting for them.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(time, "sleep", sleeps.append)
        with pytest.raises(TsdbUnavailable):
            w.write([series({"__name__": "m"}, [1], [1.0])])
    assert sleeps == [0.5, 1.0, 2.0]


def test_future_samples_are_dropped_unless_victoriametrics(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batch = [series({"__name__": "m"}, [NOW - 60, NOW + 60, NOW + 61, NOW + 86400], [1, 2, 3, 4])]
    tsdb = Tsdb()
    with caplog.at_level(logging.WARNING):
        assert writer(tsdb, flavor="prometheus").write(batch) == 2
    assert samples_of(tsdb.bodies[0]) == {
        "__name__=m": [((NOW - 60) * 1000, 1.0), ((NOW + 60) * 1000, 2.0)]
    }
    (record,) = caplog.records
    assert "dropped 2 samples" in record.getMessage()

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert writer(Tsdb(), flavor="victoriametrics").write(batch) == 4
    assert caplog.records == []


def test_an_unknown_flavor_is_refused() -> None:
    with pytest.raises(ValueError, match="flavor must be one of prometheus, victoriametrics"):
        RemoteWriteWriter(URL, flavor="influx")  # type: ignore[arg-type]


def test_mismatched_timestamps_and_values_are_refused() -> None:
    bad = OutputSeries({"__name__": "m"}, np.array([1, 2]), np.array([1.0]))
    with pytest.raises(ValueError, match="2 timestamps but 1 values"):
        writer(Tsdb()).write([bad])


def _panel(n_series: int, outputs: tuple[str, ...]) -> list[OutputSeries]:
    ts, out = np.array([NOW]), []
    for i in range(n_series):
        base = {
            "instance": f"host-{i}:9100",
            "job": "node",
            "pipeline": "api-latency",
            "source_metric": "http_requests_total",
            "service": f"svc-{i % 50}",
        }
        out += [OutputSeries({"__name__": n, **base}, ts, np.array([i / 7])) for n in outputs]
    return out


def test_ten_thousand_series_times_four_outputs_are_encoded_in_bounded_batches() -> None:
    # How fast this is belongs to bench/throughput.py (its "write" share), not to a test
    # whose threshold would flake on a shared machine.
    panel = _panel(10_000, ("anomaly_score", "anomaly_pred", "anomaly_lower", "anomaly_upper"))
    bodies = list(encode(flatten(panel, max_ts=NOW + 60), batch_samples=15_000))

    assert [count for _, count in bodies] == [15_000, 15_000, 10_000]
    assert [len(decode(body).timeseries) for body, _ in bodies] == [15_000, 15_000, 10_000]


def _check(label: str) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["X-Scope-OrgID"] == label
        return httpx.Response(204)

    return handler


def test_the_given_client_is_used_as_is() -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(_check("team-a")), headers={"X-Scope-OrgID": "team-a"}
    )
    w = RemoteWriteWriter(URL, client=client)
    assert w.write([series({"__name__": "m"}, [1], [1.0])]) == 1


def test_dropped_samples_are_counted_by_reason() -> None:
    batch = [
        series({"__name__": "m"}, [NOW - 60, NOW, NOW + 86400], [1.0, float("nan"), 3.0]),
        series({"__name__": "n"}, [NOW - 60], [float("inf")]),
    ]
    metrics = PrometheusTelemetry()

    assert writer(Tsdb(), flavor="prometheus", on_drop=metrics.samples_dropped).write(batch) == 1

    text = metrics.exposition()[0].decode()
    assert 'openanomaly_samples_dropped_total{reason="non_finite"} 2.0' in text
    assert 'openanomaly_samples_dropped_total{reason="future"} 1.0' in text
