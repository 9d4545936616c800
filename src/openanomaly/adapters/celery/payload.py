"""Jobs as task messages: ``dataclasses.asdict(job)``, plain values that JSON carries, and back."""

from __future__ import annotations

import dataclasses
from typing import Any

from openanomaly.domain.records import BacktestJob, InferWindow, Job, TrainJob

JOBS: dict[str, type[Job]] = {"train": TrainJob, "infer": InferWindow, "backtest": BacktestJob}


def to_payload(job: Job) -> dict[str, Any]:
    return dataclasses.asdict(job)


def from_payload(payload: dict[str, Any], kind: str) -> Job:
    """The job of a ``kind`` task; a message of another kind, or with fields this version does
    not know, is refused with ValueError (the task then fails without a retry)."""
    if payload.get("kind", kind) != kind:
        raise ValueError(f"a {payload.get('kind')!r} job sent to the {kind!r} task")
    cls = JOBS[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(payload) - names)
    if unknown:
        raise ValueError(f"unknown fields in a {kind} job: {', '.join(unknown)}")
    job: Job = cls(**payload)
    return job
