"""What of a window still has to be sent: the pieces of the exactly-once write.

A window's outputs are cut to what the TSDB can take (``drop_before`` its write horizon) and,
when an earlier run of the same window may have written part of it, to what the TSDB does not
hold yet (``missing``, from the timestamps read back with ``output_selector``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from openanomaly.domain.outputs import OutputBatch
from openanomaly.domain.records import OutputSeries
from openanomaly.domain.series import IntArray, series_key
from openanomaly.domain.spec import Pipeline


def output_selector(pipeline: Pipeline) -> str:
    """The PromQL selector of every output series the pipeline writes."""
    o = pipeline.outputs
    names = "|".join(n for n in (o.score, o.pred, o.lower, o.upper) if n is not None)
    return f'{{__name__=~"{names}",pipeline="{_quoted(pipeline.id)}"}}'


def written_key(labels: Mapping[str, str]) -> str:
    """The key a series is read back under: empty label values are not sent, so not stored."""
    return series_key({k: v for k, v in labels.items() if v})


def missing(series: Sequence[OutputSeries], present: Mapping[str, IntArray]) -> list[OutputSeries]:
    """``series`` without the samples whose (series, timestamp) the TSDB already holds."""
    out = []
    for s in series:
        held = present.get(written_key(s.labels))
        keep = (
            ~np.isin(s.timestamps, held) if held is not None else np.ones(s.timestamps.size, bool)
        )
        keep &= np.isfinite(s.values)
        if keep.any():
            out.append(OutputSeries(s.labels, s.timestamps[keep], s.values[keep]))
    return out


def drop_before(
    series: Sequence[OutputSeries], oldest: int | None
) -> tuple[Sequence[OutputSeries], int]:
    """``series`` without samples older than ``oldest`` (None: keep all), and how many
    timestamps of the first output (one per point scored) were dropped."""
    if isinstance(series, OutputBatch):
        return _batch_before(series, oldest)
    if oldest is None:
        return list(series), 0
    out, dropped, seen = [], 0, set()
    for s in series:
        keep = s.timestamps >= oldest
        key = written_key({k: v for k, v in s.labels.items() if k != "__name__"})
        if key not in seen:  # count points once, not once per output
            seen.add(key)
            dropped += int((~keep & np.isfinite(s.values)).sum())
        if keep.any():
            out.append(OutputSeries(s.labels, s.timestamps[keep], s.values[keep]))
    return out, dropped


def _batch_before(batch: OutputBatch, oldest: int | None) -> tuple[OutputBatch, int]:
    """``drop_before`` by columns (the rows of a batch are distinct input series)."""
    if oldest is None or not batch.names:
        return batch, 0
    old = batch.present & (batch.timestamps < oldest)
    dropped = int(np.count_nonzero(old & np.isfinite(batch.values[0])))
    kept = batch.since(oldest)
    return kept.rows(np.any(kept.present, axis=1)), dropped


def _quoted(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
