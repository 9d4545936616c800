"""The scheduler's tick task ``openanomaly.tick(pipeline_id, what)``, sent by the beat leader on
the tick queue. It runs on a worker: the worker's Service decides what is due now
(``Service.due_jobs``, ``services/ticks.py``: for ``infer`` a training first when no model fits,
then the window due since the checkpoint; for ``train`` a training) and the worker's
dispatcher (Celery) queues it on the train or infer queue.

A tick carries no window, so a tick that is late (beat's leader changed) or delivered twice
finds what is due then: the same window (already queued: the dispatcher knows its id), or
nothing. Failures of the decision are the Service's (logged, counted, the pipeline reported);
a failure to queue (the broker down) fails the task, and the next tick catches up.
"""

from __future__ import annotations

import logging
from typing import Any, get_args

from celery import Task, shared_task

from openanomaly.adapters.celery.tasks import container
from openanomaly.ports import TickKind

log = logging.getLogger(__name__)


@shared_task(  # type: ignore[untyped-decorator]
    name="openanomaly.tick", bind=True, acks_late=True, reject_on_worker_lost=True
)
def tick(self: Task, pipeline_id: str, what: str) -> list[str]:
    if what not in get_args(TickKind):
        log.error("tick for pipeline=%s: unknown kind %r (infer, train)", pipeline_id, what)
        return []
    kind: Any = what
    c = container(self.app)
    return [c.dispatcher.submit(job) for job in c.service.due_jobs(pipeline_id, kind)]
