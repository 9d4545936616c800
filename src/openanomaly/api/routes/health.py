"""Liveness, readiness and the process's own metrics (no token needed: scraped by Prometheus)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from openanomaly.api.deps import ContainerDep
from openanomaly.errors import OpenAnomalyError
from openanomaly.services.health import dependencies

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(container: ContainerDep, response: Response) -> dict[str, Any]:
    """200 when every dependency answers, else 503; the body says which is down and why."""
    service = container.service
    checks = dependencies(service.reader, service.pipelines, service.clock())
    ready = all(c["status"] == "ok" for c in checks.values())
    if not ready:
        response.status_code = 503
    return {"status": "ok" if ready else "unavailable", "checks": checks}


@router.get("/metrics")
def metrics(container: ContainerDep) -> Response:
    service = container.service
    try:
        ids = [p.id for p in service.pipelines.list()]
    except OpenAnomalyError:
        ids = []  # the store is down: still report the broken ones (and the rest of /metrics)
    container.telemetry.pipelines_broken(ids, service.health.broken())
    body, content_type = container.telemetry.exposition()
    return Response(body, media_type=content_type)
