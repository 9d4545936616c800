"""Read back raw samples (``/api/v1/query`` with a range selector): what a window wrote.

A range selector evaluated as an instant query returns every stored sample of the range, with
no lookback filling gaps, on Prometheus and VictoriaMetrics alike (VictoriaMetrics answers it
from its export path, duplicates included). ``nocache=1`` stops VictoriaMetrics from moving a
query time close to now back by ``-search.latencyOffset`` (30 s by default), which would hide
the newest samples.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import orjson

from openanomaly.adapters.prometheus.decode import decode_matrix
from openanomaly.adapters.prometheus.http import (
    call_with_retries,
    is_retryable,
    response_message,
    unreachable,
)
from openanomaly.domain.series import IntArray, series_key
from openanomaly.errors import QueryError, TsdbUnavailable


class PrometheusSampleReader:
    """A ``SampleReader`` over the Prometheus HTTP API.

    Args:
        url: base URL of the API (``/api/v1/query`` is appended).
        client: the HTTP client (see ``build_client``); by default a plain one owned, and
            closed by ``close()``, by this reader.
        settle: seconds to wait before reading, so that samples accepted just before are
            searchable (VictoriaMetrics: about one second).
    """

    def __init__(
        self, url: str, *, client: httpx.Client | None = None, settle: float = 0.0
    ) -> None:
        self.endpoint = url.rstrip("/") + "/api/v1/query"
        self._client = client if client is not None else httpx.Client(timeout=30.0)
        self._owns_client = client is None
        self._settle = settle

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def timestamps(self, selector: str, start: int, end: int) -> dict[str, IntArray]:
        if end <= start:
            return {}
        time.sleep(self._settle)
        # Prometheus 2 includes the left edge of a range, Prometheus 3 excludes it: cut the
        # window's own edges again below.
        form = {"query": f"{selector}[{end - start}s]", "time": str(end), "nocache": "1"}
        body = call_with_retries(
            lambda: self._post(form), attempts=3, backoff=0.25, what=f"read-back {self.endpoint}"
        )
        out: dict[str, IntArray] = {}
        for item in body:
            ts = item.timestamps[(item.timestamps > start) & (item.timestamps <= end)]
            if ts.size:
                key = series_key(item.metric)
                out[key] = np.sort(np.concatenate([out.get(key, ts[:0]), ts]))
        return out

    def _post(self, form: dict[str, str]) -> list[Any]:
        try:
            response = self._client.post(self.endpoint, data=form)
        except httpx.TransportError as exc:
            raise unreachable(self.endpoint, exc) from None
        if response.status_code != 200:
            kind = TsdbUnavailable if is_retryable(response.status_code) else QueryError
            raise kind(
                f"read-back {form['query']} at {self.endpoint}: HTTP {response.status_code}: "
                f"{response_message(response)}",
                url=self.endpoint,
                status=response.status_code,
            )
        try:
            return decode_matrix(response.content).series
        except (orjson.JSONDecodeError, ValueError):
            raise QueryError(
                f"{self.endpoint} did not answer like a Prometheus API", url=self.endpoint
            ) from None
