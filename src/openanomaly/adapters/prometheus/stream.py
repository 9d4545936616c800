"""Decode a ``query_range`` answer as it streams in, keeping only some of its series.

A shard evaluates the whole query (PromQL cannot be narrowed to a shard's series), so the
answer is as big as the unsharded one: held whole, it would bound a shard's memory by the
query, not by the shard. Here the body is read in blocks and cut between result items, at the
byte sequence ``},{"metric":`` (a bare ``"`` cannot occur inside a JSON string, so this is
always a boundary between two items); each piece of a few MB is wrapped back into a small
answer and decoded by ``decode_matrix`` with the shard's ``keep``, and only the kept series'
arrays survive it. A body spaced out otherwise than the TSDBs send it has no such cut and is
decoded whole: the same result, without the memory bound.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from openanomaly.adapters.prometheus.decode import Keep, MatrixBody, decode_matrix
from openanomaly.errors import TooManySeries

_RESULT = b'"result":['
_ITEM = b'},{"metric":'
_TAIL = b"]}}"
PIECE_BYTES = 8 << 20


def decode_stream(
    blocks: Iterable[bytes],
    *,
    keep: Keep,
    max_series: int | None = None,
    piece_bytes: int = PIECE_BYTES,
) -> MatrixBody:
    """The answer whose body arrives as ``blocks``, with only the series ``keep`` keeps."""
    head: bytes | None = None
    buf = bytearray()
    parts: list[MatrixBody] = []
    kept = 0
    for block in blocks:
        buf += block
        if head is None:
            at = buf.find(_RESULT)
            if at < 0:
                continue
            head = bytes(buf[: at + len(_RESULT)])
            del buf[: at + len(_RESULT)]
        if len(buf) < piece_bytes:
            continue
        cut = buf.rfind(_ITEM)
        if cut < 0:
            continue
        part = decode_matrix(head + bytes(buf[: cut + 1]) + _TAIL, keep=keep)
        del buf[: cut + 2]
        kept += len(part.metrics)
        if max_series is not None and kept > max_series:
            raise TooManySeries(kept, max_series)
        parts.append(part)
    last = decode_matrix((head or b"") + bytes(buf), keep=keep)
    if max_series is not None and kept + len(last.metrics) > max_series:
        raise TooManySeries(kept + len(last.metrics), max_series)
    return _joined([*parts, last]) if parts else last


def _joined(parts: list[MatrixBody]) -> MatrixBody:
    """One answer of the pieces, in order (status, type and warnings of the last, which
    holds the body's end)."""
    last = parts[-1]
    counts = np.concatenate([np.diff(p.bounds) for p in parts])
    return MatrixBody(
        last.status,
        last.result_type,
        [m for p in parts for m in p.metrics],
        np.concatenate([np.zeros(1, np.int64), np.cumsum(counts, dtype=np.int64)]),
        np.concatenate([p.timestamps for p in parts]),
        np.concatenate([p.values for p in parts]),
        last.warnings,
        last.raw,
    )
