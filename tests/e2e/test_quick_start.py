"""The README's quick start on a stock Prometheus that scrapes itself: validate against the
TSDB, run, see scores written back, the pipeline's status, and readiness follow the TSDB."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_isolation import CLI, start_service
from tests.servers import free_port, start_prometheus

pytestmark = pytest.mark.e2e

PIPELINES = """\
pipelines:
  - id: prom-requests
    query: sum by (job) (rate(prometheus_http_requests_total[5m]))
    step: 2s
    train: {window: 1m, every: 20s}
    infer: {every: 2s, context: 1m, delay: 2s}
    model: {engine: builtin, name: profile}
"""


def wait_for(what: str, check: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    pytest.fail(f"{what} not seen after {timeout}s:\n{log.read_text()[-4000:]}")


def test_the_quick_start_runs_on_a_prometheus_scraping_itself(tmp_path: Path) -> None:
    prometheus = start_prometheus(tmp_path, scrape_self="1s")
    try:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OA_")},
            "OA_TSDB__URL": prometheus.url,  # no OA_TSDB__FLAVOR: it is detected
            "OA_DATABASE_URL": f"sqlite:///{tmp_path / 'oa.db'}",
            "OA_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
            "OA_API__PORT": str(free_port()),
        }
        pipelines = tmp_path / "pipelines.yaml"
        pipelines.write_text(PIPELINES)
        time.sleep(20)  # more than the 15 s of history a 1m window needs before scores
        checked = subprocess.run(
            [str(CLI), "validate", str(pipelines), "--tsdb"],
            env=env,
            check=False,
            capture_output=True,
            text=True,
        )
        assert checked.returncode == 0, checked.stderr
        assert "prom-requests: info: 1 series now" in checked.stdout, checked.stdout

        log = tmp_path / "service.log"
        proc, url = start_service(env, log, "--pipelines", str(pipelines))
        try:
            assert "detected as prometheus" in log.read_text()

            def scores_written() -> bool:
                r = httpx.get(
                    f"{prometheus.url}/api/v1/query",
                    params={"query": 'count(anomaly_score{pipeline="prom-requests"})'},
                )
                return bool(r.json()["data"]["result"])

            wait_for("anomaly_score in Prometheus", scores_written, 90, log)
            status = httpx.get(f"{url}/api/v1/pipelines/prom-requests/status")
            assert status.status_code == 200 and status.json()["ok"], status.text
            assert status.json()["waiting"] is None
            assert httpx.get(f"{url}/readyz").status_code == 200

            prometheus.stop()
            wait_for(
                "/readyz 503 with the TSDB down",
                lambda: httpx.get(f"{url}/readyz", timeout=10).status_code == 503,
                30,
                log,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()[-4000:]
    finally:
        prometheus.stop()
