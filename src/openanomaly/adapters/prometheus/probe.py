"""What a TSDB is and what it holds for a query, asked before a pipeline runs.

``detect_flavor`` reads the server's build info (``tsdb.flavor: auto``); ``TsdbProbe`` checks a
pipeline's query (``openanomaly validate --tsdb``): its syntax by the TSDB's own parser, the
series it returns now and the history it has against ``train.window``.

What each server answers (checked on Prometheus 2.42 and VictoriaMetrics 1.x):
``/api/v1/status/buildinfo`` gives Prometheus's ``version``; VictoriaMetrics answers it too,
with an empty ``data`` or a Prometheus-like version for Grafana's sake, so its ``/health``
(``OK``; Prometheus: 404) is asked first; Mimir names itself in ``data.application``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import httpx
import orjson

from openanomaly.adapters.prometheus.http import response_message
from openanomaly.domain.durations import format_duration
from openanomaly.domain.spec import Pipeline
from openanomaly.domain.text import shorten
from openanomaly.domain.timeparse import iso
from openanomaly.domain.trust import required_history
from openanomaly.errors import QueryError
from openanomaly.ports import Flavor

logger = logging.getLogger(__name__)

FALLBACK: Flavor = "prometheus"
"""The flavour used when detection fails: it sends no future sample, which every TSDB takes."""


def detect_flavor(url: str, client: httpx.Client) -> Flavor:
    """The flavour of the TSDB at ``url``; ``FALLBACK`` with a warning when it cannot be told."""
    try:
        flavor, evidence = _detect(url.rstrip("/"), client)
    except (httpx.HTTPError, orjson.JSONDecodeError, AttributeError, TypeError) as exc:
        flavor, evidence = None, f"{type(exc).__name__}: {exc}"
    if flavor is None:
        logger.warning(
            "could not tell which TSDB %s is (%s): writing as %s; set OA_TSDB__FLAVOR "
            "(prometheus, victoriametrics, mimir, thanos) to choose",
            url,
            evidence,
            FALLBACK,
        )
        return FALLBACK
    logger.info("TSDB at %s detected as %s (%s)", url, flavor, evidence)
    return flavor


def _detect(url: str, client: httpx.Client) -> tuple[Flavor | None, str]:
    health = client.get(f"{url}/health")
    if health.status_code == 200 and health.text.strip() == "OK":
        return "victoriametrics", "/health answers OK"
    info = client.get(f"{url}/api/v1/status/buildinfo")
    if info.status_code != 200:
        return None, f"/api/v1/status/buildinfo answered HTTP {info.status_code}"
    data = orjson.loads(info.content).get("data") or {}
    application = str(data.get("application", "")).lower()
    if "mimir" in application:
        return "mimir", f"build info names {data['application']}"
    if "thanos" in application:
        return "thanos", f"build info names {data['application']}"
    if data.get("version"):
        return "prometheus", f"build info version {data['version']}"
    return None, "build info names no version"


@dataclass(frozen=True)
class Finding:
    """One result of a check: an ``error`` (the pipeline cannot run) or a ``warning``."""

    level: str
    pipeline: str
    message: str

    def __str__(self) -> str:
        return f"{self.pipeline}: {self.level}: {self.message}"


SHORT_HISTORY = 0.5
"""Warn when the history the TSDB holds is under this fraction of ``train.window``."""


class TsdbProbe:
    """Asks the TSDB at ``url`` about a pipeline's query, by the Prometheus HTTP API."""

    def __init__(self, url: str, client: httpx.Client, *, now: float) -> None:
        self._url = url.rstrip("/")
        self._client = client
        self._now = int(now)

    def check(self, p: Pipeline) -> list[Finding]:
        """Syntax, series now, and history against ``train.window``."""
        try:
            found = self._instant(f"count(({p.query}))")
        except QueryError as exc:
            return [
                Finding(
                    "error",
                    p.id,
                    "the TSDB refused the query (asked as count((query)): columns shift "
                    f"by 7): {exc}",
                )
            ]
        except httpx.HTTPError as exc:
            return [Finding("error", p.id, f"the TSDB at {self._url} cannot be reached: {exc}")]
        series = int(found[0]) if found else 0
        if series == 0:
            return [
                Finding(
                    "warning",
                    p.id,
                    f"the query returns no series now (at {iso(self._now)}): "
                    "nothing will be scored until it does",
                )
            ]
        findings = [Finding("info", p.id, f"{series} series now")]
        findings += self._history(p)
        return findings

    def _history(self, p: Pipeline) -> list[Finding]:
        window, step = p.train.window, p.step
        # The oldest sample of any series within the window, at a coarse resolution.
        coarse = max(step, window // 200 // step * step)
        oldest_query = f"min(min_over_time(timestamp(({p.query}))[{window}s:{coarse}s]))"
        try:
            found = self._instant(oldest_query)
        except (QueryError, httpx.HTTPError) as exc:
            return [Finding("warning", p.id, f"the history could not be measured: {exc}")]
        if found and math.isfinite(found[0]):
            history = max(0, self._now - int(found[0]))
            since = f"since {iso(found[0])}, {history // step} points at {format_duration(step)}"
        else:  # no sample at any coarse step: less history than one of them
            history, since = 0, f"less than {format_duration(coarse)}"
        msg = (
            f"history: {format_duration(history)} ({since}) against a train.window of "
            f"{format_duration(window)}"
        )
        need = required_history(window)
        if history < need:
            return [
                Finding(
                    "warning",
                    p.id,
                    f"{msg}: no score is written until the model is trained on "
                    f"{format_duration(need)} of history (a quarter of train.window, at most "
                    "a day); the pipeline's status says so meanwhile",
                )
            ]
        if history < SHORT_HISTORY * window:
            return [
                Finding(
                    "warning",
                    p.id,
                    f"{msg}: the model learns from what there is; its bands narrow and its "
                    "cycles appear as the history grows",
                )
            ]
        return [Finding("info", p.id, msg)]

    def _instant(self, query: str) -> list[float]:
        response = self._client.post(
            f"{self._url}/api/v1/query", data={"query": query, "time": str(self._now)}
        )
        if response.status_code != 200:
            raise QueryError(
                shorten(f"HTTP {response.status_code}: {response_message(response)}", 300),
                url=self._url,
                status=response.status_code,
            )
        body = orjson.loads(response.content)
        result = body.get("data", {}).get("result", [])
        if body.get("data", {}).get("resultType") == "scalar":
            return [float(result[1])]
        return [float(r["value"][1]) for r in result]
