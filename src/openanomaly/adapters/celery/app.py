"""The Celery app of cluster mode, built from the settings (nothing happens at import).

Every choice here is about not losing or repeating work:

- ``task_acks_late``: a message is acknowledged when its task has ended, not when a worker
  takes it, so a worker that dies mid-task leaves it to the broker to hand out again;
  ``task_reject_on_worker_lost`` does the same when only the pool process running it dies.
- ``worker_prefetch_multiplier=1``: a worker holds no more messages than it runs, so a long
  training does not sit on inference windows another worker could take.
- One queue per kind (``<prefix>.train|infer|backtest|tick``), routed by task name, so that long
  trainings never starve inference: workers choose which queues they consume.
- No result backend: a run's outcome is in the run history (the config store).
- JSON only: a message is plain values (``dataclasses.asdict(job)``), never a pickle.
- Redis redelivers an unacknowledged message after the transport's ``visibility_timeout``: it
  is set above the longest hard time limit, or a task still running would be run twice.
"""

from __future__ import annotations

from typing import Final

from celery import Celery
from kombu import Exchange, Queue

from openanomaly.settings import Settings

KINDS: Final = ("train", "infer", "backtest", "tick")
"""The queues and the tasks of the same names (``openanomaly.<kind>``)."""

TASK_MODULES: Final = ("openanomaly.adapters.celery.tasks", "openanomaly.adapters.celery.tick")


def task_name(kind: str) -> str:
    return f"openanomaly.{kind}"


def queue_name(settings: Settings, kind: str) -> str:
    return f"{settings.celery.queue_prefix}.{kind}"


def visibility_timeout(settings: Settings) -> float:
    """How long Redis (and SQS) wait before handing an unacknowledged message out again."""
    c = settings.celery
    if c.visibility_timeout is not None:
        return c.visibility_timeout
    longest = max(c.train_hard_limit, c.infer_hard_limit, c.backtest_hard_limit)
    return longest + VISIBILITY_MARGIN


def claim_ttls(settings: Settings) -> dict[str, float]:
    """How long a job's claim on its work lasts (``WorkClaims``), per kind, from its send and
    again from its start: the kind's hard limit plus the margin, within which a task still
    queued or running releases it itself and a lost one lets it expire."""
    c = settings.celery
    return {
        kind: getattr(c, f"{kind}_hard_limit") + VISIBILITY_MARGIN
        for kind in ("train", "infer", "backtest")
    }


VISIBILITY_MARGIN: Final = 300.0
"""Seconds past the longest hard limit before Redis hands a message out again (a task killed at
its hard limit is acknowledged; this covers the pool's reaction time and a retry's countdown)."""


def is_rabbitmq(broker: str) -> bool:
    return broker.startswith(("amqp://", "amqps://", "pyamqp://"))


CONSUMER_TIMEOUT_FROM: Final = (3, 12)
"""The first RabbitMQ that honours a consumer's own ``x-consumer-timeout``."""


def rabbitmq_warning(version: str, settings: Settings) -> str | None:
    """What to tell the operator of a RabbitMQ ``version`` that does not honour the consumer
    timeout this app asks for; None when it does."""
    try:
        parts = tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        parts = (0,)
    if parts >= CONSUMER_TIMEOUT_FROM:
        return None
    need = int(visibility_timeout(settings) * 1000)
    return (
        f"RabbitMQ {version} ignores a consumer's own x-consumer-timeout (3.12 and later "
        f"honour it): unless rabbitmq.conf sets consumer_timeout above {need} (ms; the "
        "longest hard limit plus 300 s), a task that runs longer than its consumer_timeout "
        "(30 min by default) is handed out again while it still runs"
    )


def make_app(settings: Settings) -> Celery:
    """The app of this process: the broker of ``celery.broker``, the queues and routes of
    ``celery.queue_prefix``, and the tasks of ``TASK_MODULES`` (imported by the worker)."""
    c = settings.celery
    if c.broker is None:
        raise ValueError("celery.broker is not set")  # Settings refuses dispatcher=celery then
    broker = c.broker.get_secret_value()
    app = Celery("openanomaly", broker=broker, include=list(TASK_MODULES), set_as_current=False)
    transport: dict[str, object] = {}  # the SQL transport hands them all to create_engine
    if broker.startswith(("redis://", "rediss://")):
        # Every key the Redis transport writes (queues, bindings, the unacked set) carries the
        # prefix: deployments (and test runs) sharing one Redis keep apart.
        timeout = visibility_timeout(settings)
        transport = {
            "visibility_timeout": timeout,
            "global_keyprefix": f"{c.queue_prefix}:",
            # How often a worker looks for messages past their visibility timeout (those of a
            # dead worker): kombu's default sweep is every 10 x 10 s; here about a tenth of
            # the timeout, at most 10 s, each time.
            "unacked_restore_interval": max(1.0, min(10.0, timeout / 10)),
            "unacked_restore_throttle": 1,
        }
    exchange = Exchange(c.queue_prefix, type="direct")
    consumer: dict[str, object] | None = None
    if is_rabbitmq(broker):
        # RabbitMQ closes the channel of a delivery unacknowledged for longer than its
        # consumer timeout (30 min by default) and redelivers it: per consumer (3.12+), it is
        # set here above the longest hard limit, as Redis' visibility timeout is. Older
        # servers ignore the argument: the worker says so at its start (``rabbitmq_warning``).
        consumer = {"x-consumer-timeout": int(visibility_timeout(settings) * 1000)}
    queues = [
        Queue(
            queue_name(settings, kind),
            exchange,
            routing_key=queue_name(settings, kind),
            consumer_arguments=consumer,
        )
        for kind in KINDS
    ]
    app.conf.update(
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport,
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_serializer="json",
        accept_content=["json"],
        result_accept_content=["json"],
        task_queues=queues,
        task_default_queue=queue_name(settings, "infer"),
        task_default_exchange=c.queue_prefix,
        task_default_routing_key=queue_name(settings, "infer"),
        task_create_missing_queues=False,
        task_routes={task_name(kind): {"queue": queue_name(settings, kind)} for kind in KINDS},
        # Soft limit: SoftTimeLimitExceeded is raised in the task (the window is left to the
        # journal); hard limit: the pool process is killed and replaced. Only the prefork pool
        # enforces both (solo and threads enforce neither), which is why workers use it.
        task_annotations={
            task_name(kind): {
                "soft_time_limit": getattr(c, f"{kind}_soft_limit"),
                "time_limit": getattr(c, f"{kind}_hard_limit"),
            }
            for kind in ("train", "infer", "backtest")
        },
        # A task that failed or hit its hard limit is acknowledged: run again, it would fail
        # again; the checkpoint leaves its window due for the next tick.
        task_acks_on_failure=True,
        task_acks_on_timeout=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        enable_utc=True,
    )
    return app
