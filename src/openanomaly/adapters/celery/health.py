"""The small HTTP server of ``openanomaly worker`` (and ``beat``): ``GET /healthz`` and
``GET /metrics`` on ``OA_HEALTH_PORT``, in a thread of the process it reports on."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

Status = Callable[[], tuple[bool, dict[str, Any]]]
"""Whether the process is healthy, and what the body of ``/healthz`` says about it."""
Metrics = Callable[[], tuple[bytes, str]]
"""The scrape page of ``/metrics``: body and content type."""


class HealthServer:
    """``/healthz`` answers 200 with ``{"status": "ok", ...}`` while ``status()`` says healthy,
    else 503 with ``"status": "unavailable"``; ``/metrics`` serves ``metrics()``. It listens on
    every interface (probes and scrapers come from outside the host) and holds no secret."""

    def __init__(self, port: int, *, status: Status, metrics: Metrics, host: str = "") -> None:
        self._server = ThreadingHTTPServer((host, port), _handler(status, metrics))
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.2,), name="oa-health", daemon=True
        )

    def start(self) -> HealthServer:
        self._thread.start()
        log.info("health and metrics on port %d (/healthz, /metrics)", self.port)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def _handler(status: Status, metrics: Metrics) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            try:
                if path == "/healthz":
                    ok, body = status()
                    payload = {"status": "ok" if ok else "unavailable", **body}
                    self._send(200 if ok else 503, json.dumps(payload).encode(), "application/json")
                elif path == "/metrics":
                    page, content_type = metrics()
                    self._send(200, page, content_type)
                else:
                    self._send(404, b'{"error": "not found"}', "application/json")
            except Exception:
                log.exception("health server: %s failed", path)
                self._send(500, b'{"error": "internal error"}', "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a probe every few seconds is noise in the worker's log

    return Handler
