"""Which pipelines are broken: they fail in a way a retry will not fix (their engine is not
installed, their model or artifact cannot be loaded, the TSDB refuses their query). A broken
pipeline is reported (status, API, ``openanomaly_pipeline_broken``) and retried at its next
tick; the others run on. A success clears it. Outages (the TSDB or a model server down) do not
break a pipeline: every pipeline fails alike and recovers alike."""

from __future__ import annotations

import threading

from openanomaly.domain.text import shorten
from openanomaly.errors import (
    EngineUnavailable,
    NoData,
    NotEnoughHistory,
    NotFound,
    OpenAnomalyError,
    TsdbUnavailable,
)

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
        self._waiting: dict[str, str] = {}
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
