"""The fast matrix decoder gives exactly what a full JSON parse gives."""

import math
from typing import Any

import numpy as np
import orjson
import pytest

from openanomaly.adapters.prometheus.decode import decode_matrix


def body(result: list[dict[str, Any]], **extra: object) -> bytes:
    return orjson.dumps(
        {"status": "success", "data": {"resultType": "matrix", "result": result}, **extra}
    )


def test_matches_a_full_parse_on_many_series() -> None:
    rng = np.random.default_rng(0)
    result: list[dict[str, Any]] = [
        {
            "metric": {"__name__": "m", "i": str(i), "tricky": 'a "values":[1,"2"]] b'},
            "values": [
                [1_700_000_000 + 15 * k, repr(float(v))]
                for k, v in enumerate(rng.normal(size=int(rng.integers(0, 20))))
            ],
        }
        for i in range(200)
    ]
    decoded = decode_matrix(body(result))
    assert [s.metric for s in decoded.series] == [r["metric"] for r in result]
    for s, r in zip(decoded.series, result, strict=True):
        assert s.timestamps.tolist() == [p[0] for p in r["values"]]
        assert s.values.tolist() == [float(p[1]) for p in r["values"]]


def test_special_values_float_timestamps_and_empty_arrays() -> None:
    raw = (
        b'{"status":"success","data":{"resultType":"matrix","result":['
        b'{"metric":{"a":"1"},"values":[[1700000000.0,"NaN"],[1700000015.5,"+Inf"],'
        b'[1700000030,"-Inf"],[1700000045,"1e-3"]]},'
        b'{"metric":{"a":"2"},"values":[]},{"metric":{},"values":[[1,"2"]]}]},'
        b'"warnings":["w1"]}'
    )
    d = decode_matrix(raw)
    first = d.series[0]
    assert first.timestamps.tolist() == [1700000000, 1700000016, 1700000030, 1700000045]
    assert math.isnan(first.values[0])
    assert first.values[1:].tolist() == [math.inf, -math.inf, 0.001]
    assert d.series[1].values.size == 0 and d.series[2].metric == {}
    assert d.warnings == ["w1"]


def test_other_result_types_and_garbage() -> None:
    vector = orjson.dumps({"status": "success", "data": {"resultType": "vector", "result": []}})
    assert decode_matrix(vector).result_type == "vector"
    with pytest.raises(ValueError):
        decode_matrix(b'{"data":{"resultType":"matrix","result":[{"values":[[1,"2"]')
    with pytest.raises(ValueError):
        decode_matrix(body([{"metric": {}, "values": [[1, "2", 3]]}]))
