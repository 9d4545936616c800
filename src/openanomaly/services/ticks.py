"""What a scheduler's tick submits, whichever scheduler fires it: ApsScheduler in the standalone
process, or the ``openanomaly.tick`` task that Celery beat (RedBeat) sends to a worker. Both reach
it through the ``JobPlanner`` port (``Service.due_jobs``): adapters do not import the services.

A tick carries no window: it asks what is due now, from the checkpoint. A tick that comes late,
or twice, therefore finds the same window or nothing, and the lease and the checkpoint keep a
window from being written twice.
"""

from __future__ import annotations

import logging
from typing import Final

from openanomaly.domain.records import Job
from openanomaly.errors import NotFound, OpenAnomalyError
from openanomaly.ports import JobPlanner, Telemetry, TickKind

log = logging.getLogger(__name__)

KINDS: Final[tuple[TickKind, ...]] = ("infer", "train")
_WORDS: Final = {"infer": "inference", "train": "training"}


def jobs_due(planner: JobPlanner, pipeline_id: str, kind: TickKind) -> list[Job]:
    """The jobs a tick of ``kind`` submits. ``infer``: a training first when no model fits the
    pipeline as it is now, then the window due since the checkpoint (if any). ``train``: a
    training on the window that ends now. Raises what the planner raises."""
    if kind == "train":
        return [*planner.train_jobs(pipeline_id)]
    if kind != "infer":
        raise ValueError(f"a tick is one of {list(KINDS)}, got {kind!r}")
    jobs: list[Job] = []
    if planner.needs_training(pipeline_id):
        jobs.extend(planner.train_jobs(pipeline_id))
    jobs.extend(planner.due_infer_jobs(pipeline_id))
    return jobs


def tick(
    planner: JobPlanner, pipeline_id: str, kind: TickKind, *, telemetry: Telemetry | None = None
) -> list[Job]:
    """``jobs_due``, but a failure is logged, counted (stage ``tick``) and reported to the
    planner (which may mark the pipeline broken), and nothing is due. A pipeline deleted since
    the schedule was last synced is not a failure: its entries go at the next sync."""
    what = _WORDS.get(kind, kind)
    try:
        return jobs_due(planner, pipeline_id, kind)
    except NotFound as exc:
        if exc.kind != "pipeline" or exc.ident != pipeline_id:
            _failed(planner, telemetry, what, pipeline_id, exc)
        else:
            log.info("pipeline=%s was deleted: its %s tick is skipped", pipeline_id, what)
    except OpenAnomalyError as exc:
        _failed(planner, telemetry, what, pipeline_id, exc)
    except Exception:
        _count(telemetry)
        log.exception("%s tick for pipeline=%s failed", what, pipeline_id)
    return []


def _failed(
    planner: JobPlanner,
    telemetry: Telemetry | None,
    what: str,
    pipeline_id: str,
    exc: OpenAnomalyError,
) -> None:
    _count(telemetry)
    planner.pipeline_failed(pipeline_id, "tick", exc)
    log.error("%s tick for pipeline=%s failed: %s", what, pipeline_id, exc)


def _count(telemetry: Telemetry | None) -> None:
    if telemetry is not None:
        telemetry.failed("tick")
