"""``backtest --write`` over a range the service already scored, on Prometheus: it says how
many samples were written and how many were not rewritten and why, instead of a bare "wrote
0" (or a refused request that loses the new samples beside the held ones)."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.synthetic import as_output, seasonal_panel
from tests.e2e.test_cli_detection import oa, oa_env
from tests.servers import TsdbServer

pytestmark = pytest.mark.e2e
STEP = 10


def test_backtest_write_on_prometheus_reports_the_refused_rewrites(
    prometheus: TsdbServer, tmp_path: Path
) -> None:
    metric = f"rw_{uuid.uuid4().hex[:10]}"
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - 40 * 60, now + 1, STEP)  # Prometheus takes nothing older than ~1 h
    with RemoteWriteWriter(prometheus.write_url, flavor="prometheus") as writer:
        writer.write(as_output(seasonal_panel(2, ts, period=600, metric=metric, seed=7)))
    pid = f"rw-{metric[3:]}"
    (tmp_path / "p.yaml").write_text(
        f"pipelines:\n  - id: {pid}\n    query: {metric}\n    step: {STEP}s\n"
        f"    train: {{window: 20m, every: 10m}}\n    infer: {{every: 60s, context: 10m}}\n"
        f"    model: {{params: {{season: 600s}}}}\n"
    )
    env = oa_env(prometheus, tmp_path)
    oa(env, "pipelines", "apply", str(tmp_path / "p.yaml"))
    oa(env, "train", pid, "--end", str(now - 600))
    live = oa(env, "infer", pid, "--from", str(now - 600), "--to", str(now)).stdout
    assert "samples written" in live and " 0 samples written" not in live, live

    out = oa(env, "backtest", pid, "--from", str(now - 600), "--to", str(now), "--write").stdout
    assert re.search(r"wrote \d+ samples to a prometheus", out), out
    held = re.search(r"not rewritten: (\d+) samples at timestamps the TSDB already holds", out)
    assert held is not None and int(held.group(1)) > 0, out
