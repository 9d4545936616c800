"""Write series by Prometheus remote write 1.0 (protobuf ``WriteRequest``, snappy block format).

The ``WriteRequest`` bytes are laid out by ``prompb`` (numpy over all samples at once, the same
bytes as the protobuf library's); its message classes decode them in the tests.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import get_args

import cramjam
import httpx
import numpy as np

from openanomaly.adapters.prometheus import prompb
from openanomaly.adapters.prometheus.http import (
    ClientOwner,
    call_with_retries,
    is_retryable,
    overloaded,
    response_message,
    unreachable,
)
from openanomaly.domain.outputs import OutputBatch
from openanomaly.domain.records import OutputSeries
from openanomaly.domain.series import FloatArray, IntArray
from openanomaly.errors import WriteRejected, WriteUncertain
from openanomaly.ports import Flavor

logger = logging.getLogger(__name__)

WRITE_HORIZON: dict[str, int | None] = {
    "prometheus": 3600 - 300,
    "mimir": 3600 - 300,
    "thanos": 3600 - 300,
    "victoriametrics": None,
}
"""How far behind now (seconds) a flavor still takes samples. Prometheus' head appends nothing
older than its newest sample minus an hour (half its 2 h block range: "out of bounds"), and
Mimir's ingesters and Thanos Receive run the same TSDB; the 5 minutes of margin let a window
be written before the limit passes it. VictoriaMetrics takes any timestamp by default."""

REFUSED_5XX = frozenset({503})
"""The 5xx that mean "not taken, come back later" (with 429): retried as they are. Any other
5xx leaves the request's fate unknown, and a blind retry could store it twice."""

READBACK_SETTLE: dict[str, float] = {"victoriametrics": 2.0}
"""Seconds after a write before a read-back sees it: VictoriaMetrics makes accepted samples
searchable about a second later."""

FUTURE_TOLERANCE = 60
"""Seconds past ``clock()`` a sample may lie before it counts as a future sample."""

HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}

write_request_class = prompb.write_request_class


@dataclass(frozen=True)
class Samples:
    """All samples to send, flattened: series ``i`` (labels ``labels[i]``) owns
    ``ts_ms[bounds[i]:bounds[i + 1]]`` (milliseconds, increasing) and the same slice of
    ``values`` (all finite)."""

    labels: list[dict[str, str]]
    bounds: list[int]
    ts_ms: list[int] | IntArray
    values: list[float] | FloatArray
    dropped_future: int
    dropped_nonfinite: int = 0
    encoded: Sequence[bytes] | None = None
    """The ``labels`` fields of each series, when already encoded (then ``labels`` is unused)."""


def flatten(series: Sequence[OutputSeries], *, max_ts: int | None = None) -> Samples:
    """Keep the finite samples at or before ``max_ts`` (unix s; None: no limit), sort each
    series by time and keep the last value given for a repeated timestamp.

    Vectorized over all series at once: a write of 40,000 one-sample series must not pay for
    40,000 rounds of small numpy calls. An ``OutputBatch`` is read by its columns.
    """
    if isinstance(series, OutputBatch):
        return flatten_batch(series, max_ts=max_ts)
    sid, ts, all_vs = _concat(series)
    keep = np.isfinite(all_vs)
    future = keep & (ts > max_ts) if max_ts is not None else np.zeros_like(keep)
    nonfinite = int(all_vs.size - keep.sum())
    keep &= ~future
    sid, ts, vs = _by_series_and_time(sid[keep], ts[keep], all_vs[keep])
    return Samples(
        labels=[s.labels for s in series],
        bounds=np.searchsorted(sid, np.arange(len(series) + 1)).tolist(),
        ts_ms=(ts * 1000).tolist(),
        values=vs.tolist(),
        dropped_future=int(future.sum()),
        dropped_nonfinite=nonfinite,
    )


