"""The fast matrix decoder gives exactly what a full JSON parse gives."""

import math
from typing import Any

import numpy as np
import orjson
import pytest

from openanomaly.adapters.prometheus import decode
from openanomaly.adapters.prometheus.decode import decode_matrix
from openanomaly.errors import TooManySeries


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


def test_the_flat_arrays_and_bounds_hold_every_series_in_order() -> None:
    result: list[dict[str, Any]] = [
        {"metric": {"i": "0"}, "values": [[1, "1"], [2, "2"]]},
        {"metric": {"i": "1"}, "values": []},
        {"metric": {"i": "2"}, "values": [[5, "NaN"]]},
    ]
    d = decode_matrix(body(result))
    assert d.bounds.tolist() == [0, 2, 2, 3]
    assert d.timestamps.tolist() == [1, 2, 5]
    assert d.values[:2].tolist() == [1.0, 2.0] and math.isnan(d.values[2])
    assert d.metrics == [{"i": "0"}, {"i": "1"}, {"i": "2"}]


def test_whitespace_between_the_tokens_is_read() -> None:
    raw = (
        b'{"status": "success", "data": {"resultType": "matrix", "result": ['
        b'{"metric": {"a": "1"}, "values" : [ [1, "1.5"], [2, "-Inf"] ]},'
        b'{"metric": {}, "values": [[3 , "7"]]}]}}'
    )
    d = decode_matrix(raw)
    assert d.timestamps.tolist() == [1, 2, 3]
    assert d.values.tolist() == [1.5, -math.inf, 7.0]
    assert d.bounds.tolist() == [0, 2, 3]


def test_a_value_that_is_not_a_number_is_refused() -> None:
    for bad in ('"abc"', '""', '"1.5.2"'):
        raw = b'{"data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,%s]]}]}}' % (
            bad.encode()
        )
        with pytest.raises(ValueError):
            decode_matrix(raw)


def test_too_many_series_are_refused_before_parsing() -> None:
    result = [{"metric": {"i": str(i)}, "values": [[1, "x"]]} for i in range(3)]
    with pytest.raises(TooManySeries) as caught:
        decode_matrix(body(result), max_series=2)
    assert (caught.value.count, caught.value.limit) == (3, 2)


def test_a_vector_answer_has_no_series() -> None:
    vector = body([{"metric": {"a": "1"}, "value": [1, "2"]}])
    vector = vector.replace(b'"matrix"', b'"vector"')
    d = decode_matrix(vector)
    assert d.result_type == "vector" and d.series == [] and d.bounds.tolist() == [0]


def test_groups_of_series_parsed_apart_give_the_same_arrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(3)
    result = [
        {"metric": {"i": str(i)}, "values": [[k, repr(float(rng.normal()))] for k in range(n)]}
        for i, n in enumerate(rng.integers(0, 9, 300))
    ]
    whole = decode_matrix(body(result))
    monkeypatch.setattr(decode, "_GROUP_BYTES", 64)  # a group every few series
    grouped = decode_matrix(body(result))
    assert grouped.bounds.tolist() == whole.bounds.tolist()
    assert grouped.timestamps.tolist() == whole.timestamps.tolist()
    assert grouped.values.tolist() == whole.values.tolist()
    assert [len(r["values"]) for r in result] == np.diff(grouped.bounds).tolist()
