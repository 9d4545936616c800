"""The OpenAnomaly demo: a local VictoriaMetrics, series with known anomalies, the standalone
service running for a few cycles, and the anomalies found (a PromQL query and a PNG plot).

Run it with ``scripts/demo`` (which installs what it needs first).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.timeparse import iso
from openanomaly.plot import plot_scored
from openanomaly.synthetic import as_output, inject, seasonal_panel

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
OUT = ROOT / "demo-out"
STEP = 15
CYCLES = 4
N_SERIES = 8

PIPELINES = f"""\
pipelines:
  - id: demo
    query: demo_requests
    step: {STEP}s
    train: {{window: 5h, every: 1h}}
    infer: {{every: {STEP}s, context: 1h, delay: 1s, max_catchup: 20m}}
    model: {{engine: builtin, name: profile, params: {{season: 1h}}}}
    scoring: {{direction: both, interval: 0.999}}
    outputs: {{labels: {{team: demo}}}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited early (code {proc.returncode}); see {WORK}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    sys.exit(f"{what} not ready after {timeout}s")


def start_victoriametrics() -> tuple[subprocess.Popen[bytes], str]:
    """Start VictoriaMetrics in the background; it keeps running after the demo so that the
    results can be explored (a second demo run stops the first one's)."""
    pidfile = WORK / "victoria-metrics.pid"
    if pidfile.exists():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
            time.sleep(1)
        shutil.rmtree(WORK / "vmdata", ignore_errors=True)
    port = free_port()
    log = (WORK / "victoria-metrics.log").open("wb")
    proc = subprocess.Popen(
        [
            "victoria-metrics",
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={WORK / 'vmdata'}",
            "-retentionPeriod=100y",
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", proc, "victoria-metrics")
    return proc, url


def infer_runs(api: str) -> int:
    text = httpx.get(f"{api}/metrics", timeout=5).text
    m = re.search(r'openanomaly_jobs_total\{kind="infer",pipeline="demo",status="ok"\} (\S+)', text)
    return int(float(m.group(1))) if m else 0


def main() -> int:
    WORK.mkdir(exist_ok=True)
    OUT.mkdir(exist_ok=True)
    for stale in ("oa.db", "oa.db-wal", "oa.db-shm"):
        (WORK / stale).unlink(missing_ok=True)
    vm, url = start_victoriametrics()
    service: subprocess.Popen[bytes] | None = None
    try:
        print(f"VictoriaMetrics on {url}")
        now = int(time.time()) // STEP * STEP
        history_ts = np.arange(now - 6 * 3600, now + 1, STEP)
        n = history_ts.size
        panel = seasonal_panel(N_SERIES, history_ts, period=3600, metric="demo_requests", seed=7)
        # A spike 6 minutes ago on host-00002; a level shift from 10 to 4 minutes ago on -00005.
        panel, _ = inject(
            panel,
            spikes=[(2, n - 1 - 360 // STEP)],
            shifts=[(5, n - 1 - 600 // STEP, n - 1 - 240 // STEP)],
        )
        writer = RemoteWriteWriter(f"{url}/api/v1/write", flavor="victoriametrics")
        writer.write(as_output(panel))
        print(f"loaded {N_SERIES} series x {n} points (6h, step {STEP}s) with 2 known anomalies")

        pipelines = WORK / "pipelines.yaml"
        pipelines.write_text(PIPELINES)
        api_port = free_port()
        env = {
            **os.environ,
            "OA_TSDB__URL": url,
            "OA_TSDB__FLAVOR": "victoriametrics",
            "OA_DATABASE_URL": f"sqlite:///{WORK / 'oa.db'}",
            "OA_ARTIFACTS_DIR": str(WORK / "artifacts"),
            "OA_API__PORT": str(api_port),
        }
        log = (WORK / "openanomaly.log").open("wb")
        service = subprocess.Popen(
            ["openanomaly", "run", "--pipelines", str(pipelines)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        api = f"http://127.0.0.1:{api_port}"
        wait_http(f"{api}/healthz", service, "openanomaly run")
        print(f"openanomaly run: API on {api}, log in {WORK / 'openanomaly.log'}")
        feed_live(writer, panel, now, api)
    finally:
        if service is not None:
            service.send_signal(signal.SIGINT)
            service.wait(timeout=30)
    code = report(url)
    print(f"\nVictoriaMetrics keeps running at {url} for you to explore (stop it: kill {vm.pid}).")
    return code


def feed_live(writer: RemoteWriteWriter, panel: SeriesBatch, now: int, api: str) -> None:
    """Write one new normal point per step, as a scrape would, until the service has run its
    inference cycles on them."""
    rng = np.random.default_rng(1)
    base = panel.values[:, -1 - 3600 // STEP]  # same phase one season ago
    t = now
    while infer_runs(api) < CYCLES:
        t += STEP
        time.sleep(max(0.0, t + 1 - time.time()))
        values = base * (1 + 0.03 * rng.standard_normal(base.size))
        writer.write(as_output(SeriesBatch(panel.labels, np.array([t]), values[:, None])))
        print(f"  cycle: wrote {iso(t)}, inference runs so far: {infer_runs(api)}")


def report(url: str) -> int:
    query = "max_over_time(anomaly_score[30m]) > 1"
    print(f"\nAnomalies found (PromQL: {query}):")
    print(f"  curl -s '{url}/api/v1/query' --data-urlencode 'query={query}'")
    body = httpx.post(f"{url}/api/v1/query", data={"query": query}, timeout=10).json()
    found = sorted(
        (r["metric"].get("instance", "?"), float(r["value"][1])) for r in body["data"]["result"]
    )
    for instance, peak in found:
        print(f"  {instance}: peak anomaly_score {peak:.1f}")
    reader = PrometheusReader(url)
    end = int(time.time())
    start = end - 3600
    actual = reader.query_range("demo_requests", start, end, STEP)
    parts = {
        name: reader.query_range(f'{name}{{pipeline="demo"}}', start, end, STEP)
        for name in ("anomaly_score", "anomaly_pred", "anomaly_lower", "anomaly_upper")
    }
    scored = Scored(*(align_rows(actual, parts[n]) for n in parts))
    png = plot_scored(actual, scored, OUT / "demo.png", title="OpenAnomaly demo: the last hour")
    print(f"\nPlot: {png}")
    expected = {"host-00002", "host-00005"}
    if expected <= {i for i, _ in found}:
        print("Both injected anomalies were found.")
        return 0
    print(f"Expected anomalies on {sorted(expected)}, found {found}")
    return 1


def align_rows(actual: SeriesBatch, written: SeriesBatch) -> np.ndarray:
    """The written series' values in the rows and columns of ``actual`` (by instance)."""
    out = np.full(actual.values.shape, np.nan)
    rows = {lb["instance"]: i for i, lb in enumerate(actual.labels)}
    cols = np.searchsorted(actual.timestamps, written.timestamps)
    for lb, values in zip(written.labels, written.values, strict=True):
        out[rows[lb["instance"]], cols] = values
    return out


if __name__ == "__main__":
    sys.exit(main())
