"""Which pipelines are broken: they fail in a way a retry will not fix (their engine is not
installed, their model or artifact cannot be loaded, the TSDB refuses their query). A broken
pipeline is reported (status, API, ``openanomaly_pipeline_broken``) and retried at its next
tick; the others run on. A success clears it. Outages (the TSDB or a model server down) do not
break a pipeline: every pipeline fails alike and recovers alike."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from openanomaly.domain.text import shorten
from openanomaly.errors import (
    EngineUnavailable,
    NoData,
    NotEnoughHistory,
    NotFound,
    OpenAnomalyError,
    QueryError,
    TsdbError,
    TsdbUnavailable,
)
from openanomaly.ports import Clock, JobOutcome, MetricsReader, OutcomeStore, PipelineStore

log = logging.getLogger(__name__)

TRANSIENT: tuple[type[OpenAnomalyError], ...] = (
    TsdbUnavailable,
    EngineUnavailable,
    NoData,
    NotEnoughHistory,
)
"""Failures that say nothing about the pipeline itself."""


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` says nothing about the pipeline itself (an outage, no data yet, the
    pipeline deleted meanwhile): retrying later may succeed as it is."""
    return isinstance(exc, TRANSIENT) or (isinstance(exc, NotFound) and exc.kind == "pipeline")


JOB_KINDS = ("train", "infer")


class PipelineHealth:
    """Thread-safe record of the broken pipelines and why (in this process), and of the last
    outcome of each pipeline's train and infer jobs (in ``outcomes`` when given, so that it
    survives a restart; in this process otherwise).

    Args:
        outcomes: Where the outcomes are kept.
        clock: Unix time of an outcome.
    """

    def __init__(self, outcomes: OutcomeStore | None = None, *, clock: Clock = time.time) -> None:
        self._broken: dict[str, str] = {}
        self._waiting: dict[str, str] = {}
        self._lock = threading.Lock()
        self._outcomes = outcomes or _InProcessOutcomes()
        self._clock = clock

    def failed(self, pipeline_id: str, what: str, exc: BaseException) -> bool:
        """Record that ``what`` (``infer``, ``train``, ``schedule``) failed with ``exc``;
        returns whether that broke the pipeline (False for an outage: see ``transient``)."""
        detail = str(exc) if isinstance(exc, OpenAnomalyError) else repr(exc)
        self._record(pipeline_id, what, shorten(detail, 500))
        if transient(exc):
            return False
        with self._lock:
            self._broken[pipeline_id] = shorten(f"{what}: {detail}", 500)
        return True

    def succeeded(self, pipeline_id: str, what: str = "job") -> None:
        self._record(pipeline_id, what, None)
        with self._lock:
            self._broken.pop(pipeline_id, None)

    def outcomes(self, pipeline_id: str) -> dict[str, JobOutcome]:
        """``train``/``infer`` -> how its last job ended (kinds never run are absent)."""
        return self._outcomes.outcomes(pipeline_id)

    def _record(self, pipeline_id: str, what: str, error: str | None) -> None:
        if what not in JOB_KINDS:
            return
        try:
            self._outcomes.record_outcome(pipeline_id, what, self._clock(), error)
        except OpenAnomalyError as exc:  # the status is worth less than the job that ran
            log.warning("outcome of %s job for pipeline=%s not kept: %s", what, pipeline_id, exc)

    def reason(self, pipeline_id: str) -> str | None:
        """Why the pipeline is broken, or None when it is not."""
        with self._lock:
            return self._broken.get(pipeline_id)

    def waiting(self, pipeline_id: str, reason: str | None) -> None:
        """Record why the pipeline writes no score yet (``domain/trust.py``), None: it does."""
        with self._lock:
            if reason is None:
                self._waiting.pop(pipeline_id, None)
            else:
                self._waiting[pipeline_id] = reason

    def waiting_reason(self, pipeline_id: str) -> str | None:
        with self._lock:
            return self._waiting.get(pipeline_id)

    def broken(self) -> dict[str, str]:
        """Pipeline id -> reason, for every broken pipeline."""
        with self._lock:
            return dict(self._broken)


Check = dict[str, str]
"""One dependency's state: ``{"status": "ok"}`` or ``{"status": "down", "error": ..., "detail":
...}``."""


def dependencies(reader: MetricsReader, pipelines: PipelineStore, now: float) -> dict[str, Check]:
    """Whether the service can work: the TSDB answers a query (``vector(1)`` over one minute:
    cheap everywhere, and the same read path as the jobs, credentials included) and the
    pipeline store can be read."""
    end = int(now)
    return {
        "tsdb": _check(lambda: reader.query_range("vector(1)", end - 60, end, 60), _tsdb_down),
        "store": _check(pipelines.list, lambda exc: True),
    }


def _tsdb_down(exc: OpenAnomalyError) -> bool:
    # A refused query (or none of ours) still shows a TSDB that answers.
    return isinstance(exc, TsdbError) and not isinstance(exc, QueryError)


def _check(probe: Callable[[], object], down: Callable[[OpenAnomalyError], bool]) -> Check:
    try:
        probe()
    except OpenAnomalyError as exc:  # the adapters translate their libraries' errors
        if down(exc):
            return {"status": "down", "error": type(exc).__name__, "detail": shorten(str(exc), 300)}
    return {"status": "ok"}


class _InProcessOutcomes:
    """An OutcomeStore in memory, when the process has no database (tests, fakes)."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], JobOutcome] = {}
        self._lock = threading.Lock()

    def record_outcome(self, pipeline_id: str, kind: str, at: float, error: str | None) -> None:
        with self._lock:
            before = self._last.get((pipeline_id, kind))
            kept: tuple[str | None, float | None] = (
                (error, at) if error is not None else (None, None)
            )
            if error is None and before is not None:
                kept = (before.error, before.error_at)
            self._last[pipeline_id, kind] = JobOutcome(at, error is None, *kept)

    def outcomes(self, pipeline_id: str) -> dict[str, JobOutcome]:
        with self._lock:
            return {k: o for (pid, k), o in self._last.items() if pid == pipeline_id}
