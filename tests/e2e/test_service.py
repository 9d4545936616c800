"""`openanomaly run` as a user runs it: the standalone service against real VictoriaMetrics,
managed over its HTTP API with a token, scheduling training and inference on its own."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.synthetic import as_output, inject, seasonal_panel
from tests.e2e.test_cli_detection import oa_env
from tests.e2e.test_isolation import start_service
from tests.servers import TsdbServer, free_port

pytestmark = pytest.mark.e2e
TOKEN = "s3cret-token-value"
STEP = 5


@pytest.fixture
def service(victoriametrics: TsdbServer, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {
        **oa_env(victoriametrics, tmp_path),
        "OA_API__PORT": str(port),
        "OA_API__TOKEN": TOKEN,
        "OA_ENVIRONMENT": "production",
    }
    log = tmp_path / "service.log"
    proc, url = start_service(env, log)
    yield url, log
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    assert TOKEN not in log.read_text()


def test_service_schedules_training_and_inference(
    service: tuple[str, Path], victoriametrics: TsdbServer
) -> None:
    url, log = service
    metric = f"svc_{uuid.uuid4().hex[:10]}"
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - 3600, now + 1, STEP)
    panel, _ = inject(
        seasonal_panel(3, ts, period=600, metric=metric, seed=3), spikes=[(0, ts.size - 30)]
    )
    with RemoteWriteWriter(victoriametrics.write_url, flavor="victoriametrics") as writer:
        writer.write(as_output(panel))
    victoriametrics.flush()

    pipeline = {
        "id": metric.replace("_", "-"),
        "query": metric,
        "step": f"{STEP}s",
        "train": {"window": "40m"},
        "infer": {"every": f"{STEP}s", "context": "10m", "delay": "1s", "max_catchup": "5m"},
        "model": {"name": "profile", "params": {"season": "10m"}},
        "scoring": {"interval": 0.999},
    }
    pid = pipeline["id"]
    assert httpx.put(f"{url}/api/v1/pipelines/{pid}", json=pipeline).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = httpx.put(f"{url}/api/v1/pipelines/{pid}", json=pipeline, headers=auth)
    assert r.status_code == 200, r.text
    bad = httpx.put(
        f"{url}/api/v1/pipelines/x", json={**pipeline, "id": "x", "step": "7q"}, headers=auth
    )
    assert bad.status_code == 422 and "step" in bad.text

    # Train now through the API; the scheduler picks the pipeline up at its next store sync.
    r = httpx.post(f"{url}/api/v1/pipelines/{pid}/train", headers=auth)
    assert r.status_code == 202, r.text
    job = f"{url}{r.headers['location']}"
    deadline = time.monotonic() + 60
    while (run := httpx.get(job, headers=auth).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, run
        time.sleep(0.2)
    assert (run["status"], run["series"]) == ("ok", 3), run
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        metrics = httpx.get(f"{url}/metrics").text
        if f'openanomaly_jobs_total{{kind="infer",pipeline="{pid}",status="ok"}}' in metrics:
            break
        time.sleep(1)
    else:
        pytest.fail(f"no scheduled inference ran:\n{log.read_text()[-3000:]}")
    models = httpx.get(f"{url}/api/v1/pipelines/{pid}/models", headers=auth).json()
    assert models[0]["active"] and models[0]["series"] == 3
    victoriametrics.flush()
    with PrometheusReader(victoriametrics.url) as reader:
        scores = reader.query_range(
            f'anomaly_score{{pipeline="{pid}"}}', now - 300, int(time.time()), STEP
        )
    assert len(scores) == 3
    spiked = next(i for i, lb in enumerate(scores.labels) if lb["instance"] == "host-00000")
    assert np.nanmax(scores.values[spiked]) > 1
    assert httpx.get(f"{url}/api/v1/pipelines/nope", headers=auth).status_code == 404
