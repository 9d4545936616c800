"""Cluster mode's scheduler: Celery beat with RedBeat, several processes, one leader.

Every ``openanomaly beat`` process runs a ``PipelineRedBeatScheduler``. RedBeat keeps the schedule
in Redis (one hash per entry, a sorted set by due time) and elects the leader with a Redis lock
of ``celery.beat_lock_timeout`` seconds, extended at every tick; the others wait for it. Only the
lock holder reconciles the entries with the config store (every ``pipeline_sync_every`` seconds)
and sends the due ticks; when it dies, its lock expires and a standby takes over from the entries
in Redis, with their last run times.

Per enabled pipeline: ``infer:<id>`` every ``infer.every`` and ``train:<id>`` every
``train.every`` or on ``train.cron`` (UTC), both sending ``openanomaly.tick(id, kind)`` to the
tick queue. A tick carries no window: the worker asks the checkpoint what is due
(``services/ticks.py``), so a late tick catches up and a repeated one finds nothing new. A new
pipeline's ``infer`` entry is due at once, and its tick trains first when no model fits.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

import redis
from celery import Celery
from celery.schedules import crontab, schedule
from redbeat.decoder import RedBeatJSONEncoder
from redbeat.schedulers import LUA_EXTEND_TO_SCRIPT, RedBeatScheduler, get_redis

from openanomaly.domain.spec import Pipeline
from openanomaly.errors import OpenAnomalyError
from openanomaly.ports import JobPlanner, Telemetry, TickKind

log = logging.getLogger(__name__)

TICK_TASK: Final = "openanomaly.tick"
KINDS: Final[tuple[TickKind, ...]] = ("infer", "train")


def key_prefix(queue_prefix: str) -> str:
    """RedBeat's keys: ``<prefix>:redbeat:<entry>``, ``...::schedule``, ``...::lock``."""
    return f"{queue_prefix}:redbeat:"


def poll_interval(lock_timeout: float) -> float:
    """How often the leader ticks (extending its lock) and a standby tries the lock: a fifth of
    the lock timeout (RedBeat's own ratio), at most a second, so that a standby takes over at
    most a second after the dead leader's lock expires."""
    return min(1.0, lock_timeout / 5)


def configure(app: Celery, *, redis_url: str, queue_prefix: str, lock_timeout: float) -> None:
    """Point ``app``'s RedBeat at ``redis_url`` under ``key_prefix(queue_prefix)``. RedBeat's
    own Redis options are set (not inherited from the broker's transport options)."""
    app.conf.update(
        redbeat_redis_url=redis_url,
        redbeat_key_prefix=key_prefix(queue_prefix),
        redbeat_lock_timeout=lock_timeout,
        redbeat_redis_options={
            "socket_timeout": max(1.0, lock_timeout / 2),
            "socket_connect_timeout": max(1.0, lock_timeout / 2),
        },
        beat_max_loop_interval=poll_interval(lock_timeout),
        timezone="UTC",
    )


# --- what the schedule should hold ---------------------------------------------------------


@dataclass(frozen=True)
class EntrySpec:
    """One RedBeat entry of a pipeline: ``openanomaly.tick(pipeline_id, kind)`` on ``every``
    seconds or on ``cron`` (UTC)."""

    pipeline_id: str
    kind: TickKind
    every: int | None = None
    cron: str | None = None

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.pipeline_id}"

    def schedule(self) -> schedule:
        if self.cron is not None:
            return crontab.from_string(self.cron)
        assert self.every is not None
        return schedule(run_every=timedelta(seconds=self.every))

    def options(self) -> dict[str, Any]:
        # An infer tick left queued while no worker ran is worth nothing once the next one is
        # sent (the next finds the same windows): it expires. A train tick is kept.
        return {"expires": float(self.every)} if self.kind == "infer" and self.every else {}


def wanted(pipelines: Iterable[Pipeline]) -> dict[str, EntrySpec]:
    """The entries the enabled ``pipelines`` need, by entry name."""
    out: dict[str, EntrySpec] = {}
    for p in pipelines:
        if not p.enabled:
            continue
        entries = [EntrySpec(p.id, "infer", every=p.infer.every)]
        if p.train.cron:
            entries.append(EntrySpec(p.id, "train", cron=p.train.cron))
        elif p.train.every:
            entries.append(EntrySpec(p.id, "train", every=p.train.every))
        out.update((e.name, e) for e in entries)
    return out


def is_ours(name: str) -> bool:
    kind, _, pid = name.partition(":")
    return kind in KINDS and bool(pid)


# --- the beat scheduler ----------------------------------------------------------------------


