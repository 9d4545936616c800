"""The MetricsReader/MetricsWriter contract (``tests/metrics_contract.py``) on the fake."""

from __future__ import annotations

import pytest

from openanomaly.adapters.memory import MemoryMetrics
from tests.metrics_contract import MetricsContract, Store


class TestMemoryMetrics(MetricsContract):
    @pytest.fixture
    def store(self) -> Store:
        fake = MemoryMetrics()
        return Store(fake, fake, fake, flush=lambda: None, parse_error="parse error")
