"""Pipelines: list, read, create/replace, delete; their models; run a job now."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter

from openanomaly.api.deps import Authorized, ContainerDep, ServiceDep
from openanomaly.domain.records import InferResult, InferWindow, ModelVersion
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import ConfigError
from openanomaly.services.validation import PipelineValidator, pipeline_status

router = APIRouter(prefix="/api/v1/pipelines", tags=["pipelines"], dependencies=[Authorized])


@router.get("")
def list_pipelines(service: ServiceDep) -> list[Pipeline]:
    return service.pipelines.list()


@router.get("/{pipeline_id}")
def get_pipeline(pipeline_id: str, service: ServiceDep) -> Pipeline:
    return service.pipelines.get(pipeline_id)


@router.get("/{pipeline_id}/status")
def get_status(pipeline_id: str, container: ContainerDep) -> dict[str, Any]:
    """Whether the pipeline can run: problems found by the checks (an engine not installed...)
    and, when it failed at run time in this process, why it is broken."""
    service, settings = container.service, container.settings
    status = pipeline_status(
        service.pipelines.get(pipeline_id),
        PipelineValidator(service.engines, max_steps=settings.max_range_steps),
        service.health.reason(pipeline_id),
        service.health.waiting_reason(pipeline_id),
    )
    return {**dataclasses.asdict(status), "ok": status.ok}


@router.put("/{pipeline_id}")
def put_pipeline(pipeline_id: str, pipeline: Pipeline, service: ServiceDep) -> Pipeline:
    if pipeline.id != pipeline_id:
        raise ConfigError(f"body id {pipeline.id!r} differs from the path's {pipeline_id!r}")
    service.pipelines.put(pipeline)
    return pipeline


@router.delete("/{pipeline_id}", status_code=204)
def delete_pipeline(pipeline_id: str, service: ServiceDep) -> None:
    service.pipelines.delete(pipeline_id)


@router.get("/{pipeline_id}/models")
def list_models(pipeline_id: str, service: ServiceDep) -> list[dict[str, Any]]:
    service.pipelines.get(pipeline_id)
    active = service.registry.active(pipeline_id)
    return [
        {**v.__dict__, "active": active is not None and v.version == active.version}
        for v in service.registry.versions(pipeline_id)
    ]


@router.post("/{pipeline_id}/train")
def train_now(pipeline_id: str, service: ServiceDep) -> dict[str, Any]:
    result = service.run(service.train_job(pipeline_id))
    assert isinstance(result, ModelVersion)
    return dict(result.__dict__)


@router.post("/{pipeline_id}/infer")
def infer_now(pipeline_id: str, container: ContainerDep) -> dict[str, Any]:
    window: InferWindow | None = container.service.due_infer(pipeline_id)
    if window is None:
        return {"status": "nothing new to score"}
    result = container.service.run(window)
    assert isinstance(result, InferResult)
    return dict(result.__dict__)
