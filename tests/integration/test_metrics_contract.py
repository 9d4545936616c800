"""The MetricsReader/MetricsWriter contract (``tests/metrics_contract.py``) on PrometheusReader
and RemoteWriteWriter against real Prometheus and VictoriaMetrics."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from tests.metrics_contract import MetricsContract, Store
from tests.servers import TsdbServer

PARSE_ERROR = {"prometheus": "parse error: unclosed left parenthesis", "victoriametrics": "argList"}


class TestPrometheusApi(MetricsContract):
    @pytest.fixture
    def store(self, tsdb: TsdbServer) -> Iterator[Store]:
        reader = PrometheusReader(tsdb.url)
        chunked = PrometheusReader(tsdb.url, max_points=4, parallelism=3)
        writer = RemoteWriteWriter(tsdb.write_url, flavor=tsdb.flavor)
        yield Store(reader, writer, chunked, tsdb.flush, PARSE_ERROR[tsdb.flavor])
        for adapter in (reader, chunked, writer):
            adapter.close()
