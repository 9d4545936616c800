"""The status's "points flagged in 24 hours", counted by each real TSDB from written scores."""

from __future__ import annotations

import time
import uuid

import numpy as np
import pytest

from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.records import OutputSeries
from openanomaly.domain.spec import Pipeline
from openanomaly.services.status import flagged
from tests.servers import TsdbServer

pytestmark = pytest.mark.integration

STEP = 60


def test_flagged_counts_the_points_scored_above_one(tsdb: TsdbServer) -> None:
    pid = f"p{uuid.uuid4().hex[:12]}"
    spec = Pipeline.model_validate({"id": pid, "query": "up", "step": "1m"})
    now = int(time.time()) // STEP * STEP
    grid = np.arange(now - 29 * STEP, now + 1, STEP, dtype=np.int64)
    scores = np.full(grid.size, 0.5)
    scores[[3, 4, 20]] = 2.0  # three flagged points, in two series' worth of rows
    other = np.full(grid.size, 3.0)  # another pipeline's: not counted
    series = [
        OutputSeries({"__name__": "anomaly_score", "pipeline": pid, "s": "a"}, grid, scores),
        OutputSeries({"__name__": "anomaly_score", "pipeline": pid, "s": "b"}, grid, scores),
        OutputSeries({"__name__": "anomaly_score", "pipeline": pid + "x"}, grid, other),
    ]
    with RemoteWriteWriter(tsdb.write_url, flavor=tsdb.flavor) as writer:
        writer.write(series)
    tsdb.flush()
    reader = PrometheusReader(tsdb.url)
    try:
        deadline = time.monotonic() + 10
        while (found := flagged(reader, spec, now)) != 6 and time.monotonic() < deadline:
            time.sleep(0.5)  # Prometheus shows remote-written samples within a moment
        assert found == 6
        quiet = Pipeline.model_validate({"id": pid + "q", "query": "up", "step": "1m"})
        assert flagged(reader, quiet, now) == 0
    finally:
        reader.close()