class PipelineRedBeatScheduler(RedBeatScheduler):  # type: ignore[misc]
    """RedBeat, whose leader keeps the entries in step with ``planner.enabled_pipelines()``.

    Celery beat builds it (``scheduler_cls``); the keyword arguments come through a partial.

    Args:
        planner: the config store's side of the Service: which pipelines are enabled, and where
            a pipeline whose entries cannot be built is reported (``pipeline_failed``).
        sync_every: seconds between two reconciliations by the leader.
        telemetry: counts failed reconciliations (stage ``sync``).
    """

    lock: Any = None  # RedBeat's: a redis-py Lock while this process leads

    def __init__(
        self,
        app: Celery,
        *,
        planner: JobPlanner,
        sync_every: float,
        telemetry: Telemetry | None = None,
        **kwargs: Any,
    ) -> None:
        if sync_every <= 0:
            raise ValueError(f"sync_every must be > 0 seconds, got {sync_every}")
        self._planner = planner
        self._sync_every = sync_every
        self._telemetry = telemetry
        self._next_sync = 0.0
        self._refused: dict[str, Pipeline] = {}  # left out until their spec changes
        self.leading = False
        """Whether this process held the lock at its last tick (``/healthz``'s role)."""
        super().__init__(app, **kwargs)

    def install_default_entries(self, data: Any) -> None:
        """None: Celery's would add ``celery.backend_cleanup``; cluster mode keeps no results."""

    # The lock. RedBeat takes it once, blocking, at beat_init; a leader whose lock is lost
    # (expired during a stall, Redis restarted) would then crash at its next extension. Here
    # the lock is checked at every tick: lost, this process is a standby and keeps trying.

    def tick(self, min: Callable[..., float] = min, **kwargs: Any) -> float:
        if not self._hold_lock():
            return float(self.max_interval)
        if time.monotonic() >= self._next_sync:
            self.reconcile()
            self._next_sync = time.monotonic() + self._sync_every
        try:
            interval: float = super().tick(min=min, **kwargs)
        except (redis.exceptions.LockError, redis.exceptions.RedisError) as exc:
            self._step_down(exc)
            return float(self.max_interval)
        return min(interval, max(0.0, self._next_sync - time.monotonic()))

    def _hold_lock(self) -> bool:
        try:
            if self.lock is not None:
                self.lock.extend(int(self.lock_timeout))
            else:
                lock = self._new_lock()
                if not lock.acquire(blocking=False):
                    return self._standby()
                self.lock = lock
                log.info("beat: acquired the lock %s: leader now", self.lock_key)
        except (redis.exceptions.LockError, redis.exceptions.RedisError) as exc:
            self._step_down(exc)
            return False
        if not self.leading:
            self.leading = True
            self._next_sync = 0.0  # a new leader reconciles at once
        return True

    def _new_lock(self) -> Any:
        # As RedBeat's beat_init handler builds it (its extension sets the TTL, not adds to it).
        client = get_redis(self.app)
        lock = client.lock(
            self.lock_key, timeout=self.lock_timeout, sleep=self.max_interval, thread_local=False
        )
        lock.lua_extend = client.register_script(LUA_EXTEND_TO_SCRIPT)
        return lock

    def _standby(self) -> bool:
        if self.leading:
            log.warning("beat: another process holds the lock: standby now")
        self.leading = False
        return False

    def _step_down(self, exc: Exception) -> None:
        if self.leading:
            log.warning("beat: lost the lock (%s: %s): standby now", type(exc).__name__, exc)
        self.leading = False
        self.lock = None

    def close(self) -> None:
        """Release the lock if this process holds it (SIGTERM), so a standby takes over now."""
        try:
            super().close()
        except redis.exceptions.RedisError as exc:  # Redis down: the lock expires by itself
            log.warning("beat: could not release the lock: %s", exc)
        self.leading = False

    # Reconciliation.

    def reconcile(self) -> None:
        """Make the entries in Redis match the enabled pipelines: add the missing ones, replace
        the changed ones (keeping their last run time), delete those of deleted or disabled
        pipelines. The store unreadable: the schedule is kept as it is."""
        try:
            pipelines = self._planner.enabled_pipelines()
        except Exception as exc:
            self._failed()
            log.error("pipeline sync failed, keeping the current schedule: %s", _describe(exc))
            return
        try:
            self._apply(pipelines)
        except redis.exceptions.RedisError as exc:
            self._failed()
            log.error("pipeline sync failed (Redis), retried at the next sync: %s", exc)

    def _apply(self, pipelines: list[Pipeline]) -> None:
        specs = {p.id: p for p in pipelines}
        for pid in [pid for pid, p in self._refused.items() if specs.get(pid) != p]:
            del self._refused[pid]
        entries = {n: e for n, e in wanted(pipelines).items() if e.pipeline_id not in self._refused}
        stored = self._stored()
        for name in sorted(set(stored) - set(entries)):
            self.Entry(name=name, app=self.app).delete()
            log.info("beat: removed entry %s", name)
        for name, spec in entries.items():
            if spec.pipeline_id in self._refused:
                continue
            try:
                entry = self._entry(spec)
            except Exception as exc:  # a cron celery refuses: left out, reported
                self._refuse(specs[spec.pipeline_id], exc)
                continue
            before = stored.get(name)
            if before is not None and before == _definition(entry):
                continue
            if before is not None:
                # Keep when it last ran: its new interval counts from there.
                entry.last_run_at = self.Entry.load_meta(entry.key, app=self.app)["last_run_at"]
            elif spec.kind == "infer":
                # Due at once; its tick trains first when no model fits. A new train entry
                # counts from now (a second training beside the infer tick's would be waste).
                entry.last_run_at = None
            entry.save()
            log.info("beat: %s entry %s", "replaced" if before else "added", name)

    def _refuse(self, pipeline: Pipeline, exc: Exception) -> None:
        for kind in KINDS:
            self.Entry(name=f"{kind}:{pipeline.id}", app=self.app).delete()
        if self._planner.pipeline_failed(pipeline.id, "schedule", exc):
            self._refused[pipeline.id] = pipeline
        log.error("pipeline=%s not scheduled: %s", pipeline.id, _describe(exc))

    def _entry(self, spec: EntrySpec) -> Any:
        return self.Entry(
            name=spec.name,
            task=TICK_TASK,
            schedule=spec.schedule(),
            args=[spec.pipeline_id, spec.kind],
            options=spec.options(),
            app=self.app,
        )

    def _stored(self) -> dict[str, dict[str, Any]]:
        """Our entries in Redis: name -> their definition (as JSON values)."""
        client = get_redis(self.app)
        prefix = self.app.redbeat_conf.key_prefix
        keys = [k for k in client.zrange(self.app.redbeat_conf.schedule_key, 0, -1)]
        names = [k[len(prefix) :] for k in keys if k.startswith(prefix)]
        names = [n for n in names if is_ours(n)]
        with client.pipeline() as pipe:
            for name in names:
                pipe.hget(prefix + name, "definition")
            raw = pipe.execute()
        return {n: json.loads(d) for n, d in zip(names, raw, strict=True) if d}

    def _failed(self) -> None:
        if self._telemetry is not None:
            self._telemetry.failed("sync")


