"""Jobs: the run history (``JobHistory``), and how the other routes queue a job."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from openanomaly.api.deps import Authorized, ContainerDep
from openanomaly.bootstrap import Container
from openanomaly.domain.records import Job, JobStatus
from openanomaly.domain.timeparse import with_iso_times

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], dependencies=[Authorized])

MAX_LIMIT = 1000


class Queued(BaseModel):
    """The answer to a job submitted: its id (that of the same work already queued or running,
    if any) to follow at ``/api/v1/jobs/{job_id}``."""

    job_id: str
    status: Literal["queued"] = "queued"


def submit(container: Container, job: Job, response: Response) -> Queued:
    """Queue ``job`` through the container's dispatcher; the answer says where to follow it."""
    job_id = container.dispatcher.submit(job)
    response.headers["Location"] = f"{router.prefix}/{job_id}"
    return Queued(job_id=job_id)


@router.get("")
def list_jobs(
    container: ContainerDep,
    pipeline: str | None = None,
    kind: Literal["train", "infer", "backtest"] | None = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
) -> list[dict[str, Any]]:
    """The runs, newest first, times in RFC 3339."""
    runs = container.history.runs(pipeline_id=pipeline, kind=kind, status=status, limit=limit)
    return [with_iso_times(r) for r in runs]


@router.get("/{job_id}")
def get_job(job_id: str, container: ContainerDep) -> dict[str, Any]:
    """One run; 404 when there is none (never submitted, or pruned)."""
    return with_iso_times(container.history.get_run(job_id))
