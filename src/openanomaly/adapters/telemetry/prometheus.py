"""OpenAnomaly's own metrics (``/metrics``), in a registry per process rather than the global
one, so tests and several services in one process do not collide. The page also carries the
process's CPU, memory and file descriptors (``process_*``) and the Python version
(``python_info``), and no ``*_created`` samples: they double the page and nobody graphs them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from openanomaly.domain.records import InferResult


class PrometheusTelemetry:
    """The ``Telemetry`` port as Prometheus metrics: jobs by kind, pipeline and status, their
    durations, points scored, anomalies found, samples written, the last success, and the
    failures by stage (``sync``, ``tick``, ``job``)."""

    def __init__(self) -> None:
        # prometheus_client has no per-registry switch for this (checked in 0.26.0): it is a
        # process-wide setting, harmless since OpenAnomaly has no other registry to serve.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.failures = Counter(
            "openanomaly_failures",
            "Failures by stage: sync (reading the pipelines), tick (deciding what is due), job",
            ["stage"],
            registry=self.registry,
        )
        for stage in ("sync", "tick", "job"):
            self.failures.labels(stage)  # 0 from the start: rate() sees the first failure
        self.jobs = Counter(
            "openanomaly_jobs", "Jobs run", ["kind", "pipeline", "status"], registry=self.registry
        )
        self.duration = Histogram(
            "openanomaly_job_duration_seconds",
            "Job run time",
            ["kind"],
            registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900),
        )
        self.points = Counter(
            "openanomaly_points_scored", "Points scored", ["pipeline"], registry=self.registry
        )
        self.anomalies = Counter(
            "openanomaly_anomalous_points",
            "Points scored above 1",
            ["pipeline"],
            registry=self.registry,
        )
        self.samples = Counter(
            "openanomaly_samples_written",
            "Samples remote-written",
            ["pipeline"],
            registry=self.registry,
        )
        self.skipped = Counter(
            "openanomaly_points_skipped",
            "Points not scored: catchup (an outage beyond infer.max_catchup) or too_old (behind "
            "the TSDB's write horizon)",
            ["pipeline", "reason"],
            registry=self.registry,
        )
        self.last_success = Gauge(
            "openanomaly_last_success_timestamp_seconds",
            "End of a job's last successful run",
            ["kind", "pipeline"],
            registry=self.registry,
            multiprocess_mode="max",  # a worker's pool processes: the latest of them
        )

        self.dropped = Counter(
            "openanomaly_samples_dropped",
            "Output samples not written: non_finite (no input point) or future",
            ["reason"],
            registry=self.registry,
        )
        self.broken = Gauge(
            "openanomaly_pipeline_broken",
            "1 while a pipeline fails in a way a retry does not fix (see its status)",
            ["pipeline"],
            registry=self.registry,
        )

    def samples_dropped(self, reason: str, count: int) -> None:
        self.dropped.labels(reason).inc(count)

    def pipelines_broken(self, pipelines: Iterable[str], broken: Iterable[str]) -> None:
        """One sample per pipeline: 1 for those in ``broken``, 0 for the rest."""
        self.broken.clear()
        down = set(broken)
        for pid in {*pipelines, *down}:
            self.broken.labels(pid).set(pid in down)

    def failed(self, stage: str) -> None:
        self.failures.labels(stage).inc()

    def job_done(
        self, kind: str, pipeline_id: str, status: Literal["ok", "error", "busy"], seconds: float
    ) -> None:
        self.jobs.labels(kind, pipeline_id, status).inc()
        if status == "error":
            self.failures.labels("job").inc()
        self.duration.labels(kind).observe(seconds)
        if status == "ok":
            self.last_success.labels(kind, pipeline_id).set_to_current_time()

    def inferred(self, result: InferResult) -> None:
        self.points.labels(result.pipeline_id).inc(result.points)
        self.anomalies.labels(result.pipeline_id).inc(result.anomalies)
        self.samples.labels(result.pipeline_id).inc(result.samples_written)
        for reason, points in result.skipped.items():
            self.skipped.labels(result.pipeline_id, reason).inc(points)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
