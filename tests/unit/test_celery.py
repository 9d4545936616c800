"""Cluster mode's Celery pieces without a broker: the app's configuration, the jobs' messages,
the dispatcher (on an app that records what it would send), the tasks' retry decisions (run
eagerly, in this process), the worker's queues and its health server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from billiard.exceptions import (  # type: ignore[import-untyped]
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
)
from kombu.exceptions import OperationalError

from openanomaly import engines
from openanomaly.adapters.celery import tasks
from openanomaly.adapters.celery.app import claim_ttls, make_app, visibility_timeout
from openanomaly.adapters.celery.health import HealthServer
from openanomaly.adapters.celery.payload import from_payload, to_payload
from openanomaly.adapters.celery.worker import WorkerState, check_broker, parse_queues
from openanomaly.adapters.dispatch.celery import CeleryDispatcher, WorkClaims
from openanomaly.adapters.memory import MemoryMetrics, MemoryRegistry
from openanomaly.bootstrap import bootstrap
from openanomaly.domain.records import BacktestJob, InferWindow, Job, TrainJob, work_key
from openanomaly.errors import (
    ConfigError,
    PipelineBusy,
    StoreUnavailable,
    TsdbUnavailable,
    WriteUncertain,
)
from openanomaly.settings import Settings, load_settings


def cluster_settings(broker: str = "redis://127.0.0.1:6379/0", **celery: Any) -> Settings:
    return load_settings(dispatcher="celery", celery={"broker": broker, **celery})


# --- the app ----------------------------------------------------------------------------------


def test_the_app_acks_late_prefetches_one_and_routes_each_kind_to_its_queue() -> None:
    app = make_app(cluster_settings(queue_prefix="oax"))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result and conf.result_backend is None
    assert conf.task_serializer == "json" and list(conf.accept_content) == ["json"]
    assert conf.broker_connection_retry_on_startup
    assert sorted(q.name for q in conf.task_queues) == [
        "oax.backtest",
        "oax.infer",
        "oax.tick",
        "oax.train",
    ]
    for kind in ("train", "infer", "backtest", "tick"):
        assert conf.task_routes[f"openanomaly.{kind}"] == {"queue": f"oax.{kind}"}
    assert "openanomaly.adapters.celery.tick" in conf.include


def test_time_limits_per_kind_come_from_the_settings() -> None:
    app = make_app(cluster_settings(train_soft_limit=50, train_hard_limit=60))
    app.loader.import_default_modules()
    app.finalize()
    train = app.tasks["openanomaly.train"]
    assert (train.soft_time_limit, train.time_limit) == (50, 60)
    infer = app.tasks["openanomaly.infer"]
    assert (infer.soft_time_limit, infer.time_limit) == (240, 300)
    assert train.acks_late and train.reject_on_worker_lost


def test_redis_redelivers_after_the_longest_hard_limit_and_keys_carry_the_prefix() -> None:
    settings = cluster_settings(queue_prefix="oa-x")
    options = make_app(settings).conf.broker_transport_options
    assert options["visibility_timeout"] == visibility_timeout(settings) == 3600 + 300
    assert options["global_keyprefix"] == "oa-x:"
    chosen = cluster_settings(visibility_timeout=4000)
    assert make_app(chosen).conf.broker_transport_options["visibility_timeout"] == 4000
    # the SQL transport hands its options to create_engine: none of Redis' may go there
    sql = make_app(cluster_settings("sqla+sqlite:///broker.db"))
    assert sql.conf.broker_transport_options == {}


def test_rabbitmq_consumers_ask_for_a_timeout_above_the_longest_hard_limit() -> None:
    amqp = "amqp://guest:guest@127.0.0.1:5672/oa"
    rabbit = make_app(cluster_settings(amqp, train_hard_limit=7200))
    for queue in rabbit.conf.task_queues:
        assert queue.consumer_arguments == {"x-consumer-timeout": (7200 + 300) * 1000}
    for other in ("redis://127.0.0.1:6379/0", "sqla+sqlite:///broker.db"):
        queues = make_app(cluster_settings(other)).conf.task_queues
        assert all(not q.consumer_arguments for q in queues)


class RabbitConnection:
    """A kombu connection as far as ``check_broker`` reads it."""

    def __init__(self, product: str, version: str) -> None:
        props = {"product": product, "version": version}
        self.connection = type("Amqp", (), {"server_properties": props})()


def test_a_rabbitmq_that_ignores_the_consumer_timeout_is_told_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = cluster_settings("amqp://guest:guest@127.0.0.1:5672/oa")
    old = check_broker(RabbitConnection("RabbitMQ", "3.10.8"), settings)
    assert old is not None and "RabbitMQ 3.10.8 ignores" in old
    assert "consumer_timeout above 3900000" in old
    check_broker(RabbitConnection("RabbitMQ", "3.10.8"), settings)  # a reconnect
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == [old]
    assert check_broker(RabbitConnection("RabbitMQ", "3.12.0"), settings) is None
    assert check_broker(RabbitConnection("RabbitMQ", "4.0.5"), settings) is None
    assert check_broker(RabbitConnection("Redis", "7.0"), settings) is None
    assert check_broker(object(), settings) is None  # never raises


def test_a_visibility_timeout_within_a_hard_limit_is_refused() -> None:
    with pytest.raises(ConfigError, match="visibility_timeout must exceed the longest hard"):
        cluster_settings(visibility_timeout=3600)


# --- messages and the dispatcher ---------------------------------------------------------------


@pytest.mark.parametrize(
    "job", [TrainJob("p", 600), InferWindow("p", 0, 60), BacktestJob("p", 0, 600, write=True)]
)
def test_a_job_goes_as_plain_values_and_comes_back_with_its_id(job: Job) -> None:
    import json

    payload = json.loads(json.dumps(to_payload(job)))
    back = from_payload(payload, job.kind)
    assert back == job and back.id == job.id


def test_a_message_of_another_kind_or_with_unknown_fields_is_refused() -> None:
    with pytest.raises(ValueError, match="'train' job sent to the 'infer' task"):
        from_payload(to_payload(TrainJob("p", 600)), "infer")
    with pytest.raises(ValueError, match="unknown fields in a infer job: colour"):
        from_payload({**to_payload(InferWindow("p", 0, 60)), "colour": 1}, "infer")


class RecordingApp:
    """What CeleryDispatcher uses of a Celery app, recording the messages it is given."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[tuple[str, tuple[Any, ...], str]] = []
        self.closed = 0
        self.fail = fail

    def send_task(self, name: str, *, args: tuple[Any, ...], task_id: str) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append((name, args, task_id))

    def close(self) -> None:
        self.closed += 1


