"""The MongoDB broker as far as it can be tested here: no MongoDB server can be had, so kombu's
MongoDB transport runs against mongomock in this process. A job submitted through
``CeleryDispatcher`` is stored as a Mongo document, consumed by a Celery worker (in a thread,
solo pool) and handed to the service as the same job under the same id, and the message is
gone from the collection once acknowledged. What a real server adds (its own connection
errors, several workers competing for a message, redelivery) is not tested."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import mongomock
import pytest
from celery.contrib.testing.worker import start_worker

from openanomaly.adapters.celery import tasks
from openanomaly.adapters.celery.app import make_app
from openanomaly.adapters.dispatch.celery import CeleryDispatcher
from openanomaly.domain.records import InferWindow, Job
from openanomaly.settings import load_settings

pytestmark = pytest.mark.integration


class RecordingService:
    def __init__(self) -> None:
        self.runs: list[Job] = []

    def run(self, job: Job) -> None:
        self.runs.append(job)


class Container:
    def __init__(self) -> None:
        self.service = RecordingService()
        self.dispatcher = None  # sends nothing
        self.claims = None  # claims none


@pytest.fixture
def mongo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    import kombu.transport.mongodb as transport

    client: Any = mongomock.MongoClient()
    monkeypatch.setattr(transport, "MongoClient", lambda *a, **k: client)
    # mongomock has no capped collection, which kombu makes for fanout (remote control only,
    # off in this test): the queues' own collection is the one under test.
    monkeypatch.setattr(transport.Channel, "_create_broadcast", lambda self, database: None)
    yield client


def test_a_job_goes_through_the_mongodb_transport(
    mongo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = load_settings(
        dispatcher="celery",
        celery={"broker": "mongodb://127.0.0.1:27017/oa_broker", "queue_prefix": "oa-mongo"},
    )
    app = make_app(settings)
    app.conf.worker_enable_remote_control = False  # fanout (a capped collection) is not mocked
    container: Any = Container()
    monkeypatch.setattr(tasks._Process, "settings", settings)
    monkeypatch.setattr(tasks._Process, "container", container)

    window = InferWindow("p", 0, 60)
    dispatcher = CeleryDispatcher(app)
    assert dispatcher.submit(window) == window.id
    stored = list(mongo["oa_broker"]["messages"].find())
    assert [m["queue"] for m in stored] == ["oa-mongo.infer"]

    with start_worker(
        app, pool="solo", queues=["oa-mongo.infer"], perform_ping_check=False, shutdown_timeout=30
    ):
        deadline = time.monotonic() + 30
        while not container.service.runs and time.monotonic() < deadline:
            time.sleep(0.1)
    dispatcher.close()
    assert container.service.runs == [window] and container.service.runs[0].id == window.id
    assert list(mongo["oa_broker"]["messages"].find()) == []  # taken and acknowledged
