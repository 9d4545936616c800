"""The TSDB checks of ``validate --tsdb`` and flavour detection against each real server."""

from __future__ import annotations

import time
import uuid

import httpx
import numpy as np

from openanomaly.adapters.prometheus.probe import TsdbProbe, detect_flavor
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.records import OutputSeries
from openanomaly.domain.spec import Pipeline
from tests.servers import TsdbServer


def _pipeline(query: str, window: str = "1d") -> Pipeline:
    return Pipeline.model_validate(
        {"id": "p", "query": query, "step": "1m", "train": {"window": window}}
    )


def test_the_flavor_of_each_real_server_is_detected(tsdb: TsdbServer) -> None:
    with httpx.Client() as client:
        assert detect_flavor(tsdb.url, client) == tsdb.flavor


def test_the_probe_reports_syntax_series_and_history(tsdb: TsdbServer) -> None:
    metric = f"probe_{uuid.uuid4().hex[:10]}"
    now = int(time.time()) // 60 * 60
    ts = np.arange(now - 50 * 60, now + 1, 60)  # 50 min: Prometheus takes no older sample
    with RemoteWriteWriter(tsdb.write_url, flavor=tsdb.flavor) as writer:
        for host in ("a", "b"):
            writer.write([OutputSeries({"__name__": metric, "host": host}, ts, np.ones(ts.size))])
    tsdb.flush()
    with httpx.Client() as client:
        probe = TsdbProbe(tsdb.url, client, now=now)
        bad = probe.check(_pipeline(f"rate({metric}[5m]"))
        none = probe.check(_pipeline(f"{metric}_absent"))
        short = probe.check(_pipeline(metric, window="14d"))
        enough = probe.check(_pipeline(metric, window="1h"))
    assert [f.level for f in bad] == ["error"] and "refused the query" in bad[0].message
    assert [f.level for f in none] == ["warning"] and "no series now" in none[0].message
    assert short[0].message == "2 series now"
    assert short[1].level == "warning" and "no score is written" in short[1].message
    # 50 min against a 1 h window: more than the quarter the rule needs, and more than half.
    assert [f.level for f in enough] == ["info", "info"], enough
    assert "history: 50m" in enough[1].message
