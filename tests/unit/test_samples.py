"""PrometheusSampleReader against httpx.MockTransport: the query it sends, what it keeps."""

from __future__ import annotations

from urllib.parse import parse_qs

import httpx
import orjson
import pytest

from openanomaly.adapters.prometheus.samples import PrometheusSampleReader
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import QueryError
from openanomaly.ports import SampleReader
from openanomaly.services.recovery import output_selector


def answering(result: list[dict[str, object]], seen: list[dict[str, list[str]]]) -> httpx.Client:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(parse_qs(request.content.decode()))
        body = {"status": "success", "data": {"resultType": "matrix", "result": result}}
        return httpx.Response(200, content=orjson.dumps(body))

    return httpx.Client(transport=httpx.MockTransport(handler))


def test_reads_the_raw_samples_of_the_window_duplicates_kept() -> None:
    seen: list[dict[str, list[str]]] = []
    metric = {"__name__": "anomaly_score", "pipeline": "p1", "host": "a"}
    values = [[100, "1"], [160, "2"], [160, "2"], [220, "3"]]  # 100 is the left edge
    with answering([{"metric": metric, "values": values}], seen) as client:
        reader = PrometheusSampleReader("http://tsdb.test", client=client)
        assert isinstance(reader, SampleReader)
        got = reader.timestamps(output_selector(Pipeline(id="p1", query="m")), 100, 220)
    assert {k: v.tolist() for k, v in got.items()} == {
        'anomaly_score{host="a",pipeline="p1"}': [160, 160, 220]
    }
    assert seen == [
        {
            "query": [
                '{__name__=~"anomaly_score|anomaly_pred|anomaly_lower|anomaly_upper",'
                'pipeline="p1"}[120s]'
            ],
            "time": ["220"],
            "nocache": ["1"],
        }
    ]


def test_a_refused_read_back_is_a_query_error() -> None:
    client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(400, json={"error": "bad"}))
    )
    with client, pytest.raises(QueryError, match="HTTP 400: bad"):
        PrometheusSampleReader("http://tsdb.test", client=client).timestamps('{a="b"}', 0, 60)
