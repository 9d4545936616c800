"""``openanomaly worker``: a Celery worker on the chosen queues, with its health server.

The pool is prefork (``--concurrency`` processes): the only pool that enforces both time
limits (solo and threads enforce neither; gevent and eventlet only the soft one), and whose
processes Celery replaces when one is killed or crashes. Each pool process has its own
container and its own metrics, so ``/metrics`` is served in prometheus_client's multiprocess
mode: every process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh
temporary directory unless it is set), and the main process sums them per scrape.

SIGTERM is Celery's warm shutdown: no new message is taken, and the running tasks finish. A
task still running after ``shutdown_grace`` seconds is cancelled (a cold shutdown, SIGQUIT)
and its message, never acknowledged, goes back to the broker for another worker.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from celery import bootsteps
from celery.signals import worker_process_shutdown, worker_ready, worker_shutting_down

from openanomaly.adapters.celery import tasks
from openanomaly.adapters.celery.app import KINDS, make_app, queue_name, rabbitmq_warning
from openanomaly.adapters.celery.health import HealthServer
from openanomaly.domain.text import mask_url
from openanomaly.engines import preload
from openanomaly.settings import Settings

log = logging.getLogger(__name__)


class WorkerState:
    """What ``/healthz`` reports: up while the consumer is connected and consuming."""

    def __init__(self, queues: Sequence[str]) -> None:
        self.queues = list(queues)
        self.consuming = False
        self.ready = False
        self.stopping = False
        self.lock = threading.Lock()

    def status(self) -> tuple[bool, dict[str, Any]]:
        with self.lock:
            ok = self.consuming and self.ready and not self.stopping
            body = {"consuming": self.consuming, "stopping": self.stopping, "queues": self.queues}
        return ok, body

    def set(self, **flags: bool) -> None:
        with self.lock:
            for name, value in flags.items():
                setattr(self, name, value)


def _consuming_step(state: WorkerState, settings: Settings) -> type:
    """A consumer bootstep that starts once the task consumer is consuming and stops when the
    consumer stops: on a lost broker connection Celery restarts the consumer's steps, so the
    flag is down until it is connected again. At each start it checks the broker."""

    class Consuming(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, parent: Any) -> None:
            check_broker(parent.connection, settings)
            state.set(consuming=True)

        def stop(self, parent: Any) -> None:
            state.set(consuming=False)

        def shutdown(self, parent: Any) -> None:
            state.set(consuming=False)

    return Consuming


_TOLD: set[str] = set()


def check_broker(connection: Any, settings: Settings) -> str | None:
    """Warn (once per process) when the broker is a RabbitMQ that ignores the consumer timeout
    the queues ask for (``rabbitmq_warning``); returns the warning. Never raises: the check is
    worth less than the worker."""
    try:
        props = getattr(connection.connection, "server_properties", None) or {}
        if props.get("product") != "RabbitMQ":
            return None
        message = rabbitmq_warning(str(props.get("version", "?")), settings)
    except Exception as exc:
        log.debug("broker not checked: %r", exc)
        return None
    if message is not None and message not in _TOLD:
        _TOLD.add(message)
        log.warning(message)
    return message


def parse_queues(text: str) -> list[str]:
    """``train,infer`` -> the kinds, checked; ValueError names the known ones."""
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        named = ", ".join(unknown) if unknown else repr(text)
        raise ValueError(f"unknown queue {named}; known: {', '.join(KINDS)}")
    return list(dict.fromkeys(kinds))


PRELOAD = (
    "openanomaly.adapters.prometheus.reader",
    "openanomaly.adapters.prometheus.remote_write",
    "openanomaly.adapters.prometheus.samples",
    "openanomaly.adapters.config.sql",
    "openanomaly.adapters.telemetry.prometheus",
    "openanomaly.engines",
)
"""Imported before the pool forks (opening nothing), so that a pool process's first task does
not spend seconds importing pandas and SQLAlchemy, and a replaced process starts warm; the
libraries of ``settings.preload_engines`` too (``engines.preload``)."""


def run_worker(settings: Settings, *, kinds: Sequence[str], concurrency: int | None = None) -> int:
    """Consume the queues of ``kinds`` until SIGTERM/SIGINT; returns the exit code."""
    metrics_dir, own_dir = _multiprocess_dir()
    for module in PRELOAD:
        importlib.import_module(module)
    preloaded = preload(settings.preload_engines)
    app = make_app(settings)
    tasks.use_settings(settings)
    queues = [queue_name(settings, kind) for kind in kinds]
    state = WorkerState(queues)
    app.steps["consumer"].add(_consuming_step(state, settings))
    _on_shutdown(state, grace=settings.shutdown_grace)
    worker_ready.connect(lambda **_: state.set(ready=True), weak=False)
    server = None
    if settings.health_port:
        server = HealthServer(
            settings.health_port, status=state.status, metrics=lambda: _metrics(metrics_dir)
        ).start()
    worker = app.Worker(
        hostname=f"openanomaly-{os.getpid()}@{socket.gethostname()}",
        queues=queues,
        concurrency=concurrency or settings.workers,
        pool="prefork",
        loglevel=settings.log_level,
        quiet=True,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    broker = settings.celery.broker.get_secret_value() if settings.celery.broker else ""
    log.info(
        "worker on %s: queues %s, %d processes, engines preloaded: %s",
        mask_url(broker),
        ", ".join(queues),
        concurrency or settings.workers,
        ", ".join(preloaded) or "none",
    )
    try:
        worker.start()
    finally:
        if server is not None:
            server.stop()
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    code: int = worker.exitcode or 0
    return code


def _on_shutdown(state: WorkerState, *, grace: float) -> None:
    def shutting_down(how: str = "Warm", **_: object) -> None:
        state.set(stopping=True)
        if how == "Warm":  # past the grace period, cancel what still runs: cold shutdown
            timer = threading.Timer(grace, os.kill, (os.getpid(), signal.SIGQUIT))
            timer.daemon = True
            timer.start()

    worker_shutting_down.connect(shutting_down, weak=False)


def _multiprocess_dir() -> tuple[Path, bool]:
    """The directory of prometheus_client's multiprocess mode, emptied; True if made here."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):  # a previous worker's samples would be summed in
            stale.unlink()
    else:
        path = Path(tempfile.mkdtemp(prefix="openanomaly-metrics-"))
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # prometheus_client picks its value class when it is first imported: pick it again now
    # that the directory is set (the pool's processes are forked after this).
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    worker_process_shutdown.connect(_mark_dead, weak=False)
    return path, not given


def _mark_dead(**_: object) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def _metrics(path: Path) -> tuple[bytes, str]:
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        ProcessCollector,
        generate_latest,
    )
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(path))  # type: ignore[no-untyped-call]
    ProcessCollector(registry=registry)  # the main process's own CPU and memory
    return generate_latest(registry), CONTENT_TYPE_LATEST