def test_submit_sends_the_kinds_task_under_the_jobs_id() -> None:
    app = RecordingApp()
    dispatcher = CeleryDispatcher(app)
    window = InferWindow("p", 0, 60)
    assert dispatcher.submit(window) == window.id
    assert app.sent == [("openanomaly.infer", (to_payload(window),), window.id)]
    dispatcher.close()
    dispatcher.close()
    assert app.closed == 1
    dispatcher.submit(TrainJob("p", 60))  # after close: left to the checkpoint, not sent
    assert len(app.sent) == 1


def test_a_broker_that_cannot_be_reached_is_a_store_unavailable() -> None:
    dispatcher = CeleryDispatcher(RecordingApp(fail=OperationalError("Connection refused")))
    with pytest.raises(StoreUnavailable, match="broker cannot be reached") as caught:
        dispatcher.submit(InferWindow("p", 0, 60))
    assert caught.value.store == "broker"


def test_bootstrap_builds_the_celery_dispatcher_for_dispatcher_celery(tmp_path: Path) -> None:
    settings = load_settings(
        dispatcher="celery",
        celery={"broker": "redis://127.0.0.1:6379/0"},
        database_url=f"sqlite:///{tmp_path / 'oa.db'}",
        artifacts_dir=str(tmp_path),
    )
    metrics = MemoryMetrics()
    with bootstrap(settings, reader=metrics, writer=metrics) as c:
        assert isinstance(c.dispatcher.inner, CeleryDispatcher)  # type: ignore[attr-defined]
        assert c.claims is not None  # claimed in the SQL store's leases
        assert c.claims is c.dispatcher.inner.claims  # type: ignore[attr-defined]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def two_processes() -> tuple[Clock, WorkClaims, list[tuple[RecordingApp, CeleryDispatcher]]]:
    """Two dispatchers (a beat's worker and an API, say) over one config store's leases."""
    clock = Clock()
    claims = WorkClaims(MemoryRegistry(clock=clock), claim_ttls(cluster_settings()))
    apps = [RecordingApp(), RecordingApp()]
    return clock, claims, [(a, CeleryDispatcher(a, claims=claims)) for a in apps]


def test_the_same_work_submitted_by_two_processes_is_sent_once() -> None:
    _, claims, [(app1, d1), (app2, d2)] = two_processes()
    window, copy = InferWindow("p", 0, 600), InferWindow("p", 300, 600)  # same end, other start
    assert d1.submit(window) == window.id
    assert d2.submit(copy) == window.id  # the id of the one queued
    later = InferWindow("p", 0, 900)
    assert d2.submit(later) == later.id  # another window end is other work
    sharded = InferWindow("p", 0, 600, shard=1)
    assert d2.submit(sharded) == sharded.id
    assert [s[2] for s in app1.sent] == [window.id]
    assert [s[2] for s in app2.sent] == [later.id, sharded.id]
    claims.release(window)  # its task ended: the same work may be queued again
    again = InferWindow("p", 0, 600)
    assert d1.submit(again) == again.id


