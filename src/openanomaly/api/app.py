"""The FastAPI app factory."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from openanomaly import __version__
from openanomaly.api import errors
from openanomaly.api.limits import BodyLimit
from openanomaly.api.routes import health, jobs, pipelines
from openanomaly.bootstrap import Container


def create_app(container: Container) -> FastAPI:
    # FastAPIOffline serves /docs and /redoc with their scripts from the package, not a CDN.
    app = FastAPIOffline(title="OpenAnomaly", version=__version__)
    app.state.container = container
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=container.settings.api.max_body_bytes)
    app.include_router(health.router)
    app.include_router(pipelines.router)
    app.include_router(jobs.router)
    return app
