"""PrometheusReader against httpx.MockTransport: grid, chunking, decoding and errors."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import numpy as np
import orjson
import pytest

from openanomaly.adapters.prometheus.reader import PrometheusReader, aligned_grid
from openanomaly.errors import QueryError, TooManySeries, TsdbUnavailable
from openanomaly.ports import MetricsReader

URL = "http://tsdb.test"
ENDPOINT = f"{URL}/api/v1/query_range"

Series = tuple[dict[str, str], Callable[[int], str | None]]
"""Labels and the value (as Prometheus spells it) at a timestamp, or None for no point."""


def matrix(result: list[dict[str, Any]]) -> httpx.Response:
    body = {"status": "success", "data": {"resultType": "matrix", "result": result}}
    return httpx.Response(200, content=orjson.dumps(body))


def error(status: int, error_type: str, text: str) -> httpx.Response:
    body = {"status": "error", "errorType": error_type, "error": text}
    return httpx.Response(status, content=orjson.dumps(body))


class FakePrometheus:
    """Answers ``query_range`` from ``series`` like Prometheus: a point per step in [start, end]."""

    def __init__(self, *series: Series, max_points: int = 11_000) -> None:
        self.series = series
        self.max_points = max_points
        self.forms: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert request.method == "POST"
        assert request.url == ENDPOINT
        assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        with self.lock:
            self.forms.append(form)
        start, end, step = int(form["start"]), int(form["end"]), int(form["step"])
        if (end - start) // step >= self.max_points:
            return error(400, "bad_data", "exceeded maximum resolution of 11,000 points")
        return matrix(self._result(range(start, end + 1, step)))

    def _result(self, grid: range) -> list[dict[str, Any]]:
        result = []
        for labels, value in self.series:
            points = [[t, v] for t in grid if (v := value(t)) is not None]
            if points:
                result.append({"metric": labels, "values": points})
        return result


def reader(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> PrometheusReader:
    kwargs.setdefault("backoff", 0.0)
    return PrometheusReader(
        URL, client=httpx.Client(transport=httpx.MockTransport(handler)), **kwargs
    )


def test_is_a_metrics_reader() -> None:
    assert isinstance(reader(FakePrometheus()), MetricsReader)


def test_grid_starts_at_the_first_multiple_of_step() -> None:
    assert aligned_grid(1000, 1300, 60).tolist() == [1020, 1080, 1140, 1200, 1260]
    assert aligned_grid(-130, 0, 60).tolist() == [-120, -60, 0]
    assert aligned_grid(1021, 1079, 60).size == 0


def test_reads_the_aligned_grid_with_a_post_form() -> None:
    tsdb = FakePrometheus(({"__name__": "up", "job": "a"}, lambda t: str(t // 60)))
    batch = reader(tsdb).query_range("up", 1000, 1300, 60)

    assert tsdb.forms == [{"query": "up", "start": "1020", "end": "1260", "step": "60"}]
    assert batch.labels == ({"__name__": "up", "job": "a"},)
    assert batch.timestamps.tolist() == [1020, 1080, 1140, 1200, 1260]
    assert batch.values.tolist() == [[17.0, 18.0, 19.0, 20.0, 21.0]]


def test_an_empty_grid_asks_nothing() -> None:
    tsdb = FakePrometheus()
    batch = reader(tsdb).query_range("up", 1021, 1079, 60)
    assert len(batch) == 0 and batch.timestamps.size == 0
    assert tsdb.forms == []


def test_special_float_strings_and_float_timestamps() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        points = [[60.0, "NaN"], [120, "+Inf"], [180, "-Inf"], [240, "1e-3"], [300.0, "-2.5"]]
        return matrix([{"metric": {"a": "1"}, "values": points}])

    batch = reader(handler).query_range("x", 60, 300, 60)
    np.testing.assert_array_equal(batch.values, [[np.nan, np.inf, -np.inf, 0.001, -2.5]])


def test_long_ranges_are_split_under_the_point_limit_and_stitched() -> None:
    tsdb = FakePrometheus(
        ({"s": "always"}, str),
        ({"s": "early"}, lambda t: "1" if t < 5_000 else None),  # absent from later chunks
        ({"s": "late"}, lambda t: "2" if t >= 20_000 else None),  # absent from earlier ones
    )
    batch = reader(tsdb).query_range("x", 0, 25_000, 1)

    spans = sorted((int(f["start"]), int(f["end"])) for f in tsdb.forms)
    assert spans[0][0] == 0 and spans[-1][1] == 25_000
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(spans))
    assert all(b - a < 11_000 for a, b in spans) and (0, 10_999) in spans  # the oldest, in bulk
    assert batch.timestamps.tolist() == list(range(25_001))
    by_key = dict(zip(batch.keys, batch.values, strict=True))
    np.testing.assert_array_equal(by_key['{s="always"}'], np.arange(25_001.0))
    early, late = by_key['{s="early"}'], by_key['{s="late"}']
    assert np.all(early[:5_000] == 1) and np.all(np.isnan(early[5_000:]))
    assert np.all(np.isnan(late[:20_000])) and np.all(late[20_000:] == 2)


def test_a_chunked_read_equals_one_read() -> None:
    tsdb = FakePrometheus(({"s": "a"}, lambda t: str(t % 7)), ({"s": "b"}, lambda t: "0.5"))
    one = reader(tsdb).query_range("x", 0, 3_000, 10)
    chunked = reader(tsdb, max_points=7).query_range("x", 0, 3_000, 10)
    assert chunked.keys == one.keys
    np.testing.assert_array_equal(chunked.timestamps, one.timestamps)
    np.testing.assert_array_equal(chunked.values, one.values)


def test_chunks_are_fetched_in_parallel() -> None:
    # Two chunks meet at the barrier only if they are in flight at the same time.
    barrier = threading.Barrier(2, timeout=5)
    tsdb = FakePrometheus(({"s": "a"}, lambda t: "1"))

    def handler(request: httpx.Request) -> httpx.Response:
        barrier.wait()
        return tsdb(request)

    batch = reader(handler, max_points=5, parallelism=2).query_range("x", 0, 9, 1)
    assert batch.values.tolist() == [[1.0] * 10]


def test_a_refused_query_raises_the_tsdbs_own_message_with_the_query() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(400, "bad_data", "1:16: parse error: unclosed left parenthesis")

    with pytest.raises(QueryError) as info:
        reader(handler).query_range("sum(rate(x[5m])", 0, 600, 60)
    assert str(info.value) == (
        "1:16: parse error: unclosed left parenthesis (query: sum(rate(x[5m]))"
    )
    assert info.value.status == 400
    assert len(calls) == 1  # a bad query stays bad: no retry


def test_an_execution_error_422_is_a_query_error() -> None:
    handler = lambda _: error(422, "execution", "query processing would load too many samples")  # noqa: E731
    with pytest.raises(QueryError, match="too many samples"):
        reader(handler).query_range("x", 0, 600, 60)


def test_5xx_is_retried_then_succeeds() -> None:
    answers = [
        httpx.Response(502, text="bad gateway"),
        matrix([{"metric": {}, "values": [[0, "3"]]}]),
    ]
    batch = reader(lambda _: answers.pop(0)).query_range("x", 0, 0, 60)
    assert batch.values.tolist() == [[3.0]]


def test_5xx_after_retries_is_unavailable_naming_the_url() -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return error(503, "timeout", "query timed out in expression evaluation")

    with pytest.raises(TsdbUnavailable, match="query timed out") as info:
        reader(handler, max_retries=2).query_range("x", 0, 600, 60)
    assert ENDPOINT in str(info.value)
    assert info.value.status == 503
    assert len(calls) == 3


def test_a_connection_error_is_unavailable_naming_the_url() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    with pytest.raises(TsdbUnavailable, match="Connection refused") as info:
        reader(handler).query_range("x", 0, 600, 60)
    assert info.value.url == ENDPOINT
    assert ENDPOINT in str(info.value)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, text="<html>not an API</html>"),
        httpx.Response(200, content=orjson.dumps({"status": "success", "data": {}})),
        httpx.Response(
            200,
            content=orjson.dumps(
                {"status": "success", "data": {"resultType": "vector", "result": []}}
            ),
        ),
    ],
    ids=["html", "no-result", "vector"],
)
def test_an_answer_that_is_not_a_matrix_is_a_query_error(response: httpx.Response) -> None:
    with pytest.raises(QueryError, match=r"\(query: x\)"):
        reader(lambda _: response).query_range("x", 0, 600, 60)


def test_server_warnings_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    body = {
        "status": "success",
        "warnings": ["partial response"],
        "data": {"resultType": "matrix", "result": []},
    }
    reader(lambda _: httpx.Response(200, content=orjson.dumps(body))).query_range("x", 0, 60, 60)
    assert "partial response" in caplog.text


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="max_points"):
        PrometheusReader(URL, max_points=1)
    with pytest.raises(ValueError, match="step"):
        reader(FakePrometheus()).query_range("x", 0, 60, 0)


def test_the_grid_begins_at_the_first_timestamp_with_data() -> None:
    tsdb = FakePrometheus(
        ({"s": "a"}, lambda t: "1" if t >= 6_000 else None),
        ({"s": "b"}, lambda t: "2" if 6_600 <= t < 7_000 else None),
    )
    batch = reader(tsdb).query_range("x", 0, 7_200, 60)  # 2 hours asked, the last 20 min hold data

    assert batch.timestamps.tolist() == list(range(6_000, 7_201, 60))
    assert batch.values.shape == (2, 21)
    by_key = dict(zip(batch.keys, batch.values, strict=True))
    assert np.all(by_key['{s="a"}'] == 1)
    assert np.isnan(by_key['{s="b"}'][:10]).all() and np.all(by_key['{s="b"}'][10:17] == 2)


def test_the_first_timestamp_with_data_counts_across_chunks() -> None:
    tsdb = FakePrometheus(
        ({"s": "late"}, lambda t: "1" if t >= 2_000 else None),
        ({"s": "early"}, lambda t: "2" if 1_000 <= t < 1_100 else None),
    )
    batch = reader(tsdb, max_points=500).query_range("x", 0, 3_000, 1)
    assert batch.timestamps[0] == 1_000 and batch.timestamps[-1] == 3_000


def test_no_point_at_all_gives_an_empty_grid() -> None:
    batch = reader(FakePrometheus()).query_range("x", 0, 600, 60)
    assert len(batch) == 0 and batch.timestamps.size == 0


def many(n: int) -> FakePrometheus:
    return FakePrometheus(*(({"i": str(i)}, str) for i in range(n)))


def test_more_series_than_the_limit_are_refused_naming_count_setting_and_query() -> None:
    with pytest.raises(TooManySeries) as caught:
        reader(many(5), max_series=4).query_range("sum by (i) (x)", 0, 600, 60)
    message = str(caught.value)
    assert "5 series" in message and "tsdb.max_series=4" in message
    assert "OA_TSDB__MAX_SERIES" in message and "sum by (i) (x)" in message
    assert (caught.value.count, caught.value.limit) == (5, 4)
    assert len(reader(many(4), max_series=4).query_range("x", 0, 600, 60)) == 4


def test_the_limit_is_checked_before_the_values_are_parsed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:  # values no parser would accept
        item = b'{"metric":{},"values":[[1,"not a number"]]}'
        return httpx.Response(
            200,
            content=b'{"status":"success","data":{"resultType":"matrix",'
            b'"result":[' + b",".join([item] * 3) + b"]}}",
        )

    with pytest.raises(TooManySeries):
        reader(handler, max_series=2).query_range("x", 0, 60, 60)
    with pytest.raises(QueryError, match="did not answer like a Prometheus API"):
        reader(handler, max_series=3).query_range("x", 0, 60, 60)


def test_the_limit_holds_for_the_union_of_chunks() -> None:
    tsdb = FakePrometheus(
        ({"s": "early"}, lambda t: "1" if t < 100 else None),
        ({"s": "late"}, lambda t: "1" if t >= 900 else None),
    )
    with pytest.raises(TooManySeries):
        reader(tsdb, max_points=500, max_series=1).query_range("x", 0, 999, 1)


class SizingTsdb(FakePrometheus):
    """Refuses a range query of more than ``budget`` nominal points, as VictoriaMetrics does."""

    def __init__(self, *series: Series, budget: int) -> None:
        super().__init__(*series)
        self.budget = budget

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        points = (int(form["end"]) - int(form["start"])) // int(form["step"]) + 1
        if points * len(self.series) > self.budget:
            self.forms.append(form)
            text = f"cannot execute query: not enough memory for processing {points} points"
            return error(422, "execution", text)
        return super().__call__(request)


def test_a_chunk_refused_as_too_big_is_asked_in_halves() -> None:
    series = (({"s": "a"}, lambda t: str(t % 5)), ({"s": "b"}, lambda t: "3"))
    whole = reader(FakePrometheus(*series)).query_range("x", 0, 999, 1)
    tsdb = SizingTsdb(*series, budget=600)
    halved = reader(tsdb).query_range("x", 0, 999, 1)

    assert halved.keys == whole.keys
    np.testing.assert_array_equal(halved.values, whole.values)
    asked = [(int(f["start"]), int(f["end"])) for f in tsdb.forms]
    assert asked[0] == (0, 999) and (0, 249) in asked and len(asked) == 7


def test_a_single_step_refused_as_too_big_stays_refused() -> None:
    tsdb = SizingTsdb(({"s": "a"}, str), budget=0)
    with pytest.raises(QueryError, match="not enough memory"):
        reader(tsdb).query_range("x", 0, 0, 1)  # one step cannot be halved
    assert len(tsdb.forms) == 1


WEEK, HOUR = 7 * 86_400, 3_600


def test_a_long_range_is_read_from_its_end_down_to_the_first_empty_chunk() -> None:
    end = 100 * WEEK
    tsdb = FakePrometheus(({"s": "a"}, lambda t: "1" if t > end - 2 * HOUR else None))
    batch = reader(tsdb).query_range("x", end - WEEK, end, 60, recent=True)

    asked = [(int(f["start"]), int(f["end"])) for f in tsdb.forms]
    assert asked[0][1] == end and len(asked) == 2  # the chunk with the data, one empty before
    assert sum((b - a) // 60 + 1 for a, b in asked) < 4 * 121  # not the 10,081 steps of a week
    assert batch.timestamps[0] == end - 2 * HOUR + 60 and np.all(batch.values == 1)


def test_a_gap_shorter_than_the_data_after_it_is_read_through() -> None:
    # Series that start at different times, and a 4-hour hole in the middle of the data.
    end = 100 * WEEK
    tsdb = FakePrometheus(
        ({"s": "new"}, lambda t: "1" if t > end - 2 * HOUR else None),
        ({"s": "old"}, lambda t: "2" if end - 30 * HOUR <= t < end - 6 * HOUR else None),
    )
    batch = reader(tsdb).query_range("x", end - WEEK, end, 60, recent=True)

    assert batch.timestamps[0] == end - 30 * HOUR
    by_key = dict(zip(batch.keys, batch.values, strict=True))
    old = by_key['{s="old"}']
    assert np.all(old[: 24 * 60] == 2) and np.isnan(old[24 * 60 :]).all()
    assert np.isnan(by_key['{s="new"}'][: 28 * 60]).all()


def test_a_gap_longer_than_all_the_data_after_it_ends_the_read() -> None:
    # The documented limit of reading back: what lies before such a gap is not read.
    end = 100 * WEEK
    tsdb = FakePrometheus(
        ({"s": "a"}, lambda t: "1" if t > end - 2 * HOUR or t < end - 5 * 86_400 else None)
    )
    batch = reader(tsdb).query_range("x", end - WEEK, end, 60, recent=True)
    assert batch.timestamps[0] > end - 5 * 86_400


def test_a_range_of_a_day_or_less_is_read_in_one_request() -> None:
    tsdb = FakePrometheus(({"s": "a"}, lambda t: "1" if t > 80_000 else None))
    reader(tsdb).query_range("x", 0, 86_340, 60)
    assert [(f["start"], f["end"]) for f in tsdb.forms] == [("0", "86340")]


def test_an_explicit_range_is_read_whole_whatever_its_gaps() -> None:
    # Only a training's history (recent=True) may stop at a long gap: a backtest or a catch-up
    # of the same range reads every point that exists.
    end = 100 * WEEK
    tsdb = FakePrometheus(
        ({"s": "a"}, lambda t: "1" if t > end - 2 * HOUR or t < end - 5 * 86_400 else None)
    )
    batch = reader(tsdb).query_range("x", end - WEEK, end, 60)
    assert batch.timestamps[0] == end - WEEK