def test_a_slow_first_training_is_queued_once_whatever_the_ticks_end() -> None:
    # Every tick asks for a training on the window that ends at its own time.
    _, _, [(app1, d1), (app2, d2)] = two_processes()
    first = TrainJob("p", 600)
    assert d1.submit(first) == first.id
    assert d2.submit(TrainJob("p", 660)) == first.id
    assert d1.submit(TrainJob("p", 720)) == first.id
    assert d1.submit(TrainJob("p", 720, shard=0)) != first.id  # one shard's is other work
    assert len(app1.sent) == 2 and app2.sent == []


def test_a_claim_left_by_a_dead_worker_expires_after_the_hard_limit_and_margin() -> None:
    clock, claims, [(_, d1), (app2, d2)] = two_processes()
    job = TrainJob("p", 600)
    d1.submit(job)
    claims.renew(job)  # its task started, then its worker died (no release)
    clock.now += claim_ttls(cluster_settings())["train"] - 1
    assert d2.submit(TrainJob("p", 660)) == job.id
    clock.now += 2
    late = TrainJob("p", 720)
    assert d2.submit(late) == late.id and [s[2] for s in app2.sent] == [late.id]


def test_a_claim_is_given_back_when_the_broker_refuses_the_message() -> None:
    claims = WorkClaims(MemoryRegistry(), claim_ttls(cluster_settings()))
    broken = CeleryDispatcher(RecordingApp(fail=OperationalError("refused")), claims=claims)
    job = InferWindow("p", 0, 60)
    with pytest.raises(StoreUnavailable):
        broken.submit(job)
    app = RecordingApp()
    retry = InferWindow("p", 0, 60)
    assert CeleryDispatcher(app, claims=claims).submit(retry) == retry.id


# --- the tasks' decisions -----------------------------------------------------------------------


class ScriptedService:
    """Raises the scripted errors in turn, then succeeds; counts its runs."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.runs: list[Job] = []

    def run(self, job: Job) -> None:
        self.runs.append(job)
        if self.errors:
            raise self.errors.pop(0)


class FakeContainer:
    def __init__(self, service: ScriptedService, claims: WorkClaims | None = None) -> None:
        self.service = service
        self.dispatcher = CeleryDispatcher(RecordingApp(), claims=claims)
        self.claims = claims


@pytest.fixture
def eager(monkeypatch: pytest.MonkeyPatch) -> Any:
    settings = cluster_settings(retries=3, retry_backoff=0.5)
    app = make_app(settings)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = False  # the outcome is in the result
    app.loader.import_default_modules()
    app.finalize()
    monkeypatch.setattr(tasks._Process, "settings", settings)
    return app


def run_eagerly(
    app: Any, service: ScriptedService, job: Job, monkeypatch: Any, claims: WorkClaims | None = None
) -> Any:
    """Run the job's task in this process; a retry runs at once (eager mode has no countdown).
    Returns the outcome of the last run."""
    monkeypatch.setattr(tasks._Process, "container", FakeContainer(service, claims))
    return app.tasks[f"openanomaly.{job.kind}"].apply(args=(to_payload(job),), task_id=job.id)


def test_a_tsdb_outage_is_retried_then_the_job_runs(eager: Any, monkeypatch: Any) -> None:
    service = ScriptedService(TsdbUnavailable("down"), WriteUncertain("cut"))
    window = InferWindow("p", 0, 60)
    assert run_eagerly(eager, service, window, monkeypatch).state == "SUCCESS"
    assert service.runs == [window] * 3 and all(j.id == window.id for j in service.runs)


def test_retries_stop_at_celery_retries(eager: Any, monkeypatch: Any) -> None:
    service = ScriptedService(*[TsdbUnavailable("down") for _ in range(10)])
    run_eagerly(eager, service, InferWindow("p", 0, 60), monkeypatch)
    assert len(service.runs) == 1 + 3


def test_other_errors_are_not_retried(eager: Any, monkeypatch: Any) -> None:
    service = ScriptedService(ConfigError("bad"))
    result = run_eagerly(eager, service, TrainJob("p", 60), monkeypatch)
    assert result.state == "FAILURE" and isinstance(result.result, ConfigError)
    assert len(service.runs) == 1


class HolderSeen(ScriptedService):
    """Records who holds the job's claim while each run of it goes on."""

    def __init__(self, claims: MemoryRegistry, *errors: Exception) -> None:
        super().__init__(*errors)
        self.claims = claims
        self.holders: list[str | None] = []

    def run(self, job: Job) -> None:
        self.holders.append(self.claims.holder(work_key(job)))
        super().run(job)


