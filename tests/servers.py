"""Real servers for integration tests, started on free loopback ports in temp directories.

The fixtures in ``conftest.py`` wrap these helpers. A missing server binary fails the test
with the command that installs it: a silently skipped integration test proves nothing.
"""

from __future__ import annotations

import base64
import http.client
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import SplitResult, urlsplit

import httpx
import pytest

INSTALL = "apt-get install -y prometheus victoria-metrics"

WAIT = 240
"""Seconds a test waits for a process it started to make progress (answer, pass a checkpoint):
the bound of a hung process, not a figure any test checks. Tests run side by side
(pytest-xdist) on shared cores, where every process is slower than on an idle machine."""

PROMETHEUS_CONFIG = """\
global:
  scrape_interval: 15s
scrape_configs: []
"""


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_binary(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.fail(f"{name} is not installed: {INSTALL}", pytrace=False)
    return path


@dataclass
class TsdbServer:
    """A running TSDB: ``url`` is its Prometheus HTTP API, ``write_url`` its remote write."""

    flavor: Literal["prometheus", "victoriametrics"]
    url: str
    write_url: str
    process: subprocess.Popen[bytes] = field(repr=False)
    log: Path = field(repr=False)

    def flush(self) -> None:
        """Make what was just written visible to queries (VictoriaMetrics buffers ~1 s)."""
        if self.flavor == "victoriametrics":
            httpx.get(f"{self.url}/internal/force_flush", timeout=10).raise_for_status()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


def start_prometheus(workdir: Path, *, scrape_self: str | None = None) -> TsdbServer:
    """A Prometheus with no scrape target, or scraping itself every ``scrape_self`` (``1s``),
    as a stock one does: the README's quick start runs on its own metrics."""
    port = free_port()
    config = workdir / "prometheus.yml"
    config.write_text(
        PROMETHEUS_CONFIG
        if scrape_self is None
        else f"global:\n  scrape_interval: {scrape_self}\nscrape_configs:\n"
        f"  - job_name: prometheus\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{port}']\n"
    )
    args = [
        find_binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-remote-write-receiver",
        "--log.level=warn",
    ]
    url = f"http://127.0.0.1:{port}"
    return _start(
        flavor="prometheus",
        args=args,
        workdir=workdir,
        url=url,
        write_url=f"{url}/api/v1/write",
        ready_url=f"{url}/-/ready",
    )


def start_victoriametrics(
    workdir: Path, *, latency_offset: str = "0s", extra_args: Sequence[str] = ()
) -> TsdbServer:
    """``latency_offset``: VictoriaMetrics' ``-search.latencyOffset`` ("" for its default);
    ``extra_args``: more of its flags (the scale bench lifts its per-query series limit)."""
    port = free_port()
    args = [
        find_binary("victoria-metrics"),
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={workdir / 'data'}",
        "-retentionPeriod=100y",
        # Show the newest points at once and never answer from the rollup cache, so a test
        # reads exactly what it has just written.
        *([f"-search.latencyOffset={latency_offset}"] if latency_offset else []),
        "-search.disableCache",
        "-loggerLevel=ERROR",
        *extra_args,
    ]
    url = f"http://127.0.0.1:{port}"
    return _start(
        flavor="victoriametrics",
        args=args,
        workdir=workdir,
        url=url,
        write_url=f"{url}/api/v1/write",
        ready_url=f"{url}/health",
    )


def _start(
    *,
    flavor: Literal["prometheus", "victoriametrics"],
    args: list[str],
    workdir: Path,
    url: str,
    write_url: str,
    ready_url: str,
) -> TsdbServer:
    log = workdir / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
    server = TsdbServer(flavor, url, write_url, process, log)
    _wait_ready(server, ready_url)
    return server


def _wait_ready(server: TsdbServer, ready_url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"{server.flavor} exited at start:\n{_tail(server.log)}", pytrace=False)
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.stop()
    pytest.fail(f"{server.flavor} not ready after {timeout}s:\n{_tail(server.log)}", pytrace=False)


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class Recorded:
    """One request as the recording proxy received it (header names lower-cased)."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: bytes


class RecordingProxy:
    """A loopback HTTP proxy that records every request, then forwards it to ``upstream``.

    With ``require`` set, a request missing one of those exact header values is answered
    ``401`` and not forwarded, like an authenticating gateway in front of a TSDB.
    """

    def __init__(self, upstream: str, *, require: Mapping[str, str] | None = None) -> None:
        self.upstream = urlsplit(upstream)
        self.require = dict(require or {})
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )
        self._thread.start()

    def record(self, request: Recorded) -> None:
        with self._lock:
            self.requests.append(request)

    def allowed(self, headers: Mapping[str, str]) -> bool:
        return all(headers.get(name.lower()) == value for name, value in self.require.items())

    def forward(self, request: Recorded) -> tuple[int, list[tuple[str, str]], bytes]:
        return forward(self.upstream, request)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


Reply = tuple[int, list[tuple[str, str]], bytes]
"""An HTTP answer: status, headers, body."""


def forward(upstream: SplitResult, request: Recorded, *, timeout: float = 60) -> Reply:
    """Send ``request`` to ``upstream`` as it came (less hop-by-hop headers); its answer."""
    conn = http.client.HTTPConnection(
        upstream.hostname or "127.0.0.1", upstream.port, timeout=timeout
    )
    try:
        skip = {"host", "connection", "content-length", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skip}
        conn.request(request.method, request.path, body=request.body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        conn.close()


def answer(handler: BaseHTTPRequestHandler, reply: Reply) -> None:
    """Send ``reply`` through ``handler`` with its own Content-Length."""
    status, headers, body = reply
    handler.send_response(status)
    for name, value in headers:
        if name.lower() not in ("transfer-encoding", "connection", "content-length"):
            handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def basic_auth(user: str, password: str) -> str:
    """The ``Authorization`` header value of HTTP basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _handler(proxy: RecordingProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._relay()

        def do_POST(self) -> None:
            self._relay()

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received = {name.lower(): value for name, value in self.headers.items()}
            request = Recorded(self.command, self.path, received, self.rfile.read(length))
            proxy.record(request)
            if not proxy.allowed(request.headers):
                answer(self, (401, [("Content-Type", "text/plain")], b"unauthorized"))
            else:
                answer(self, proxy.forward(request))

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output clean

    return Handler
