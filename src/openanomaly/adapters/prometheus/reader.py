"""Read panel data over the Prometheus HTTP API (``/api/v1/query_range``).

Works with every Prometheus-compatible TSDB (Prometheus, VictoriaMetrics, Thanos, Mimir, Cortex).
A long range is split into chunks under the server's points-per-series limit (11,000 in
Prometheus), fetched in parallel and stitched back together by series key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import orjson

from openanomaly.adapters.prometheus.decode import Keep, MatrixBody, decode_matrix
from openanomaly.adapters.prometheus.http import (
    ClientOwner,
    call_with_retries,
    is_retryable,
    overloaded,
    response_message,
    unreachable,
)
from openanomaly.adapters.prometheus.stream import decode_stream
from openanomaly.domain.series import IntArray, SeriesBatch
from openanomaly.domain.shards import Shard
from openanomaly.domain.text import shorten
from openanomaly.errors import QueryError, TooManySeries, TsdbUnavailable

logger = logging.getLogger(__name__)

Result = MatrixBody
"""One decoded ``query_range`` answer (a matrix)."""


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
        max_series: most series one query may return (``tsdb.max_series``); more is refused
            while the answer is decoded, before any array is built. None: no limit.
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
        max_series: int | None = None,
    ) -> None:
        if max_points < 2:
            raise ValueError(f"max_points must be >= 2, got {max_points}")
        if parallelism < 1:
            raise ValueError(f"parallelism must be >= 1, got {parallelism}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if max_series is not None and max_series < 1:
            raise ValueError(f"max_series must be >= 1, got {max_series}")
        self.endpoint = url.rstrip("/") + "/api/v1/query_range"
        super().__init__(client)
        self._max_points = max_points
        self._parallelism = parallelism
        self._attempts = max_retries + 1
        self._backoff = backoff
        self._max_series = max_series

    def query_range(
        self, query: str, start: int, end: int, step: int, *, recent: bool = False
    ) -> SeriesBatch:
        """Every series of ``query`` on the multiples of ``step`` in ``[start, end]``.

        The grid begins at the first timestamp with data, not at ``start``: a 7-day window over
        2 hours of data is a matrix of 2 hours. With ``recent``, a range of more than
        ``WALK_BACK_FROM`` steps is read from its end (``_walk_back``).

        Raises:
            TooManySeries: the answer holds more than ``max_series`` series.
            QueryError: the TSDB refused the query; the message is its own, plus the query.
            TsdbUnavailable: connection error, timeout, or 5xx/429 after retries.
        """
        return self._query(query, start, end, step, None, recent=recent)

    def query_shard(
        self, query: str, start: int, end: int, step: int, shard: Shard, *, recent: bool = False
    ) -> SeriesBatch:
        """``query_range`` keeping only the series of ``shard``: the answer is decoded as it
        streams in (``stream.py``), so neither the raw answer nor the other shards' series are
        held whole; ``max_series`` counts the shard's series."""
        keep = None if shard.whole else shard.mask
        return self._query(query, start, end, step, keep, recent=recent)

    def _query(
        self, query: str, start: int, end: int, step: int, keep: Keep | None, *, recent: bool
    ) -> SeriesBatch:
        grid = aligned_grid(start, end, step)
        if grid.size == 0:
            return SeriesBatch.empty()
        if recent and grid.size > WALK_BACK_FROM:
            results = self._walk_back(query, grid, step, keep)
        else:
            chunks = [grid[i : i + self._max_points] for i in range(0, grid.size, self._max_points)]
            results = self._fetch_all(query, chunks, step, keep)
        batch = stitch(results, grid)
        if self._max_series is not None and len(batch) > self._max_series:  # chunks differ
            raise TooManySeries(len(batch), self._max_series, query=shorten(query))
        return batch

    def _walk_back(self, query: str, grid: IntArray, step: int, keep: Keep | None) -> list[Result]:
        """Read a long range from its end, in chunks that double, down to the first chunk that
        holds no series: a TSDB evaluates every nominal step of a range (VictoriaMetrics sizes,
        and refuses, 20,000 series x 7 days at 1m where 2 hours hold data), while an empty range
        costs it an index look-up. Since each chunk is longer than all those after it, only a gap
        in the data longer than all the data after it is taken for the data's start. Once the
        chunks reach ``max_points``, the rest of the range is read as usual, in parallel."""
        results: list[Result] = []
        hi, size = grid.size, max(WALK_BACK_FIRST, -(-grid.size // WALK_BACK_PARTS))
        while hi > 0:
            if size >= self._max_points:
                rest = grid[:hi]
                chunks = [rest[i : i + self._max_points] for i in range(0, hi, self._max_points)]
                return self._fetch_all(query, chunks, step, keep) + results
            lo = max(0, hi - size)
            found = self._fetch(query, grid[lo:hi], step, keep)
            if not any(body.metrics for body in found):
                break
            results = found + results
            hi, size = lo, size * 2
        return results

    def _fetch_all(
        self, query: str, chunks: Sequence[IntArray], step: int, keep: Keep | None
    ) -> list[Result]:
        if len(chunks) == 1:
            return self._fetch(query, chunks[0], step, keep)
        workers = min(self._parallelism, len(chunks))
        with ThreadPoolExecutor(workers, thread_name_prefix="promread") as pool:
            futures = [pool.submit(self._fetch, query, chunk, step, keep) for chunk in chunks]
            try:
                return [result for f in futures for result in f.result()]
            except BaseException:
                for f in futures:  # one failed chunk fails the read: skip the rest
                    f.cancel()
                raise

    def _fetch(self, query: str, chunk: IntArray, step: int, keep: Keep | None) -> list[Result]:
        """The answers for ``chunk``: one, or more when the TSDB refuses the chunk as too big.

        A TSDB sizes a range query by its nominal points (VictoriaMetrics refuses 20,000
        series x 7 days at 1m, 3.2 GB, even when only 2 hours hold data): halves are asked
        instead, down to what it accepts."""
        form = {"query": query, "start": str(chunk[0]), "end": str(chunk[-1]), "step": str(step)}
        try:
            return [
                call_with_retries(
                    lambda: self._post(form) if keep is None else self._post_stream(form, keep),
                    attempts=self._attempts,
                    backoff=self._backoff,
                    what=f"query_range {self.endpoint}",
                )
            ]
        except QueryError as exc:
            if chunk.size < 2 or isinstance(exc, TooManySeries) or not _too_big(exc):
                raise
        half = chunk.size // 2
        logger.info(
            "TSDB refused %d steps of %r as too big: asking halves", chunk.size, shorten(query)
        )
        return self._fetch(query, chunk[:half], step, keep) + self._fetch(
            query, chunk[half:], step, keep
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

    def _post_stream(self, form: dict[str, str], keep: Keep) -> Result:
        try:
            with self._client.stream("POST", self.endpoint, data=form) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._refusal(response, form["query"])
                return self._matrix(response, form["query"], keep)
        except httpx.TransportError as exc:
            raise unreachable(self.endpoint, exc) from None

    def _refusal(self, response: httpx.Response, query: str) -> QueryError | TsdbUnavailable:
        status, message = response.status_code, response_message(response)
        if is_retryable(status):
            return overloaded(
                f"TSDB at {self.endpoint} answered HTTP {status}: {message}",
                self.endpoint,
                response,
            )
        return QueryError(f"{message} (query: {shorten(query)})", url=self.endpoint, status=status)

    def _matrix(self, response: httpx.Response, query: str, keep: Keep | None = None) -> Result:
        try:
            if keep is None:
                body = decode_matrix(response.content, max_series=self._max_series)
            else:
                blocks = response.iter_bytes(1 << 20)
                body = decode_stream(blocks, keep=keep, max_series=self._max_series)
        except TooManySeries as exc:
            raise TooManySeries(exc.count, exc.limit, query=shorten(query)) from None
        except (orjson.JSONDecodeError, ValueError):
            raise QueryError(
                f"{self.endpoint} did not answer like a Prometheus API (query: {shorten(query)})",
                url=self.endpoint,
                status=response.status_code,
            ) from None
        if body.result_type != "matrix":
            raise QueryError(
                f"expected a matrix result, got {body.result_type!r} (query: {shorten(query)})",
                url=self.endpoint,
            )
        for warning in body.warnings:
            logger.warning("TSDB warning for %r: %s", shorten(query), warning)
        return body


WALK_BACK_FROM = 1440
"""Ranges of more steps than this (a day at 1m) are read from their end (``_walk_back``)."""
WALK_BACK_FIRST = 120
WALK_BACK_PARTS = 64
"""The first chunk read back: a 64th of the range, at least 120 steps."""

_TOO_BIG = (
    "not enough memory",  # VictoriaMetrics, sizing the query's nominal points
    "too many samples",  # Prometheus: query.max-samples
)


def _too_big(exc: QueryError) -> bool:
    return any(phrase in str(exc).lower() for phrase in _TOO_BIG)


def _rows(results: Sequence[Result]) -> tuple[list[dict[str, str]], list[IntArray]]:
    """The label sets of ``results`` without repeats, and the row of each of their points."""
    if len(results) == 1:  # a query's answer never holds a label set twice: no key needed
        (body,) = results
        ids = np.arange(len(body.metrics), dtype=np.int64)
        return body.metrics, [np.repeat(ids, np.diff(body.bounds))]
    rows: dict[bytes, int] = {}
    labels: list[dict[str, str]] = []
    row_ids: list[IntArray] = []
    for body in results:
        ids = np.empty(len(body.metrics), dtype=np.int64)
        for i, metric in enumerate(body.metrics):
            # Sorted-key JSON identifies a label set as series_key does, in C.
            key = orjson.dumps(metric, option=orjson.OPT_SORT_KEYS)
            row = ids[i] = rows.setdefault(key, len(rows))
            if row == len(labels):
                labels.append(metric)
        row_ids.append(np.repeat(ids, np.diff(body.bounds)))
    return labels, row_ids


def stitch(results: Sequence[Result], grid: IntArray) -> SeriesBatch:
    """Place the series of several ``query_range`` results on ``grid``, one row per series key.

    The grid is cut to begin at the first of its timestamps that holds data, so memory follows
    the data that exists. A series may be absent from some chunks (it started or stopped
    mid-range): its row is NaN there. Points off the grid are ignored.
    """
    labels, row_ids = _rows(results)
    t = np.concatenate([np.empty(0, np.int64), *(body.timestamps for body in results)])
    idx = np.searchsorted(grid, t)
    ok = (idx < grid.size) & (grid[np.minimum(idx, grid.size - 1)] == t)
    first = int(idx[ok].min()) if ok.any() else grid.size
    matrix = np.full((len(labels), grid.size - first), np.nan)
    if ok.any():
        row = np.concatenate(row_ids)[ok]
        matrix[row, idx[ok] - first] = np.concatenate([body.values for body in results])[ok]
    return SeriesBatch(tuple(labels), grid[first:], matrix)