def flatten_batch(batch: OutputBatch, *, max_ts: int | None = None) -> Samples:
    """``flatten`` of a columnar batch: the samples come out of its matrices in series order
    (row, then name; time within a series, the grid being increasing) with no sort, and each
    row's labels are encoded once for all its output names."""
    k, n_t = len(batch.names), batch.timestamps.size
    values = np.stack(batch.values, axis=1) if k else np.empty((len(batch.labels), 0, n_t))
    present = np.broadcast_to(batch.present[:, None, :], values.shape)
    finite = np.isfinite(values)
    keep = present & finite
    nonfinite = int(np.count_nonzero(present & ~finite))
    future = 0
    if max_ts is not None:
        late = batch.timestamps > max_ts
        if late.any():
            future = int(np.count_nonzero(keep[:, :, late]))
            keep = keep & ~late
    ts = np.broadcast_to(batch.timestamps * 1000, values.shape)[keep]
    counts = keep.sum(axis=2).ravel()
    bounds = np.concatenate([np.zeros(1, np.int64), np.cumsum(counts)])
    cache = prompb.LabelCache()
    names = [cache.field("__name__", name) for name in batch.names]
    encoded: list[bytes] = []
    written = counts.reshape(-1, k).any(axis=1).tolist() if k else []
    for labels, has in zip(batch.labels, written, strict=True):
        if not has:
            encoded += [b""] * k
            continue
        before, after = cache.around(labels, "__name__")
        encoded += [before + name + after for name in names]
    return Samples(
        labels=[],
        bounds=bounds.tolist(),
        ts_ms=ts,
        values=values[keep],
        dropped_future=future,
        dropped_nonfinite=nonfinite,
        encoded=encoded,
    )


def _concat(series: Sequence[OutputSeries]) -> tuple[IntArray, IntArray, FloatArray]:
    """Series index, timestamp and value of every sample, as three flat arrays."""
    sizes = [s.timestamps.size for s in series]
    for s, n in zip(series, sizes, strict=True):
        if s.values.size != n:
            raise ValueError(f"{s.labels}: {n} timestamps but {s.values.size} values")
    sid = np.repeat(np.arange(len(series), dtype=np.int64), sizes)
    # The leading empty arrays fix the dtypes and make a write of no series well-defined.
    ts = np.concatenate([np.empty(0, np.int64), *(s.timestamps.ravel() for s in series)])
    vs = np.concatenate([np.empty(0), *(s.values.ravel() for s in series)])
    return sid, ts.astype(np.int64, copy=False), vs.astype(np.float64, copy=False)


def _by_series_and_time(
    sid: IntArray, ts: IntArray, vs: FloatArray
) -> tuple[IntArray, IntArray, FloatArray]:
    """Sorted by (series, time); of repeated timestamps only the last given value stays."""
    order = np.lexsort((ts, sid))  # stable, so the last given stays last among equals
    sid, ts, vs = sid[order], ts[order], vs[order]
    last = np.ones(ts.size, dtype=bool)
    last[:-1] = (sid[1:] != sid[:-1]) | (ts[1:] != ts[:-1])
    return sid[last], ts[last], vs[last]


def encode(samples: Samples, batch_samples: int) -> Iterator[tuple[bytes, int]]:
    """Snappy-compressed ``WriteRequest`` bodies of at most ``batch_samples`` samples each,
    with their sample counts. A long series is split across bodies, in time order."""
    fields, offsets = prompb.sample_fields(
        np.asarray(samples.ts_ms, dtype=np.int64), np.asarray(samples.values, dtype=np.float64)
    )
    if samples.encoded is not None:
        requests = prompb.encoded_requests(
            samples.encoded, samples.bounds, fields, offsets.tolist(), batch_samples
        )
    else:
        requests = prompb.write_requests(
            samples.labels, samples.bounds, fields, offsets.tolist(), batch_samples
        )
    for request, count in requests:
        yield bytes(cramjam.snappy.compress_raw(request)), count


