"""RedBeat's entries follow the config store, on a real Redis and a SQLite config store: a
pipeline created, changed, disabled or deleted (by another process's store, as the API would)
is rescheduled within seconds, with no restart; only the lock holder reconciles and sends."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from celery import Celery
from pydantic import SecretStr

from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.memory import MemoryEngineFactory, MemoryMetrics, RecordingDispatcher
from openanomaly.adapters.schedule.redbeat import PipelineRedBeatScheduler, configure, key_prefix
from openanomaly.bootstrap import Container, bootstrap
from openanomaly.domain.spec import Pipeline
from openanomaly.settings import Settings
from tests.cluster_servers import Redis

LOCK_TIMEOUT = 3.0
SYNC_EVERY = 0.5


def pipeline(pid: str, **fields: object) -> Pipeline:
    spec = {"id": pid, "query": "m", "step": "10s", "infer": {"every": "10s"}}
    return Pipeline.model_validate(spec | fields)


def celery_app(r: Redis) -> Celery:
    """An app whose every key (queues, RedBeat's entries and lock) carries the test's prefix."""
    app = Celery("test-beat", broker=r.url, set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": f"{r.prefix}:"},
        task_default_queue=f"{r.prefix}.tick",
        task_create_missing_queues=True,
    )
    configure(app, redis_url=r.url, queue_prefix=r.prefix, lock_timeout=LOCK_TIMEOUT)
    return app


@dataclass
class Beat:
    """A scheduler ticking on a thread, as Celery beat's loop would."""

    scheduler: PipelineRedBeatScheduler
    stop: threading.Event
    thread: threading.Thread

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        self.scheduler.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """The config store as the API's process writes it."""
    s = SqlStore(f"sqlite:///{tmp_path / 'oa.db'}")
    yield s
    s.close()


@pytest.fixture
def container(store: SqlStore, tmp_path: Path) -> Iterator[Container]:
    """The beat process's side: its Service reads the same SQLite file."""
    metrics = MemoryMetrics({})
    settings = Settings(
        database_url=SecretStr(f"sqlite:///{tmp_path / 'oa.db'}"),
        artifacts_dir=tmp_path / "artifacts",
    )
    with bootstrap(
        settings,
        reader=metrics,
        writer=metrics,
        engines=MemoryEngineFactory(),
        dispatcher=RecordingDispatcher(),
    ) as c:
        yield c


@pytest.fixture
def start_beat(redis_server: Redis, container: Container) -> Iterator[Callable[[], Beat]]:
    beats: list[Beat] = []

    def start() -> Beat:
        app = celery_app(redis_server)
        scheduler = PipelineRedBeatScheduler(
            app,
            planner=container.service,
            sync_every=SYNC_EVERY,
            max_interval=app.conf.beat_max_loop_interval,
        )
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                stop.wait(min(scheduler.tick(), 0.5))

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        beats.append(Beat(scheduler, stop, thread))
        return beats[-1]

    yield start
    for beat in beats:
        beat.close()


def entries(r: Redis) -> dict[str, dict[str, object]]:
    """Entry name -> its stored definition, for the entries in the schedule's sorted set."""
    client = redis.Redis.from_url(r.url, decode_responses=True)
    prefix = key_prefix(r.prefix)
    try:
        # One snapshot (a script runs atomically): read as two steps, a beat deleting an entry
        # between them would look like an entry without a definition.
        flat = client.eval(_SNAPSHOT, 1, f"{prefix}:schedule")
        out = {}
        for key, definition in zip(flat[::2], flat[1::2], strict=True):
            assert definition, f"{key} is in the schedule without a definition"
            out[key[len(prefix) :]] = json.loads(definition)
        return out
    finally:
        client.close()


_SNAPSHOT = """
local out = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(out, key)
  table.insert(out, redis.call('HGET', key, 'definition') or '')
end
return out
"""


def sent_ticks(r: Redis) -> list[list[object]]:
    """The args of the tick messages waiting in the tick queue."""
    client = redis.Redis.from_url(r.url, decode_responses=True)
    try:
        messages = client.lrange(f"{r.prefix}:{r.prefix}.tick", 0, -1)
    finally:
        client.close()
    # Kombu's Redis messages: JSON whose body is the base64 of the task's [args, kwargs, ...].
    return [json.loads(base64.b64decode(json.loads(m)["body"]))[0] for m in messages]


def wait_for(check: Callable[[], bool], what: str, timeout: float = 5.0) -> float:
    began = time.monotonic()
    while not check():
        assert time.monotonic() - began < timeout, f"not within {timeout}s: {what}"
        time.sleep(0.05)
    return time.monotonic() - began


def every(definition: dict[str, object]) -> object:
    schedule = definition["schedule"]
    assert isinstance(schedule, dict)
    return schedule.get("every")


def test_entries_follow_the_store_within_seconds_without_a_restart(
    store: SqlStore, redis_server: Redis, start_beat: Callable[[], Beat]
) -> None:
    store.put(pipeline("a", train={"every": "1h"}))
    beat = start_beat()
    wait_for(lambda: set(entries(redis_server)) == {"infer:a", "train:a"}, "a scheduled")
    got = entries(redis_server)
    assert got["infer:a"]["task"] == "openanomaly.tick"
    assert got["infer:a"]["args"] == ["a", "infer"] and every(got["infer:a"]) == 10.0
    assert got["train:a"]["args"] == ["a", "train"] and every(got["train:a"]) == 3600.0
    # A new pipeline's inference tick is sent at once (it trains first when no model fits);
    # its training waits for train.every.
    wait_for(lambda: ["a", "infer"] in sent_ticks(redis_server), "a's first tick sent")
    assert ["a", "train"] not in sent_ticks(redis_server)
    assert beat.scheduler.leading

    store.put(pipeline("b", train={"cron": "0 3 * * 1", "every": None}))
    wait_for(lambda: "train:b" in entries(redis_server), "b added")
    cron = entries(redis_server)["train:b"]["schedule"]
    assert cron == {
        "__type__": "crontab",
        "minute": "0",
        "hour": "3",
        "day_of_week": "1",
        "day_of_month": "*",
        "month_of_year": "*",
    }

    store.put(pipeline("a", train={"every": "1h"}, infer={"every": "20s"}))
    wait_for(lambda: every(entries(redis_server)["infer:a"]) == 20.0, "a's interval changed")
    store.put(pipeline("b", enabled=False))
    wait_for(lambda: not {"infer:b", "train:b"} & set(entries(redis_server)), "b disabled")
    store.delete("a")
    wait_for(lambda: not entries(redis_server), "a deleted")
    # Nothing of the removed entries is left behind, only the schedule's own keys.
    prefix = key_prefix(redis_server.prefix)
    leftover = [k for k in redis_server.keys() if k.startswith(prefix)]  # noqa: SIM118
    assert set(leftover) <= {f"{prefix}:lock", f"{prefix}:statics"}, leftover


def test_an_unchanged_pipeline_keeps_its_entry_and_last_run(
    store: SqlStore, redis_server: Redis, start_beat: Callable[[], Beat]
) -> None:
    store.put(pipeline("a", infer={"every": "1h", "max_catchup": "1h"}, step="1h"))
    start_beat()
    wait_for(lambda: ["a", "infer"] in sent_ticks(redis_server), "a's first tick sent")
    time.sleep(4 * SYNC_EVERY)  # several reconciliations: none may resend or reset it
    assert sent_ticks(redis_server).count(["a", "infer"]) == 1
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    meta = json.loads(client.hget(f"{key_prefix(redis_server.prefix)}infer:a", "meta") or "{}")
    client.close()
    assert meta.get("last_run_at") is not None


def test_only_the_lock_holder_reconciles_and_a_standby_takes_over(
    store: SqlStore, redis_server: Redis, start_beat: Callable[[], Beat]
) -> None:
    first = start_beat()
    wait_for(lambda: first.scheduler.leading, "first is the leader")
    second = start_beat()
    time.sleep(3 * SYNC_EVERY)
    assert not second.scheduler.leading
    store.put(pipeline("a"))
    wait_for(lambda: "infer:a" in entries(redis_server), "a scheduled by the leader")
    first.close()  # releases the lock, as on SIGTERM
    took = wait_for(lambda: second.scheduler.leading, "the standby leads", timeout=LOCK_TIMEOUT)
    assert took <= LOCK_TIMEOUT
    store.put(pipeline("c"))
    wait_for(lambda: "infer:c" in entries(redis_server), "c scheduled by the new leader")


def test_a_pipeline_celery_cannot_schedule_is_reported_and_the_others_run(
    store: SqlStore, redis_server: Redis, start_beat: Callable[[], Beat], container: Container
) -> None:
    store.put(pipeline("good"))
    store.put(pipeline("bad", train={"cron": "61 * * * *", "every": None}))
    start_beat()
    wait_for(lambda: "infer:good" in entries(redis_server), "good scheduled")
    wait_for(lambda: container.service.health.reason("bad") is not None, "bad reported")
    assert not {"infer:bad", "train:bad"} & set(entries(redis_server))
