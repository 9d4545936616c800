"""Fault injection and the raw-sample checker of the exactly-once tests.

``FaultProxy`` stands between OpenAnomaly and a real TSDB on loopback and, at chosen requests,
delays them, drops the connection (before or after forwarding) or answers 429/500 itself.
``raw_samples`` reads back every stored sample of a pipeline's outputs, duplicates included
(VictoriaMetrics ``/api/v1/export``; Prometheus a range selector, which returns raw samples), so
a test can assert that each (series, timestamp) of each output is there exactly once.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx
import numpy as np

from tests.servers import Recorded, Reply, TsdbServer, answer, forward

OUTPUTS = ("anomaly_score", "anomaly_pred", "anomaly_lower", "anomaly_upper")

SeriesId = tuple[tuple[str, str], ...]
"""A series' labels, sorted, without ``pipeline``: the same series in two pipelines."""


@dataclass(frozen=True)
class Fault:
    """What the proxy does to one request. ``status`` answers it without forwarding; ``drop``
    closes the connection without an answer, ``after`` (forward first, then drop the answer:
    the TSDB has the samples, the client does not know it)."""

    delay: float = 0.0
    status: int | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    drop: bool = False
    after: bool = False


Rule = Callable[[int, str, str], Fault | None]
"""(index of the request among those to ``path``, method, path) -> the fault, or None."""


class FaultProxy:
    """A loopback HTTP proxy to ``upstream`` that applies ``rule`` to every request."""

    def __init__(self, upstream: str, rule: Rule | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.rule: Rule = rule or (lambda _i, _m, _p: None)
        self.counts: Counter[str] = Counter()
        self.faults: list[tuple[str, Fault]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def decide(self, method: str, path: str) -> Fault | None:
        route = path.split("?", 1)[0]
        with self._lock:
            index = self.counts[route]
            self.counts[route] += 1
        fault = self.rule(index, method, route)
        if fault is not None:
            with self._lock:
                self.faults.append((route, fault))
        return fault

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def _handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._relay()

        def do_POST(self) -> None:
            self._relay()

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received = {name.lower(): value for name, value in self.headers.items()}
            request = Recorded(self.command, self.path, received, self.rfile.read(length))
            fault = proxy.decide(self.command, self.path) or Fault()
            if fault.delay:
                time.sleep(fault.delay)
            if fault.drop and not fault.after:
                self._drop()
                return
            if fault.status is not None:
                reply: Reply = (fault.status, list(fault.headers.items()), b"injected fault")
            else:
                reply = forward(proxy.upstream, request)
            if fault.drop:
                self._drop()
                return
            answer(self, reply)

        def _drop(self) -> None:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


# --- reading back raw samples -----------------------------------------------------------------


Samples = dict[tuple[str, SeriesId], list[tuple[int, float]]]
"""(output metric, series) -> every stored (timestamp s, value), duplicates kept, in order."""


def raw_samples(server: TsdbServer, pipeline: str, start: int, end: int) -> Samples:
    """Every stored sample of ``pipeline``'s outputs with ``start < t <= end``."""
    server.flush()
    match = f'{{__name__=~"{"|".join(OUTPUTS)}",pipeline="{pipeline}"}}'
    out: Samples = {}
    if server.flavor == "victoriametrics":
        r = httpx.post(
            f"{server.url}/api/v1/export",
            data={"match[]": match, "start": str(start + 1), "end": str(end)},
            timeout=60,
        )
        r.raise_for_status()
        for line in r.text.splitlines():
            item = json.loads(line)
            key = _key(item["metric"])
            for ts_ms, value in zip(item["timestamps"], item["values"], strict=True):
                out.setdefault(key, []).append((int(ts_ms) // 1000, float(value)))
    else:
        r = httpx.get(
            f"{server.url}/api/v1/query",
            params={"query": f"{match}[{end - start}s]", "time": str(end)},
            timeout=60,
        )
        r.raise_for_status()
        for item in r.json()["data"]["result"]:
            key = _key(item["metric"])
            for ts, value in item["values"]:
                if start < float(ts) <= end:
                    out.setdefault(key, []).append((int(float(ts)), float(value)))
    return {k: sorted(v) for k, v in out.items()}


def _key(metric: Mapping[str, str]) -> tuple[str, SeriesId]:
    labels = tuple(sorted((k, v) for k, v in metric.items() if k not in ("__name__", "pipeline")))
    return metric["__name__"], labels


def duplicates(samples: Samples) -> dict[tuple[str, SeriesId], list[int]]:
    """The timestamps stored more than once, per output series."""
    out = {}
    for key, points in samples.items():
        counts = Counter(ts for ts, _ in points)
        dup = sorted(ts for ts, n in counts.items() if n > 1)
        if dup:
            out[key] = dup
    return out


def assert_exactly_once(got: Samples, reference: Samples) -> None:
    """Every (output, series, timestamp) of the undisturbed ``reference`` is in ``got`` exactly
    once, with the same value, and ``got`` holds nothing else."""
    dup = duplicates(got)
    assert not dup, f"samples stored more than once: {_summary(dup)}"
    assert not duplicates(reference), "the reference run itself wrote duplicates"
    missing, extra, differ = {}, {}, {}
    for key in set(got) | set(reference):
        mine = dict(got.get(key, []))
        ref = dict(reference.get(key, []))
        if lost := sorted(set(ref) - set(mine)):
            missing[key] = lost
        if more := sorted(set(mine) - set(ref)):
            extra[key] = more
        common = sorted(set(ref) & set(mine))
        a = np.array([mine[t] for t in common])
        b = np.array([ref[t] for t in common])
        if common and not np.allclose(a, b, rtol=1e-9, atol=0.0, equal_nan=True):
            differ[key] = [t for t, x, y in zip(common, a, b, strict=True) if x != y][:5]
    assert not missing, f"samples lost: {_summary(missing)}"
    assert not extra, f"samples the undisturbed run did not write: {_summary(extra)}"
    assert not differ, f"values differ from the undisturbed run: {_summary(differ)}"
    assert reference, "the reference run wrote nothing: the check would prove nothing"


def _summary(found: Mapping[tuple[str, SeriesId], list[int]]) -> str:
    total = sum(len(v) for v in found.values())
    first = next(iter(found.items()))
    return f"{total} samples in {len(found)} output series, e.g. {first[0]} at {first[1][:5]}"
