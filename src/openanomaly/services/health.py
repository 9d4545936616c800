"""Which pipelines are broken: they fail in a way a retry will not fix (their engine is not
installed, their model or artifact cannot be loaded, the TSDB refuses their query). A broken
pipeline is reported (status, API, ``openanomaly_pipeline_broken``) and retried at its next
tick; the others run on. A success clears it. Outages (the TSDB or a model server down) do not
break a pipeline: every pipeline fails alike and recovers alike."""

from __future__ import annotations

import threading
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
from openanomaly.ports import MetricsReader, PipelineStore

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


class PipelineHealth:
    """Thread-safe record of the broken pipelines and why."""

    def __init__(self) -> None:
        self._broken: dict[str, str] = {}
        self._lock = threading.Lock()

    def failed(self, pipeline_id: str, what: str, exc: BaseException) -> bool:
        """Record that ``what`` (``infer``, ``train``, ``schedule``) failed with ``exc``;
        returns whether that broke the pipeline (False for an outage: see ``transient``)."""
        if transient(exc):
            return False
        detail = str(exc) if isinstance(exc, OpenAnomalyError) else repr(exc)
        with self._lock:
            self._broken[pipeline_id] = shorten(f"{what}: {detail}", 500)
        return True

    def succeeded(self, pipeline_id: str) -> None:
        with self._lock:
            self._broken.pop(pipeline_id, None)

    def reason(self, pipeline_id: str) -> str | None:
        """Why the pipeline is broken, or None when it is not."""
        with self._lock:
            return self._broken.get(pipeline_id)

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