class RemoteWriteWriter(ClientOwner):
    """A ``MetricsWriter`` speaking Prometheus remote write 1.0.

    Args:
        url: the remote-write endpoint (``/api/v1/write`` for Prometheus and VictoriaMetrics,
            ``/api/v1/push`` for Mimir/Cortex, ``/api/v1/receive`` for Thanos Receive).
        client: the HTTP client to use (see ``build_client``); by default a plain one owned,
            and closed by ``close()``, by this writer.
        flavor: the TSDB behind ``url``. Every flavor but ``victoriametrics`` gets no sample
            more than a minute in the future: Prometheus moves its head window forward and
            then refuses every current sample as out of bounds.
        batch_samples: most samples per request.
        max_retries: retries of a request after a 5xx, a 429 or a connection error.
        backoff: first retry delay in seconds, doubled at each retry.
        clock: current unix time, for the future-sample cut-off.
        on_drop: told ``(reason, count)`` of the samples not sent: ``non_finite`` (no value:
            a missing input point) or ``future``; the service counts them in ``/metrics``.
    """

    def __init__(
        self,
        url: str,
        *,
        client: httpx.Client | None = None,
        flavor: Flavor = "prometheus",
        batch_samples: int = 50_000,
        max_retries: int = 5,
        backoff: float = 0.5,
        clock: Callable[[], float] = time.time,
        on_drop: Callable[[str, int], None] | None = None,
    ) -> None:
        if batch_samples < 1:
            raise ValueError(f"batch_samples must be >= 1, got {batch_samples}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if flavor not in get_args(Flavor):
            raise ValueError(f"flavor must be one of {', '.join(get_args(Flavor))}, got {flavor!r}")
        self.url = url
        self.flavor = flavor
        super().__init__(client)
        self._batch_samples = batch_samples
        self._attempts = max_retries + 1
        self._backoff = backoff
        self._clock = clock
        self._on_drop = on_drop

    def write(self, series: Sequence[OutputSeries]) -> int:
        """Send the finite samples of ``series``; returns how many samples were sent.

        Requests go one after the other; when one fails, those before it stay written. A
        refusal is always an error, "out of order" included: Prometheus then drops the whole
        request, new samples with the old. A request whose outcome is unknown (the connection
        broke or timed out after it was sent) is not sent again: VictoriaMetrics would store
        it twice. The caller completes the window from what the TSDB holds.

        Raises:
            WriteRejected: the TSDB refused a request with a 4xx other than 429.
            TsdbUnavailable: connection refused, or 503/429 after retries.
            WriteUncertain: the outcome of a request is unknown (timeout or broken connection
                after sending, a 500, a gateway's 502/504).
        """
        max_ts = None if self.flavor == "victoriametrics" else self._max_timestamp()
        samples = flatten(series, max_ts=max_ts)
        if samples.dropped_future:
            logger.warning(
                "dropped %d samples more than %ds in the future: a %s TSDB would refuse "
                "current samples after accepting them",
                samples.dropped_future,
                FUTURE_TOLERANCE,
                self.flavor,
            )
        if samples.dropped_nonfinite:
            logger.debug("dropped %d non-finite samples", samples.dropped_nonfinite)
        if self._on_drop is not None:
            self._on_drop("future", samples.dropped_future)
            self._on_drop("non_finite", samples.dropped_nonfinite)
        sent = 0
        for body, count in encode(samples, self._batch_samples):
            try:
                call_with_retries(
                    functools.partial(self._post, body),
                    attempts=self._attempts,
                    backoff=self._backoff,
                    what=f"remote write to {self.url}",
                )
            except WriteUncertain as exc:
                raise WriteUncertain(
                    f"{exc} ({sent} samples written before it)", url=self.url
                ) from None
            sent += count
        return sent

    def oldest_accepted(self) -> int | None:
        horizon = WRITE_HORIZON.get(self.flavor)
        return None if horizon is None else int(self._clock()) - horizon

    def _max_timestamp(self) -> int:
        return int(self._clock()) + FUTURE_TOLERANCE

    def _post(self, body: bytes) -> None:
        try:
            response = self._client.post(self.url, content=body, headers=HEADERS)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise unreachable(self.url, exc) from None  # never sent: safe to retry
        except httpx.TransportError as exc:
            detail = str(exc) or type(exc).__name__
            raise WriteUncertain(
                f"remote write to {self.url} broke off after sending, outcome unknown: {detail}",
                url=self.url,
            ) from None
        if response.is_success:
            return
        status, message = response.status_code, response_message(response)
        if status >= 500 and status not in REFUSED_5XX:
            # A 500 or a gateway's 502/504 does not say whether the TSDB stored the request.
            raise WriteUncertain(
                f"remote write to {self.url} failed with HTTP {status}, outcome unknown: {message}",
                url=self.url,
                status=status,
            )
        if is_retryable(status):
            raise overloaded(
                f"remote write to {self.url} failed with HTTP {status}: {message}",
                self.url,
                response,
            )
        raise WriteRejected(
            f"remote write to {self.url} refused with HTTP {status}: {message}",
            url=self.url,
            status=status,
        )
