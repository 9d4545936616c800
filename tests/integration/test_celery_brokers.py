"""The same task round trip on every broker that can be had here: an inference window submitted
through ``CeleryDispatcher`` (as the API does), consumed by a real ``openanomaly worker``
process, run against a real VictoriaMetrics; its scores are then in the TSDB, once each.

Redis, RabbitMQ (a vhost of its own) and SQLite (kombu's SQLAlchemy transport) are real
brokers. No MongoDB server can be had here: the MongoDB transport is run in this process
against mongomock (the message's way through kombu's transport, not a server's behaviour).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import kombu
import pytest
import redis

from openanomaly.domain.records import InferWindow, work_key
from tests.celery_workers import STEP, Cluster, write_history
from tests.cluster_servers import RabbitMQ, Redis
from tests.faults import duplicates, raw_samples
from tests.servers import TsdbServer

pytestmark = [
    pytest.mark.integration,
    # kombu's SQLAlchemy transport (1.4.1) maps its messages with lazy="noload", deprecated by
    # SQLAlchemy 2.1: a warning of theirs, raised when the first message is sent.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
]

SERIES = 4
WINDOW = 60


@pytest.fixture(params=["redis", "rabbitmq", "sqlite"])
def cluster(
    request: pytest.FixtureRequest, victoriametrics: TsdbServer, tmp_path: Path
) -> Iterator[Cluster]:
    prefix = f"oa-test-{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        server: Redis = request.getfixturevalue("redis_server")
        broker, prefix = server.url, server.prefix  # every key of the transport carries it
    elif request.param == "rabbitmq":
        rabbit: RabbitMQ = request.getfixturevalue("rabbitmq")
        broker = rabbit.url
    else:
        broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    c = Cluster(tmp_path, victoriametrics, broker, prefix)
    yield c
    c.close()


def test_an_inference_window_goes_through_the_broker_to_a_worker_and_the_tsdb(
    cluster: Cluster,
) -> None:
    metric = f"brokers_{uuid.uuid4().hex[:10]}"
    end = write_history(cluster.tsdb, metric, SERIES, span=900)
    pipeline = cluster.add_pipeline(metric.replace("_", "-"), metric)
    worker = cluster.start_worker("worker", "--queues", "infer", "--concurrency", "1")
    worker.wait_ready()

    window = InferWindow(pipeline.id, end - WINDOW, end)
    with cluster.dispatcher() as dispatcher:
        assert dispatcher.submit(window) == window.id
        # Another process's copy of the same work (the pool process is still building its
        # container, seconds): not sent, answered with the first one's id.
        copy = InferWindow(pipeline.id, end - 2 * WINDOW, end)
        with cluster.dispatcher() as other:
            assert other.submit(copy) == window.id
    cluster.wait_checkpoint(pipeline.id, end)
    store = cluster.store()
    try:  # the task gives its claim back when it ends
        deadline = time.monotonic() + 30
        while store.holder(work_key(window)) is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert store.holder(work_key(window)) is None
    finally:
        store.close()

    scores = raw_samples(cluster.tsdb, pipeline.id, end - WINDOW, end)
    assert not duplicates(scores)
    expected = list(range(end - WINDOW + STEP, end + 1, STEP))
    score_series = {k: v for k, v in scores.items() if k[0] == "anomaly_score"}
    assert len(score_series) == SERIES, cluster.logs()
    for points in score_series.values():
        assert [t for t, _ in points] == expected
    # the pool process's metrics, summed by the worker's main process (multiprocess mode)
    page = httpx.get(f"{worker.health}/metrics", timeout=10).text
    ok = f'openanomaly_jobs_total{{kind="infer",pipeline="{pipeline.id}",status="ok"}} 1.0'
    assert ok in page, page
    assert f'openanomaly_points_scored_total{{pipeline="{pipeline.id}"}} {SERIES * 12}.0' in page
    assert worker.stop() == 0, cluster.logs()
    assert window.id in worker.logs()  # the task ran under the job's id
    assert copy.id not in worker.logs()  # never sent
    if cluster.broker.startswith("amqp://"):
        # The worker read the server's version at its start: 3.12+ honours the consumers'
        # x-consumer-timeout, an older one gets a warning naming the rabbitmq.conf setting.
        with kombu.Connection(cluster.broker) as conn:
            conn.ensure_connection(max_retries=1)
            version = conn.connection.server_properties["version"]
        told = f"RabbitMQ {version} ignores a consumer's own x-consumer-timeout" in worker.logs()
        assert told == (tuple(int(p) for p in version.split(".")[:2]) < (3, 12)), worker.logs()
    if cluster.broker.startswith("redis://"):
        client = redis.Redis.from_url(cluster.broker)
        try:  # the transport's keys (queues, bindings) carry the prefix: the fixture removes them
            assert list(client.scan_iter(match=f"{cluster.prefix}:*"))
        finally:
            client.close()
