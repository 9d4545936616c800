"""Fast decoding of a Prometheus ``query_range`` matrix into numpy arrays.

A range query over 100,000 series x 61 steps is ~160 MB of JSON holding 6.1 million
``[t, "v"]`` pairs. Parsing it whole builds ~20 million Python objects. Here only the small
``metric`` objects go through orjson; the ``values`` arrays are cut out of the raw bytes, turned
into two-column CSV text by one ``bytes.translate`` and parsed by pandas' C reader in one call
(exact, correctly rounded, and it reads ``NaN``, ``+Inf`` and ``-Inf`` as the TSDB writes them).
The result stays columnar (one flat timestamp and value array, a count per series): no numpy
call per series.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import orjson
import pandas as pd

from openanomaly.domain.series import FloatArray, IntArray
from openanomaly.errors import TooManySeries

_VALUES = b'"values"'
_OPEN = re.compile(rb"\s*:\s*\[")
_EMPTY = re.compile(rb"\s*\]")
_CLOSE = re.compile(rb"\]\s*\]")
# `[t,"v"],[t,"v"]` -> `t,v\n,t,v\n`: each pair a line of CSV.
_TO_CSV = bytes.maketrans(b"]", b"\n")
_DROP = b'["'
_GROUP_BYTES = 8 << 20  # of values text parsed at once


class RangeSeries(NamedTuple):
    metric: dict[str, str]
    timestamps: IntArray
    values: FloatArray


class MatrixBody(NamedTuple):
    """A decoded answer. Series ``i`` (labels ``metrics[i]``) owns the slice
    ``bounds[i]:bounds[i + 1]`` of ``timestamps`` and ``values``."""

    status: str
    result_type: str | None
    metrics: list[dict[str, str]]
    bounds: IntArray
    timestamps: IntArray
    values: FloatArray
    warnings: list[str]
    raw: dict[str, Any]

    @property
    def series(self) -> list[RangeSeries]:
        """One ``RangeSeries`` per result item (views into the flat arrays)."""
        b = self.bounds
        return [
            RangeSeries(m, self.timestamps[b[i] : b[i + 1]], self.values[b[i] : b[i + 1]])
            for i, m in enumerate(self.metrics)
        ]


Keep = Callable[[list[dict[str, str]]], "np.ndarray[Any, np.dtype[np.bool_]]"]
"""Which series of an answer to decode, from their label sets (a shard's mask)."""


def decode_matrix(
    content: bytes, *, max_series: int | None = None, keep: Keep | None = None
) -> MatrixBody:
    """Decode a ``/api/v1/query_range`` response body; with ``keep``, only the series it
    keeps: the others' values are never parsed, and ``max_series`` counts the kept ones.

    Raises:
        TooManySeries: the answer holds more than ``max_series`` series; checked on the raw
            bytes, before anything else is parsed or allocated.
        ValueError: the body is not JSON shaped like a Prometheus API answer.
    """
    skeleton, spans = _cut_values(content)
    if keep is None and max_series is not None and len(spans) > max_series:
        raise TooManySeries(len(spans), max_series)
    body = orjson.loads(skeleton)
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    data = body.get("data") or {}
    result = data.get("result") if isinstance(data, dict) else None
    kind = data.get("resultType") if isinstance(data, dict) else None
    warnings = [str(w) for w in body.get("warnings") or ()]
    if kind != "matrix" or not isinstance(result, list):
        return MatrixBody(str(body.get("status")), kind, [], *_no_points(), warnings, body)
    with_values = [item for item in result if "values" in item]
    if len(with_values) != len(spans):
        raise ValueError("values arrays do not match the result items")
    metrics = [item.get("metric") or {} for item in with_values]
    if keep is not None:
        kept = np.flatnonzero(keep(metrics))
        if max_series is not None and kept.size > max_series:
            raise TooManySeries(int(kept.size), max_series)
        metrics, spans = [metrics[i] for i in kept], [spans[i] for i in kept]
    ts, vs, counts = _parse_pairs(content, spans)
    bounds = np.concatenate([np.zeros(1, np.int64), np.cumsum(counts, dtype=np.int64)])
    return MatrixBody(str(body.get("status")), kind, metrics, bounds, ts, vs, warnings, body)


def _no_points() -> tuple[IntArray, IntArray, FloatArray]:
    """``bounds``, ``timestamps`` and ``values`` of an answer without series."""
    return np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.int64), np.empty(0)


