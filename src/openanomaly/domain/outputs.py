"""From scored arrays to the series written back: names, labels, observation timestamps."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from openanomaly.domain.records import OutputSeries
from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import IntArray, Labels
from openanomaly.domain.spec import Pipeline


def output_labels(source: Labels, pipeline: Pipeline) -> dict[str, str]:
    """The input's labels, its ``__name__`` kept as ``source_metric``, plus ``pipeline`` and the
    configured extra labels (which win over the input's)."""
    out = {k: v for k, v in source.items() if k != "__name__"}
    if "__name__" in source:
        out[pipeline.outputs.source_label] = source["__name__"]
    out.update(pipeline.outputs.labels)
    out["pipeline"] = pipeline.id
    return out


def build_outputs(
    labels: tuple[Labels, ...], timestamps: IntArray, scored: Scored, pipeline: Pipeline
) -> list[OutputSeries]:
    """One OutputSeries per (input series, output name), samples only where the score exists
    (a NaN or missing input writes nothing for that point)."""
    names: Mapping[str, str | None] = {
        "score": pipeline.outputs.score,
        "yhat": pipeline.outputs.pred,
        "lower": pipeline.outputs.lower,
        "upper": pipeline.outputs.upper,
    }
    present = np.isfinite(scored.score)
    out: list[OutputSeries] = []
    for row, source in enumerate(labels):
        mask = present[row]
        if not mask.any():
            continue
        base = output_labels(source, pipeline)
        ts = timestamps[mask]
        for field, name in names.items():
            if name is None:
                continue
            values = getattr(scored, field)[row, mask]
            out.append(OutputSeries({"__name__": name, **base}, ts, values))
    return out