def _definition(entry: Any) -> dict[str, Any]:
    """What ``RedBeatSchedulerEntry.save`` stores as the definition, as JSON values."""
    definition = {
        "name": entry.name,
        "task": entry.task,
        "args": entry.args,
        "kwargs": entry.kwargs,
        "options": entry.options,
        "schedule": entry.schedule,
        "enabled": entry.enabled,
    }
    value: dict[str, Any] = json.loads(json.dumps(definition, cls=RedBeatJSONEncoder))
    return value


def _describe(exc: Exception) -> str:
    return str(exc) if isinstance(exc, OpenAnomalyError) else f"{type(exc).__name__}: {exc}"


# --- the Container's scheduler in cluster mode -----------------------------------------------


class BeatProcessScheduler:
    """The ``Scheduler`` of a process in cluster mode (``scheduler=redbeat``): nothing is
    scheduled in it. The ``openanomaly beat`` processes schedule, from the config store, which
    their leader re-reads every ``pipeline_sync_every`` seconds: a pipeline written through the
    API or the CLI here is picked up there, with no message between the two."""

    def sync(self, pipelines: Iterable[Pipeline]) -> None:
        pass

    def start(self) -> None:
        log.info("scheduling is done by the `openanomaly beat` processes (scheduler=redbeat)")

    def stop(self) -> None:
        pass


# --- `openanomaly beat` builds it through Celery beat's ``scheduler_cls`` ------------------------


def scheduler_factory(
    *, planner: JobPlanner, sync_every: float, telemetry: Telemetry | None = None
) -> Callable[..., PipelineRedBeatScheduler]:
    """What Celery beat's ``Service(scheduler_cls=...)`` calls with the app and its options."""

    def build(app: Celery, **options: Any) -> PipelineRedBeatScheduler:
        return PipelineRedBeatScheduler(
            app, planner=planner, sync_every=sync_every, telemetry=telemetry, **options
        )

    return build


def role(scheduler: PipelineRedBeatScheduler) -> str:
    """``leader`` while this process holds the lock, else ``standby``."""
    return "leader" if scheduler.leading else "standby"
