"""Read panel data over the Prometheus HTTP API (``/api/v1/query_range``).

Works with every Prometheus-compatible TSDB (Prometheus, VictoriaMetrics, Thanos, Mimir, Cortex).
A long range is split into chunks under the server's points-per-series limit (11,000 in
Prometheus), fetched in parallel and stitched back together by series key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson

from openanomaly.adapters.prometheus.decode import RangeSeries, decode_matrix
from openanomaly.adapters.prometheus.http import (
    ClientOwner,
    call_with_retries,
    is_retryable,
    response_message,
    unreachable,
)
from openanomaly.domain.series import FloatArray, IntArray, SeriesBatch, series_key
from openanomaly.errors import QueryError, TsdbUnavailable

logger = logging.getLogger(__name__)

Result = list[RangeSeries]
"""The ``data.result`` list of a matrix response: ``{"metric": {...}, "values": [[t, "v"]]}``."""


def aligned_grid(start: int, end: int, step: int) -> IntArray:
    """The multiples of ``step`` in ``[start, end]``.

    Aligning to multiples of ``step`` makes every read of the same data land on the same
    timestamps, whatever ``start`` the caller passed, so windows and retries line up.
    """
    if step <= 0:
        raise ValueError(f"step must be a positive number of seconds, got {step}")
    first = -(-start // step) * step
    return np.arange(first, end + 1, step, dtype=np.int64)


class PrometheusReader(ClientOwner):
    """A ``MetricsReader`` over the Prometheus HTTP API.

    Args:
        url: base URL of the API, e.g. ``http://localhost:9090`` (``/api/v1/...`` is appended).
        client: the HTTP client to use (see ``build_client`` for auth/TLS/tenant); by default a
            plain client owned, and closed by ``close()``, by this reader.
        max_points: most points per series in one request; Prometheus refuses more than 11,000.
        parallelism: chunks of a long range fetched at once.
        max_retries: retries of a chunk after a 5xx, a 429 or a connection error.
        backoff: first retry delay in seconds, doubled at each retry.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client | None = None,
        max_points: int = 11_000,
        parallelism: int = 4,
        max_retries: int = 2,
        backoff: float = 0.25,
    ) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        if parallelism < 1:
            raise ValueError(f"parallelism must be >= 1, got {parallelism}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.endpoint = url.rstrip("/") + "/api/v1/query_range"
        super().__init__(client)
        self._max_points = max_points
        self._parallelism = parallelism
        self._attempts = max_retries + 1
        self._backoff = backoff

    def query_range(self, query: str, start: int, end: int, step: int) -> SeriesBatch:
        """Every series of ``query`` on the multiples of ``step`` in ``[start, end]``.

        Raises:
            QueryError: the TSDB refused the query; the message is its own, plus the query.
            TsdbUnavailable: connection error, timeout, or 5xx/429 after retries.
        """
        grid = aligned_grid(start, end, step)
        if grid.size == 0:
            return SeriesBatch.empty()
        chunks = [grid[i : i + self._max_points] for i in range(0, grid.size, self._max_points)]
        return stitch(self._fetch_all(query, chunks, step), grid)

    def _fetch_all(self, query: str, chunks: Sequence[IntArray], step: int) -> list[Result]:
        if len(chunks) == 1:
            return [self._fetch(query, chunks[0], step)]
        workers = min(self._parallelism, len(chunks))
        with ThreadPoolExecutor(workers, thread_name_prefix="promread") as pool:
            futures = [pool.submit(self._fetch, query, chunk, step) for chunk in chunks]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:  # one failed chunk fails the read: skip the rest
                    f.cancel()
                raise

    def _fetch(self, query: str, chunk: IntArray, step: int) -> Result:
        form = {"query": query, "start": str(chunk[0]), "end": str(chunk[-1]), "step": str(step)}
        return call_with_retries(
            lambda: self._post(form),
            attempts=self._attempts,
            backoff=self._backoff,
            what=f"query_range {self.endpoint}",
        )

    def _post(self, form: dict[str, str]) -> Result:
        # POST with a form body, as Grafana does: a long PromQL query does not fit in a URL.
        try:
            response = self._client.post(self.endpoint, data=form)
        except httpx.TransportError as exc:
            raise unreachable(self.endpoint, exc) from None
        if response.status_code != 200:
            raise self._refusal(response, form["query"])
        return self._matrix(response, form["query"])

    def _refusal(self, response: httpx.Response, query: str) -> QueryError | TsdbUnavailable:
        status, message = response.status_code, response_message(response)
        if is_retryable(status):
            return TsdbUnavailable(
                f"TSDB at {self.endpoint} answered HTTP {status}: {message}",
                url=self.endpoint,
                status=status,
            )
        return QueryError(f"{message} (query: {query})", url=self.endpoint, status=status)

    def _matrix(self, response: httpx.Response, query: str) -> Result:
        try:
            body = decode_matrix(response.content)
        except (orjson.JSONDecodeError, ValueError):
            raise QueryError(
                f"{self.endpoint} did not answer like a Prometheus API (query: {query})",
                url=self.endpoint,
                status=response.status_code,
            ) from None
        if body.result_type != "matrix":
            raise QueryError(
                f"expected a matrix result, got {body.result_type!r} (query: {query})",
                url=self.endpoint,
            )
        for warning in body.warnings:
            logger.warning("TSDB warning for %r: %s", query, warning)
        return body.series


def stitch(results: Iterable[Result], grid: IntArray) -> SeriesBatch:
    """Place the series of several ``query_range`` results on ``grid``, one row per series key.

    A series may be absent from some chunks (it started or stopped mid-range): its row is NaN
    there. Points off the grid are ignored.
    """
    rows: dict[str, int] = {}
    labels: list[dict[str, str]] = []
    row_ids: list[IntArray] = []
    ts: list[IntArray] = []
    vals: list[FloatArray] = []
    for result in results:
        for item in result:
            row = rows.setdefault(series_key(item.metric), len(rows))
            if row == len(labels):
                labels.append(item.metric)
            row_ids.append(np.full(item.timestamps.size, row, dtype=np.int64))
            ts.append(item.timestamps)
            vals.append(item.values)
    matrix = np.full((len(labels), grid.size), np.nan)
    if ts:
        t = np.concatenate(ts)
        idx = np.searchsorted(grid, t)
        ok = (idx < grid.size) & (grid[np.minimum(idx, grid.size - 1)] == t)
        matrix[np.concatenate(row_ids)[ok], idx[ok]] = np.concatenate(vals)[ok]
    return SeriesBatch(tuple(labels), grid, matrix)
