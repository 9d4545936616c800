"""``openanomaly beat``: Celery beat with ``PipelineRedBeatScheduler`` (``adapters/schedule/
redbeat.py``), and the health server (``/healthz`` says ``leader`` or ``standby``).

Start as many as you like: one holds RedBeat's lock and schedules, the others wait for it. On
SIGTERM or SIGINT the loop ends and the lock is released, so that a standby takes over at its
next poll rather than after the lock timeout.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType
from typing import Any

from celery.beat import Service

from openanomaly.adapters.celery.app import make_app
from openanomaly.adapters.celery.health import HealthServer
from openanomaly.adapters.schedule.redbeat import (
    PipelineRedBeatScheduler,
    configure,
    role,
    scheduler_factory,
)
from openanomaly.bootstrap import bootstrap
from openanomaly.errors import ConfigError
from openanomaly.settings import Settings

log = logging.getLogger(__name__)


def run_beat(settings: Settings) -> int:
    """Schedule until SIGTERM or SIGINT; returns the exit code."""
    url = settings.redbeat_url
    if settings.scheduler != "redbeat" or url is None:
        raise ConfigError(
            "needs OA_SCHEDULER=redbeat, OA_DISPATCHER=celery and a Redis "
            "(OA_CELERY__REDBEAT_URL or a redis:// OA_CELERY__BROKER)",
            where="beat",
        )
    with bootstrap(settings) as c:
        app = make_app(settings)
        configure(
            app,
            redis_url=url,
            queue_prefix=settings.celery.queue_prefix,
            lock_timeout=settings.celery.beat_lock_timeout,
        )
        service = Service(
            app,
            max_interval=app.conf.beat_max_loop_interval,
            scheduler_cls=scheduler_factory(
                planner=c.service,
                sync_every=settings.pipeline_sync_every,
                telemetry=c.telemetry,
            ),
        )
        scheduler: PipelineRedBeatScheduler = service.scheduler
        health = None
        if settings.health_port:
            health = HealthServer(
                settings.health_port,
                status=lambda: (True, {"role": role(scheduler)}),
                metrics=c.telemetry.exposition,
            ).start()
        previous = {s: signal.signal(s, _exit) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            service.start()  # blocks in RedBeat's lock while a standby
        except SystemExit:
            pass
        finally:
            service.sync()  # closes the scheduler: the lock is released if held (twice is fine)
            if health is not None:
                health.stop()
            for s, handler in previous.items():
                signal.signal(s, handler)
            log.info("beat stopped")
    return 0


def _exit(signum: int, frame: FrameType | None) -> Any:
    raise SystemExit(0)
