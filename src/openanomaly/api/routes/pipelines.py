"""Pipelines: list, read, create/replace, delete; their models; queue a job now."""

from __future__ import annotations

import dataclasses
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from openanomaly.api.deps import Authorized, ContainerDep, ServiceDep
from openanomaly.api.routes.jobs import Queued, submit
from openanomaly.bootstrap import Container
from openanomaly.domain.records import BacktestJob, InferWindow
from openanomaly.domain.spec import Pipeline
from openanomaly.domain.timeparse import parse_time, with_iso_times
from openanomaly.errors import ConfigError
from openanomaly.services.rollback import rollback
from openanomaly.services.status import report
from openanomaly.services.validation import PipelineValidator, check_range

router = APIRouter(prefix="/api/v1/pipelines", tags=["pipelines"], dependencies=[Authorized])


@router.get("")
def list_pipelines(container: ContainerDep) -> list[dict[str, Any]]:
    """Every pipeline's spec, with its ``status`` (as ``/{id}/status``)."""
    return [
        {**p.model_dump(mode="json"), "status": _status(container, p)}
        for p in container.service.pipelines.list()
    ]


@router.get("/{pipeline_id}")
def get_pipeline(pipeline_id: str, service: ServiceDep) -> Pipeline:
    return service.pipelines.get(pipeline_id)


@router.get("/{pipeline_id}/status")
def get_status(pipeline_id: str, container: ContainerDep) -> dict[str, Any]:
    """Whether the pipeline can run (problems found by the checks, why it broke at run time),
    its last train and infer, its model, and the points it flagged in 24 hours."""
    return _status(container, container.service.pipelines.get(pipeline_id))


def _status(container: Container, pipeline: Pipeline) -> dict[str, Any]:
    service = container.service
    found = report(
        pipeline,
        validator=PipelineValidator(service.engines, max_steps=container.settings.max_range_steps),
        health=service.health,
        registry=service.registry,
        reader=service.reader,
        now=service.clock(),
    )
    return {**dataclasses.asdict(found), "ok": found.state != "broken"}


@router.put("/{pipeline_id}")
def put_pipeline(pipeline_id: str, pipeline: Pipeline, service: ServiceDep) -> Pipeline:
    if pipeline.id != pipeline_id:
        raise ConfigError(f"body id {pipeline.id!r} differs from the path's {pipeline_id!r}")
    service.pipelines.put(pipeline)
    return service.pipelines.get(pipeline_id)  # as stored: the model's default name filled in


@router.delete("/{pipeline_id}", status_code=204)
def delete_pipeline(pipeline_id: str, service: ServiceDep) -> None:
    service.pipelines.delete(pipeline_id)


@router.get("/{pipeline_id}/models")
def list_models(pipeline_id: str, service: ServiceDep) -> list[dict[str, Any]]:
    service.pipelines.get(pipeline_id)
    active = service.registry.active(pipeline_id)
    return [
        {**with_iso_times(v), "active": active is not None and v.version == active.version}
        for v in service.registry.versions(pipeline_id)
    ]


@router.post("/{pipeline_id}/models/{version}/activate")
def activate_model(pipeline_id: str, version: str, service: ServiceDep) -> dict[str, Any]:
    """Make ``version`` the active model (a rollback, or forward again); 404 for an unknown
    version, 422 for one trained for another spec of the pipeline."""
    target = rollback(service.pipelines, service.registry, pipeline_id, to=version)
    return {**with_iso_times(target), "active": True}


@router.post("/{pipeline_id}/train", status_code=202)
def train_now(pipeline_id: str, container: ContainerDep, response: Response) -> Queued:
    """Queue a training on the window that ends now (``GET /api/v1/jobs/{id}`` follows it)."""
    return submit(container, container.service.train_job(pipeline_id), response)


@router.post(
    "/{pipeline_id}/infer",
    status_code=202,
    responses={200: {"description": "Nothing new to score: no job queued."}},
)
def infer_now(pipeline_id: str, container: ContainerDep, response: Response) -> dict[str, Any]:
    """Queue the window due since the last run, if there is one."""
    window: InferWindow | None = container.service.due_infer(pipeline_id)
    if window is None:
        response.status_code = 200
        return {"status": "nothing new to score"}
    return submit(container, window, response).model_dump()


class BacktestRequest(BaseModel):
    """The range to replay, as the CLI's ``--from``/``--to`` take it: RFC 3339, unix seconds,
    ``now`` or relative (``-2d``, ``now-2h``); ``write`` also sends the outputs to the TSDB."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    start: str = Field(alias="from")
    end: str = Field("now", alias="to")
    write: bool = False


@router.post("/{pipeline_id}/backtest", status_code=202)
def backtest_now(
    pipeline_id: str, body: BacktestRequest, container: ContainerDep, response: Response
) -> Queued:
    """Queue a replay of ``(from, to]``; its run's row holds the series, points and flagged
    points."""
    now = container.service.clock()
    try:
        start, end = parse_time(body.start, now=now), parse_time(body.end, now=now)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    step = container.service.pipelines.get(pipeline_id).step
    check_range(start, end, step, limit=container.settings.max_range_steps)
    return submit(container, BacktestJob(pipeline_id, start, end, write=body.write), response)