def _parse_pairs(
    content: bytes, spans: list[tuple[int, int]]
) -> tuple[IntArray, FloatArray, IntArray]:
    """Timestamps and values of the ``[t, "v"]`` pairs in ``spans``, and how many each holds.

    Parsed a group of series at a time, so that the text copies stay a few MB whatever the
    answer's size.
    """
    counts = np.zeros(len(spans), dtype=np.int64)
    ts: list[IntArray] = [np.empty(0, dtype=np.int64)]
    vs: list[FloatArray] = [np.empty(0)]
    view = memoryview(content)
    group: list[int] = []
    size = 0
    for i, (a, b) in enumerate(spans):
        if b > a:
            group.append(i)
            size += b - a
        if group and (size >= _GROUP_BYTES or i == len(spans) - 1):
            t, v, counts[group] = _read_group(view, [spans[k] for k in group])
            ts.append(t)
            vs.append(v)
            group, size = [], 0
    return np.concatenate(ts), np.concatenate(vs), counts


def _read_group(
    view: memoryview, spans: list[tuple[int, int]]
) -> tuple[IntArray, FloatArray, IntArray]:
    """Each non-empty array becomes ``1,t,v`` then ``,t,v`` lines: the ``1`` in the first
    column marks where a series begins, which gives the counts without a pass per series."""
    text = b"".join(part for a, b in spans for part in (b"1,", view[a:b])).translate(_TO_CSV, _DROP)
    frame = pd.read_csv(
        io.BytesIO(text),
        header=None,
        names=["first", "t", "v"],
        dtype={"first": np.float64, "t": np.float64, "v": np.float64},
        na_values={"first": [""], "v": ["NaN"]},
        keep_default_na=False,
        skipinitialspace=True,
        low_memory=False,
        engine="c",
    )
    pairs = len(frame)
    # Two commas and one newline per pair, or the arrays held something else than pairs.
    if text.count(b"\n") != pairs or text.count(b",") != 2 * pairs:
        raise ValueError("values arrays are not [timestamp, value] pairs")
    starts = np.flatnonzero(frame["first"].to_numpy() == 1.0)
    if starts.size != len(spans):
        raise ValueError("values arrays are not [timestamp, value] pairs")
    ts = np.rint(frame["t"].to_numpy()).astype(np.int64)
    counts = np.diff(np.append(starts, pairs))
    return ts, frame["v"].to_numpy(dtype=np.float64, copy=True), counts


def _cut_values(content: bytes) -> tuple[bytes, list[tuple[int, int]]]:
    """The body with every ``"values":[...]`` emptied, and where the array contents were.

    A values array holds only ``[number, "string"]`` pairs, so it ends at the first ``]]``
    (``] ]`` in a body with whitespace, which the TSDBs do not send).
    The pattern cannot match inside a label value, where a quote is escaped as ``\\"``.
    """
    parts: list[bytes] = []
    spans: list[tuple[int, int]] = []
    pos = cut = 0
    # bytes.find is a fast substring search; a regex over the whole body is several times slower.
    while (found := content.find(_VALUES, pos)) >= 0:
        opening = _OPEN.match(content, found + len(_VALUES))
        pos = found + len(_VALUES)
        if opening is None:
            continue
        begin = opening.end()
        if _EMPTY.match(content, begin):
            spans.append((begin, begin))
            continue
        close = content.find(b"]]", begin)
        if close < 0 or content.find(b"{", begin, close) >= 0:  # spaced out: `] ]`
            spaced = _CLOSE.search(content, begin)
            if spaced is None:
                raise ValueError("unterminated values array")
            close = spaced.start()
            after = spaced.end()
        else:
            after = close + 2
        spans.append((begin, close + 1))
        parts += [content[cut:begin], b"]"]
        pos = cut = after
    parts.append(content[cut:])
    return b"".join(parts), spans
