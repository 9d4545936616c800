"""From scored arrays to the series written back: names, labels, observation timestamps.

The outputs of a window are kept columnar (``OutputBatch``): one label set per input series,
one value matrix per output name, one presence mask. 100,000 series x 4 outputs are then four
arrays and a label table, not 400,000 objects each with its own dict of labels; the remote-write
encoder reads the columns directly. The batch is still a ``Sequence[OutputSeries]`` for every
other consumer (fakes, recovery, tests), materialising one series when asked.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import overload

import numpy as np
import numpy.typing as npt

from openanomaly.domain.records import OutputSeries
from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import FloatArray, IntArray, Labels
from openanomaly.domain.spec import Pipeline

BoolArray = npt.NDArray[np.bool_]


def output_labels(source: Labels, pipeline: Pipeline) -> dict[str, str]:
    """The input's labels, its ``__name__`` kept as ``source_metric``, plus ``pipeline`` and the
    configured extra labels (which win over the input's)."""
    out = {k: v for k, v in source.items() if k != "__name__"}
    if "__name__" in source:
        out[pipeline.outputs.source_label] = source["__name__"]
    out.update(pipeline.outputs.labels)
    out["pipeline"] = pipeline.id
    return out


class OutputBatch(Sequence[OutputSeries]):
    """The outputs of one window, by columns.

    Series ``i * len(names) + j`` is output ``names[j]`` of input row ``i``: labels
    ``{"__name__": names[j], **labels[i]}``, samples at ``timestamps[present[i]]`` with the
    values ``values[j][i, present[i]]`` (which may be non-finite: the writer drops those).

    Attributes:
        names: the output metric names, in order.
        labels: one label set per row, without ``__name__``.
        timestamps: the window's grid, shape ``(T,)``.
        present: where a row has a sample, shape ``(N, T)``.
        values: one ``(N, T)`` matrix per name.
    """

    def __init__(
        self,
        names: Sequence[str],
        labels: Sequence[dict[str, str]],
        timestamps: IntArray,
        present: BoolArray,
        values: Sequence[FloatArray],
    ) -> None:
        self.names = tuple(names)
        self.labels = tuple(labels)
        self.timestamps = np.asarray(timestamps, dtype=np.int64)
        self.present = np.asarray(present, dtype=bool)
        self.values = tuple(np.asarray(v, dtype=np.float64) for v in values)
        shape = (len(self.labels), self.timestamps.size)
        if self.present.shape != shape or any(v.shape != shape for v in self.values):
            raise ValueError(f"present and values must be shaped {shape}")
        if len(self.values) != len(self.names):
            raise ValueError(f"{len(self.names)} names but {len(self.values)} value matrices")

    def __len__(self) -> int:
        return len(self.labels) * len(self.names)

    @overload
    def __getitem__(self, index: int) -> OutputSeries: ...
    @overload
    def __getitem__(self, index: slice) -> list[OutputSeries]: ...
    def __getitem__(self, index: int | slice) -> OutputSeries | list[OutputSeries]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        row, j = divmod(index % len(self), len(self.names))
        mask = self.present[row]
        labels = {"__name__": self.names[j], **self.labels[row]}
        return OutputSeries(labels, self.timestamps[mask], self.values[j][row, mask])

    def __iter__(self) -> Iterator[OutputSeries]:
        return (self[i] for i in range(len(self)))

    def since(self, oldest: int) -> OutputBatch:
        """This batch without the samples older than ``oldest``."""
        present = self.present & (self.timestamps >= oldest)
        return OutputBatch(self.names, self.labels, self.timestamps, present, self.values)

    def rows(self, keep: BoolArray) -> OutputBatch:
        """The rows where ``keep`` is true."""
        idx = np.flatnonzero(keep)
        labels = [self.labels[i] for i in idx.tolist()]
        values = [v[idx] for v in self.values]
        return OutputBatch(self.names, labels, self.timestamps, self.present[idx], values)


def build_outputs(
    labels: tuple[Labels, ...], timestamps: IntArray, scored: Scored, pipeline: Pipeline
) -> OutputBatch:
    """The output series of every input row that has a score, samples only where the score
    exists (a NaN or missing input writes nothing for that point)."""
    fields = {
        "score": pipeline.outputs.score,
        "yhat": pipeline.outputs.pred,
        "lower": pipeline.outputs.lower,
        "upper": pipeline.outputs.upper,
    }
    named = {field: name for field, name in fields.items() if name is not None}
    present = np.isfinite(scored.score)
    rows = np.flatnonzero(present.any(axis=1))
    extra = pipeline.outputs.labels
    source_label = pipeline.outputs.source_label
    out_labels = []
    for i in rows.tolist():  # output_labels, inlined: this runs once per input series
        source = labels[i]
        base = dict(source)
        name = base.pop("__name__", None)
        if name is not None:
            base[source_label] = name
        base.update(extra)
        base["pipeline"] = pipeline.id
        out_labels.append(base)
    values = [np.asarray(getattr(scored, field))[rows] for field in named]
    return OutputBatch(list(named.values()), out_labels, timestamps, present[rows], values)
