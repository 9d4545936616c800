"""Liveness, readiness and the process's own metrics (no token needed: scraped by Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Response

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
    except OpenAnomalyError as exc:  # the stores translate their libraries' errors
        response.status_code = 503
        return {"status": "unavailable", "detail": type(exc).__name__}
    return {"status": "ok"}


@router.get("/metrics")
def metrics(container: ContainerDep) -> Response:
    body, content_type = container.telemetry.exposition()
    return Response(body, media_type=content_type)
