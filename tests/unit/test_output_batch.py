"""The columnar outputs of a window: the same series, and the same remote-write bytes, as one
OutputSeries per (input series, output name)."""

from __future__ import annotations

import numpy as np
import pytest

from openanomaly.adapters.prometheus.remote_write import encode, flatten
from openanomaly.domain.outputs import OutputBatch, build_outputs, output_labels
from openanomaly.domain.records import OutputSeries
from openanomaly.domain.scoring import Scored
from openanomaly.domain.spec import Pipeline
from openanomaly.services.recovery import drop_before

NAMES = ("anomaly_score", "anomaly_pred", "anomaly_lower", "anomaly_upper")


def random_batch(seed: int, n: int = 30, t: int = 4) -> OutputBatch:
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000 + 60 * np.arange(t, dtype=np.int64)
    labels = []
    for i in range(n):
        lb = {"instance": f"h{i}", "job": "node", "pipeline": "p"}
        if i % 3 == 0:
            lb["Zone"] = "A"  # sorts before __name__
        if i % 5 == 0:
            lb["empty"] = ""  # not sent
        if i % 4 == 0:
            lb["a_b"] = "x\u00e9"  # after the capitals, before the lower case
        labels.append(lb)
    present = rng.random((n, t)) < 0.7
    values = [rng.normal(size=(n, t)) for _ in NAMES]
    values[1][rng.random((n, t)) < 0.1] = np.nan
    values[2][rng.random((n, t)) < 0.05] = -np.inf
    values[3][0, :] = 0.0  # proto3 leaves a zero value out of its Sample
    return OutputBatch(NAMES, labels, ts, present, values)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("max_ts", [None, 1_700_000_090])
def test_a_batch_encodes_to_the_bytes_of_its_series_one_by_one(
    seed: int, max_ts: int | None
) -> None:
    batch = random_batch(seed)
    one_by_one = [OutputSeries(s.labels, s.timestamps, s.values) for s in batch]
    columns, rows = flatten(batch, max_ts=max_ts), flatten(one_by_one, max_ts=max_ts)

    assert list(encode(columns, 17)) == list(encode(rows, 17))
    assert (columns.dropped_future, columns.dropped_nonfinite) == (
        rows.dropped_future,
        rows.dropped_nonfinite,
    )
    assert columns.dropped_nonfinite > 0
    assert max_ts is None or columns.dropped_future > 0


def test_build_outputs_keeps_the_contract_labels_and_points() -> None:
    pipeline = Pipeline.model_validate(
        {
            "id": "p1",
            "query": "up",
            "step": 60,
            "model": {"engine": "builtin"},
            "outputs": {"labels": {"team": "x"}},
        }
    )
    ts = np.array([60, 120, 180], dtype=np.int64)
    score = np.array([[0.5, np.nan, 2.0], [np.nan, np.nan, np.nan], [1.0, 1.0, 1.0]])
    scored = Scored(score=score, yhat=score + 1, lower=score - 1, upper=score + 2)
    sources = ({"__name__": "up", "job": "a"}, {"job": "b"}, {"job": "c", "team": "y"})

    batch = build_outputs(sources, ts, scored, pipeline)

    got = {(s.labels["__name__"], s.labels["job"]): s for s in batch}
    assert len(batch) == 8  # the all-NaN row writes nothing
    assert got[("anomaly_score", "a")].labels == {
        "__name__": "anomaly_score",
        **output_labels(sources[0], pipeline),
    }
    assert got[("anomaly_pred", "a")].timestamps.tolist() == [60, 180]
    assert got[("anomaly_pred", "a")].values.tolist() == [1.5, 3.0]
    assert got[("anomaly_upper", "c")].labels["team"] == "x"


def test_dropping_old_samples_by_columns_matches_one_by_one() -> None:
    batch = random_batch(9)
    oldest = int(batch.timestamps[2])
    kept, dropped = drop_before(batch, oldest)
    rows, rows_dropped = drop_before(list(batch), oldest)

    assert isinstance(kept, OutputBatch)
    assert dropped == rows_dropped > 0
    assert list(encode(flatten(kept), 1000)) == list(encode(flatten(rows), 1000))
    assert all(s.timestamps.size for s in kept)
