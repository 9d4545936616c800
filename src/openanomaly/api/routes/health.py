"""Liveness, readiness and the process's own metrics (no token needed: scraped by Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from openanomaly.api.deps import ContainerDep
from openanomaly.errors import OpenAnomalyError

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(container: ContainerDep, response: Response) -> dict[str, str]:
    try:
        container.service.pipelines.list()
    except Exception as exc:
        response.status_code = 503
        return {"status": "unavailable", "detail": type(exc).__name__}
    return {"status": "ok"}


@router.get("/metrics")
def metrics(container: ContainerDep) -> Response:
    service = container.service
    try:
        ids = [p.id for p in service.pipelines.list()]
    except OpenAnomalyError:
        ids = []  # the store is down: still report the broken ones (and the rest of /metrics)
    service.metrics.set_broken(ids, service.health.broken())
    return Response(service.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
