"""`openanomaly api` against real VictoriaMetrics: a pipeline created through the API is trained
and inferred through the 202 routes, its runs read back at /api/v1/jobs and by
`openanomaly jobs`, and the API alone schedules nothing of its own."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.synthetic import as_output, inject, seasonal_panel
from tests.e2e.test_cli_detection import oa, oa_env
from tests.servers import TsdbServer, free_port

pytestmark = pytest.mark.e2e
TOKEN = "jobs-token-value"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
STEP = 5


@pytest.fixture
def api(victoriametrics: TsdbServer, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    env = {
        **oa_env(victoriametrics, tmp_path),
        "OA_API__PORT": str(free_port()),
        "OA_API__TOKEN": TOKEN,
    }
    log = tmp_path / "api.log"
    cli = Path(sys.executable).parent / "openanomaly"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(cli), "api"], env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{env['OA_API__PORT']}"
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
    yield url, env
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0, log.read_text()
    assert TOKEN not in log.read_text()


def ended(url: str, answer: httpx.Response, timeout: float = 90) -> dict[str, Any]:
    """The run of a queued job, once it has ended."""
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]
    assert location == f"/api/v1/jobs/{answer.json()['job_id']}"
    deadline = time.monotonic() + timeout
    while True:
        row = httpx.get(f"{url}{location}", headers=AUTH).json()
        if row["status"] not in ("queued", "running"):
            return dict(row)
        assert time.monotonic() < deadline, row
        time.sleep(0.2)


def test_jobs_queued_through_the_api_are_run_and_listed(
    api: tuple[str, dict[str, str]], victoriametrics: TsdbServer
) -> None:
    url, env = api
    metric = f"jobs_{uuid.uuid4().hex[:10]}"
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - 3600, now + 1, STEP)
    panel, _ = inject(
        seasonal_panel(3, ts, period=600, metric=metric, seed=3), spikes=[(0, ts.size - 30)]
    )
    with RemoteWriteWriter(victoriametrics.write_url, flavor="victoriametrics") as writer:
        writer.write(as_output(panel))
    victoriametrics.flush()
    pid = metric.replace("_", "-")
    pipeline = {
        "id": pid,
        "query": metric,
        "step": f"{STEP}s",
        "train": {"window": "40m"},
        "infer": {"every": f"{STEP}s", "context": "10m", "delay": "1s", "max_catchup": "5m"},
        "model": {"name": "profile", "params": {"season": "10m"}},
        "scoring": {"interval": 0.999},
    }
    assert httpx.put(f"{url}/api/v1/pipelines/{pid}", json=pipeline, headers=AUTH).is_success

    trained = ended(url, httpx.post(f"{url}/api/v1/pipelines/{pid}/train", headers=AUTH))
    assert (trained["status"], trained["kind"], trained["series"]) == ("ok", "train", 3)
    inferred = ended(url, httpx.post(f"{url}/api/v1/pipelines/{pid}/infer", headers=AUTH))
    assert (inferred["status"], inferred["series"]) == ("ok", 3), inferred
    assert inferred["points"] >= 3 * 50 and inferred["anomalies"] >= 1, inferred

    victoriametrics.flush()
    with PrometheusReader(victoriametrics.url) as reader:
        scores = reader.query_range(
            f'anomaly_score{{pipeline="{pid}"}}', now - 300, int(time.time()), STEP
        )
    assert len(scores) == 3
    assert int((np.nan_to_num(scores.values) > 1).sum()) == inferred["anomalies"]

    time.sleep(3)  # the API alone schedules nothing: no run but the two asked for
    listed = httpx.get(f"{url}/api/v1/jobs", params={"pipeline": pid}, headers=AUTH).json()
    assert [r["job_id"] for r in listed] == [inferred["job_id"], trained["job_id"]]
    assert listed == [inferred, trained]
    assert httpx.get(f"{url}/api/v1/jobs/nope", headers=AUTH).status_code == 404

    table = oa(env, "jobs", "--pipeline", pid).stdout
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in table.splitlines()]
    cells = {row[0]: row for row in rows if len(row) == 12 and row[1] == pid}
    assert set(cells) == {trained["job_id"], inferred["job_id"]}, table
    for run in (trained, inferred):
        row = cells[run["job_id"]]
        assert row[2:4] == [run["kind"], "ok"], table
        assert row[7:11] == [str(run[k]) for k in ("series", "points", "anomalies", "attempts")]
    shown = json.loads(oa(env, "jobs", inferred["job_id"]).stdout)
    assert shown == inferred
