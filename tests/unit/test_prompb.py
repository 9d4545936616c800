"""The numpy ``WriteRequest`` encoder lays out exactly the protobuf library's bytes."""

from __future__ import annotations

from typing import Any

import cramjam
import numpy as np
import pytest

from openanomaly.adapters.prometheus import prompb
from openanomaly.adapters.prometheus.remote_write import Samples, encode

ALPHABET = [*list("abcXYZ_09 "), "é", "ß", "日本", "🙂", '"', "\\", "\n", "{}"]


def random_labels(rng: np.random.Generator) -> dict[str, str]:
    def text(n: int) -> str:
        return "".join(rng.choice(ALPHABET) for _ in range(n))

    labels = {f"l{k}_{text(2)}": text(int(rng.integers(0, 12))) for k in range(rng.integers(0, 6))}
    if rng.random() < 0.8:
        labels["__name__"] = "anomaly_" + text(3)
    if rng.random() < 0.2:
        labels["long"] = "x" * int(rng.integers(100, 300))  # a length of two varint bytes
    return labels


def random_samples(rng: np.random.Generator, n_series: int) -> Samples:
    sizes = rng.integers(0, 6, n_series)
    total = int(sizes.sum())
    ts = rng.choice(
        [0, 1, 127, 128, -1, -(2**63), 2**63 - 1, 1_700_000_000_000, 16_383, 16_384], total
    ) + rng.integers(0, 2, total)
    special = np.array([0.0, -0.0, np.inf, -np.inf, 5e-324, 1.7976931348623157e308, -1.5])
    values = np.where(
        rng.random(total) < 0.3, rng.choice(special, total), rng.normal(size=total) * 1e3
    )
    return Samples(
        labels=[random_labels(rng) for _ in range(n_series)],
        bounds=np.concatenate([[0], np.cumsum(sizes)]).tolist(),
        ts_ms=np.clip(ts, -(2**63), 2**63 - 1).tolist(),
        values=values.tolist(),
        dropped_future=0,
    )


def by_the_library(samples: Samples, parts: list[tuple[int, int, int]]) -> bytes:
    """(series, first sample, past-the-last sample) pieces, built with protobuf messages."""
    request: Any = prompb.write_request_class()()
    for i, lo, hi in parts:
        series = request.timeseries.add()
        for name in sorted(samples.labels[i]):
            if value := samples.labels[i][name]:
                series.labels.add(name=name, value=value)
        for t, v in zip(samples.ts_ms[lo:hi], samples.values[lo:hi], strict=True):
            series.samples.add(value=v, timestamp=t)
    return bytes(request.SerializeToString())


@pytest.mark.parametrize("seed", range(5))
def test_a_request_is_byte_for_byte_the_protobuf_librarys(seed: int) -> None:
    rng = np.random.default_rng(seed)
    samples = random_samples(rng, 60)
    fields, offsets = prompb.sample_fields(
        np.asarray(samples.ts_ms, dtype=np.int64), np.asarray(samples.values)
    )
    b = samples.bounds
    (mine, count), *more = prompb.write_requests(
        samples.labels, b, fields, offsets.tolist(), batch_samples=10**6
    )
    parts = [(i, b[i], b[i + 1]) for i in range(len(samples.labels)) if b[i + 1] > b[i]]
    assert not more and count == len(samples.values)
    assert mine == by_the_library(samples, parts)


def test_batched_bodies_are_the_librarys_bytes_split_in_order() -> None:
    samples = random_samples(np.random.default_rng(7), 40)
    expected: list[bytes] = []
    parts: list[tuple[int, int, int]] = []
    count = 0
    for i in range(len(samples.labels)):
        lo, hi = samples.bounds[i], samples.bounds[i + 1]
        while lo < hi:
            take = min(hi - lo, 7 - count)
            parts.append((i, lo, lo + take))
            lo, count = lo + take, count + take
            if count == 7:
                expected.append(by_the_library(samples, parts))
                parts, count = [], 0
    if parts:
        expected.append(by_the_library(samples, parts))
    bodies = [cramjam.snappy.decompress_raw(body) for body, _ in encode(samples, 7)]
    assert [bytes(body) for body in bodies] == expected


def test_varint_matches_the_wire_format() -> None:
    assert prompb.varint(0) == b"\x00"
    assert prompb.varint(127) == b"\x7f"
    assert prompb.varint(300) == b"\xac\x02"
