"""The standalone service: scheduler + worker threads + the HTTP API, in one process."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from openanomaly.api.app import create_app
from openanomaly.bootstrap import Container

log = logging.getLogger(__name__)


def run_service(container: Container) -> None:
    """Serve until SIGINT/SIGTERM, then stop scheduling, let running jobs finish and close the
    container."""
    settings = container.settings
    log.info("starting with settings %s", settings.describe())
    container.scheduler.start()
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; without a handler
    # of ours that would kill the process before the scheduler and workers are stopped.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    try:
        uvicorn.run(
            create_app(container),
            host=settings.api.host,
            port=settings.api.port,
            log_level=settings.log_level.lower(),
            access_log=False,
        )
    finally:
        container.close()
        log.info("stopped")


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
