"""Shards: a large pipeline's series split by a stable hash of their labels.

A PromQL expression in general cannot be narrowed by label matchers (``sum by (service)
(rate(x[5m]))`` has no label a shard could select on), so every shard evaluates the whole
query and keeps, while the answer is decoded, only the series whose label hash falls in it.
A series always hashes to the same shard, in every process and across restarts (BLAKE2b of
its ``series_key``, not Python's salted ``hash``), whatever other series come and go.

Per-shard state lives under ``state_key``: ``pipeline`` for an unsharded pipeline (so nothing
moves for it), ``pipeline#3/8`` for shard 3 of 8: its checkpoint, journal, lease and model
version. The pipeline's own key then holds the roll-up of its shards (``Inferencer``), from
which the shards of a new layout start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import Labels, SeriesBatch, series_key

MAX_SHARDS = 1024


def shard_of(labels: Labels, count: int) -> int:
    """The shard (``0 <= shard < count``) that the series with ``labels`` belongs to."""
    if count == 1:
        return 0
    digest = hashlib.blake2b(series_key(labels).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def state_key(pipeline_id: str, index: int, count: int) -> str:
    """Where a shard's checkpoint, journal, lease and model versions are kept."""
    return pipeline_id if count == 1 else f"{pipeline_id}#{index}/{count}"


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``; ``Shard()`` is the whole pipeline."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"shard count must be 1..{MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index must be 0..{self.count - 1}, got {self.index}")

    @property
    def whole(self) -> bool:
        return self.count == 1

    def key(self, pipeline_id: str) -> str:
        return state_key(pipeline_id, self.index, self.count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def mask(self, labels: Sequence[Labels]) -> npt.NDArray[np.bool_]:
        """Which of ``labels`` this shard owns."""
        if self.whole:
            return np.ones(len(labels), dtype=bool)
        return np.fromiter(
            (shard_of(lb, self.count) == self.index for lb in labels), bool, len(labels)
        )

    def take(self, batch: SeriesBatch) -> SeriesBatch:
        """The series of ``batch`` this shard owns."""
        return batch if self.whole else batch.take(np.flatnonzero(self.mask(batch.labels)))


WHOLE = Shard()
"""The whole pipeline: the one shard of an unsharded pipeline."""


def shards(count: int) -> list[Shard]:
    return [Shard(i, count) for i in range(count)]