@pytest.mark.parametrize(
    "errors", [[TsdbUnavailable("down")], [ConfigError("bad")], [SoftTimeLimitExceeded()]]
)
def test_a_task_holds_its_claim_through_its_retries_and_gives_it_back_at_its_end(
    eager: Any, monkeypatch: Any, errors: list[Exception]
) -> None:
    leases = MemoryRegistry()
    claims = WorkClaims(leases, claim_ttls(cluster_settings()))
    job = InferWindow("p", 0, 60)
    CeleryDispatcher(RecordingApp(), claims=claims).submit(job)
    service = HolderSeen(leases, *errors)
    run_eagerly(eager, service, job, monkeypatch, claims)
    retried = isinstance(errors[0], TsdbUnavailable)
    assert service.holders == [job.id] * (2 if retried else 1)
    assert leases.holder(work_key(job)) is None


def test_a_task_killed_at_its_hard_limit_has_its_claim_released_by_the_main_process(
    eager: Any, monkeypatch: Any
) -> None:
    # What Celery's main process calls when it killed the pool process at the hard limit.
    leases = MemoryRegistry()
    claims = WorkClaims(leases, claim_ttls(cluster_settings()))
    monkeypatch.setattr(tasks._Process, "main_claims", claims)
    job = InferWindow("p", 0, 60)
    CeleryDispatcher(RecordingApp(), claims=claims).submit(job)
    task = eager.tasks["openanomaly.infer"]
    task.on_failure(ConfigError("bad"), job.id, (to_payload(job),), {}, None)
    assert leases.holder(work_key(job)) == job.id  # other failures: the task's own finally
    task.on_failure(TimeLimitExceeded(8.0), job.id, (to_payload(job),), {}, None)
    assert leases.holder(work_key(job)) is None


def test_a_busy_pipeline_is_not_retried_nor_an_error(eager: Any, monkeypatch: Any) -> None:
    service = ScriptedService(PipelineBusy("p", "elsewhere"))
    assert run_eagerly(eager, service, InferWindow("p", 0, 60), monkeypatch).state == "SUCCESS"
    assert len(service.runs) == 1


def test_the_backoff_doubles_and_honours_retry_after() -> None:
    assert [tasks.retry_countdown(n, backoff=2.0) for n in range(4)] == [2, 4, 8, 16]
    assert tasks.retry_countdown(0, backoff=2.0, retry_after=30) == 30


# --- the worker -------------------------------------------------------------------------------


def test_queues_are_checked() -> None:
    assert parse_queues("infer, train,infer") == ["infer", "train"]
    with pytest.raises(ValueError, match="unknown queue nope; known: train, infer, backtest, tick"):
        parse_queues("infer,nope")


def test_healthz_answers_503_until_consuming_and_metrics_serve_the_page() -> None:
    state = WorkerState(["oa.infer"])
    server = HealthServer(
        0, status=state.status, metrics=lambda: (b"x 1\n", "text/plain"), host="127.0.0.1"
    ).start()
    try:
        url = f"http://127.0.0.1:{server.port}"
        r = httpx.get(f"{url}/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unavailable"
        state.set(consuming=True, ready=True)
        r = httpx.get(f"{url}/healthz")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ok",
            "consuming": True,
            "stopping": False,
            "queues": ["oa.infer"],
        }
        state.set(stopping=True)
        assert httpx.get(f"{url}/healthz").status_code == 503
        scraped = httpx.get(f"{url}/metrics")
        assert scraped.text == "x 1\n" and scraped.headers["content-type"] == "text/plain"
        assert httpx.get(f"{url}/nope").status_code == 404
    finally:
        server.stop()


def test_preload_imports_the_engines_libraries_and_skips_what_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a worker imports before its pool forks: the library an engine declares, now; an
    unknown engine, or one whose library is not installed, is skipped, not fatal."""
    (tmp_path / "oa_fake_engine.py").write_text('LIBRARY = ("oa_fake_library",)\n')
    (tmp_path / "oa_broken_engine.py").write_text('LIBRARY = ("oa_not_installed",)\n')
    (tmp_path / "oa_fake_library.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(engines.ENGINES, "fake", "oa_fake_engine")
    monkeypatch.setitem(engines.ENGINES, "broken", "oa_broken_engine")
    monkeypatch.delitem(sys.modules, "oa_fake_library", raising=False)

    assert engines.preload(["fake", "broken", "unknown"]) == ["fake"]
    assert "oa_fake_library" in sys.modules
    assert Settings().preload_engines == ["statsforecast"]
