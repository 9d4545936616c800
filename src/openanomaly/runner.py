"""The long-running processes: the standalone service (scheduler + worker threads + the HTTP
API) and the API alone (``openanomaly api``), in one process each."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from openanomaly.api.app import create_app
from openanomaly.bootstrap import Container

log = logging.getLogger(__name__)


def run_service(container: Container) -> None:
    """Schedule the pipelines and serve the API until SIGINT/SIGTERM (see ``serve``)."""
    serve(container, schedule=True)


def run_api(container: Container) -> None:
    """Serve the API alone: no scheduler. Jobs it is asked for go to the container's
    dispatcher (the broker with ``dispatcher=celery``, this process's threads otherwise)."""
    serve(container, schedule=False)


def serve(container: Container, *, schedule: bool) -> None:
    """Serve until SIGINT/SIGTERM, then stop scheduling, drop the queued windows (the checkpoint
    keeps them), give the running ones ``shutdown_grace`` seconds to finish and close the
    container."""
    settings = container.settings
    log.info("starting %s with settings %s", "service" if schedule else "api", settings.describe())
    if schedule:
        container.scheduler.start()
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; without a handler
    # of ours that would kill the process before the scheduler and workers are stopped.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    signal.signal(signal.SIGINT, _exit_cleanly)
    try:
        uvicorn.run(
            create_app(container),
            host=settings.api.host,
            port=settings.api.port,
            log_level=settings.log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=max(1, int(settings.shutdown_grace)),
        )
    finally:
        container.close()
        log.info("stopped")


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
