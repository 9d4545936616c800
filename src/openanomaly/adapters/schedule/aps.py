"""The light scheduler: APScheduler in the same process.

Per enabled pipeline: an inference tick every ``infer.every`` that submits the due window
(computed from the checkpoint, so a missed tick is caught up, not lost) and a training job every
``train.every`` or on ``train.cron``; what a tick submits is the planner's ``due_jobs`` (the
rule shared with cluster mode's beat, ``services/ticks.py``). A pipeline that has no model yet
is trained at once. A sync job re-reads the pipeline store so pipelines added through the API
are picked up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from openanomaly.domain.spec import Pipeline
from openanomaly.errors import OpenAnomalyError
from openanomaly.ports import JobDispatcher, JobPlanner, Telemetry

log = logging.getLogger(__name__)


class ApsScheduler:
    """A ``Scheduler`` that asks ``planner`` what is due and submits it to ``dispatcher``.

    Args:
        planner: the application's side (the Service): pipelines, due jobs.
        dispatcher: where jobs go.
        sync_every: seconds between re-reads of the enabled pipelines.
        telemetry: counts the failures of the sync (stage ``sync``); those of the ticks
            (``tick``) are the planner's (``due_jobs``).
    """

    def __init__(
        self,
        planner: JobPlanner,
        dispatcher: JobDispatcher,
        *,
        sync_every: float = 10.0,
        telemetry: Telemetry | None = None,
    ) -> None:
        if sync_every <= 0:
            raise ValueError(f"sync_every must be > 0 seconds, got {sync_every}")
        self._planner = planner
        self._dispatcher = dispatcher
        self._aps = BackgroundScheduler(timezone="UTC")
        self._specs: dict[str, Pipeline] = {}
        self._sync_every = sync_every
        self._telemetry = telemetry

    def start(self) -> None:
        self._resync()  # a store that cannot be read yet is retried by the sync job
        self._aps.add_job(
            self._resync,
            IntervalTrigger(seconds=self._sync_every),
            id="oa-sync",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
        )
        self._aps.start()

    def stop(self) -> None:
        if self._aps.running:
            self._aps.shutdown(wait=False)

    def sync(self, pipelines: Iterable[Pipeline]) -> None:
        wanted = {p.id: p for p in pipelines if p.enabled}
        for pid in set(self._specs) - set(wanted):
            self._remove(pid)
        for pid, p in wanted.items():
            if self._specs.get(pid) != p:
                self._remove(pid)
                self._add_isolated(p)

    def _add_isolated(self, p: Pipeline) -> None:
        """Schedule ``p``; if that fails (a cron the trigger refuses, an engine that cannot be
        built), ``p`` is marked broken and left out until its spec changes, and the other
        pipelines are scheduled as usual. After an outage (the store down) it is tried again
        at the next sync."""
        try:
            self._add(p)
        except Exception as exc:
            self._remove(p.id)
            if self._planner.pipeline_failed(p.id, "schedule", exc):
                self._specs[p.id] = p
            log.error("pipeline=%s not scheduled: %s", p.id, _describe(exc))

    def _resync(self) -> None:
        try:
            self.sync(self._planner.enabled_pipelines())
        except OpenAnomalyError as exc:
            self._failed("sync")
            log.error("pipeline sync failed, keeping the current schedule: %s", exc)
        except Exception:
            self._failed("sync")
            log.exception("pipeline sync failed; keeping the current schedule")

    def _add(self, p: Pipeline) -> None:
        self._specs[p.id] = p
        opts = {"coalesce": True, "max_instances": 1, "replace_existing": True}
        self._aps.add_job(
            self._tick,
            IntervalTrigger(seconds=p.infer.every),
            args=[p.id],
            id=f"infer:{p.id}",
            **opts,
        )
        trigger: CronTrigger | IntervalTrigger | None = None
        if p.train.cron:
            trigger = CronTrigger.from_crontab(p.train.cron, timezone="UTC")
        elif p.train.every:
            trigger = IntervalTrigger(seconds=p.train.every)
        if trigger is not None:
            self._aps.add_job(self._train_tick, trigger, args=[p.id], id=f"train:{p.id}", **opts)
        if self._planner.needs_training(p.id):
            self._train(p.id)
        log.info("scheduled pipeline=%s infer every %ss", p.id, p.infer.every)

    def _remove(self, pid: str) -> None:
        self._specs.pop(pid, None)
        for job_id in (f"infer:{pid}", f"train:{pid}"):
            if self._aps.get_job(job_id) is not None:
                self._aps.remove_job(job_id)

    def _tick(self, pid: str) -> None:
        # The planner decides what is due (services/ticks.py) and never raises into APScheduler
        # (which would log a traceback): a failure is logged and counted there.
        for job in self._planner.due_jobs(pid, "infer"):
            self._dispatcher.submit(job)

    def _train_tick(self, pid: str) -> None:
        for job in self._planner.due_jobs(pid, "train"):
            self._dispatcher.submit(job)

    def _train(self, pid: str) -> None:
        for job in self._planner.train_jobs(pid):
            self._dispatcher.submit(job)

    def _failed(self, stage: str) -> None:
        if self._telemetry is not None:
            self._telemetry.failed(stage)


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, OpenAnomalyError) else f"{type(exc).__name__}: {exc}"
