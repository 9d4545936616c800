"""Time limits and retries of the Celery tasks, on a real worker process (Redis broker) and a
real VictoriaMetrics behind a fault-injecting proxy.

- A task past its soft limit is stopped (SoftTimeLimitExceeded) and acknowledged; a task whose
  pool process is frozen (SIGSTOP: it cannot even see the soft limit) is killed at the hard
  limit. The worker survives both: its next task is scored. On SIGTERM, a running task gets
  ``shutdown_grace`` seconds, then its message goes back to the broker.
- A TSDB outage (the proxy answers 503) is retried with a doubling backoff, and the window is
  written once the TSDB is back.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from openanomaly.domain.records import InferWindow
from tests.celery_workers import STEP, Cluster, Worker, cluster, pool_processes, write_history
from tests.faults import Fault, FaultProxy, duplicates, raw_samples

pytestmark = pytest.mark.integration

SERIES = 3
WINDOW = 60
GRACE = 1  # the task is cancelled well before its soft limit (4 s)


def wait_for(condition: object, what: str, cluster: Cluster, timeout: float = 60) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"{what} did not happen in {timeout} s:\n{cluster.logs()}")


def assert_scored(cluster: Cluster, pipeline: str, start: int, end: int) -> None:
    scores = raw_samples(cluster.tsdb, pipeline, start, end)
    assert not duplicates(scores), cluster.logs()
    expected = list(range(start + STEP, end + 1, STEP))
    got = {k: [t for t, _ in v] for k, v in scores.items() if k[0] == "anomaly_score"}
    assert len(got) == SERIES and all(ts == expected for ts in got.values()), cluster.logs()


def test_time_limits_stop_a_task_and_the_worker_survives(cluster: Cluster) -> None:
    metric = f"limits_{uuid.uuid4().hex[:10]}"
    end = write_history(cluster.tsdb, metric, SERIES, span=600)
    slow = threading.Event()
    slow.set()

    def rule(index: int, method: str, path: str) -> Fault | None:
        return Fault(delay=30) if slow.is_set() and path.endswith("/query_range") else None

    proxy = FaultProxy(cluster.tsdb.url, rule)
    try:
        cluster.extra = {
            "OA_TSDB__URL": proxy.url,
            "OA_TSDB__TIMEOUT": "60",
            "OA_CELERY__INFER_SOFT_LIMIT": "4",
            "OA_CELERY__INFER_HARD_LIMIT": "8",
            "OA_SHUTDOWN_GRACE": str(GRACE),
        }
        pipeline = cluster.add_pipeline(metric.replace("_", "-"), metric)
        worker = cluster.start_worker("worker", "--queues", "infer", "--concurrency", "1")
        worker.wait_ready()
        with cluster.dispatcher() as dispatcher:
            # 1. a read slower than the soft limit: the task is told to stop, and stops
            first = InferWindow(pipeline.id, end - WINDOW, end)
            dispatcher.submit(first)
            wait_for(lambda: "SoftTimeLimitExceeded" in worker.logs(), "the soft limit", cluster)
            assert "Hard time limit" not in worker.logs()
            # 2. a frozen pool process never sees the soft limit: killed at the hard limit
            second = InferWindow(pipeline.id, end - WINDOW, end)
            before = pool_processes(worker.proc.pid)
            assert len(before) == 1
            dispatcher.submit(second)
            wait_for(lambda: proxy.counts["/api/v1/query_range"] >= 2, "the read", cluster)
            os.kill(before[0], signal.SIGSTOP)
            wait_for(
                lambda: (
                    f"Hard time limit (8.0s) exceeded for openanomaly.infer[{second.id}]"
                    in worker.logs()
                ),
                "the hard limit",
                cluster,
            )
            wait_for(
                lambda: (now := pool_processes(worker.proc.pid)) and now != before,
                "a new pool process",
                cluster,
            )
            # 3. the worker goes on: the next window is scored
            slow.clear()
            third = InferWindow(pipeline.id, end - WINDOW, end)
            dispatcher.submit(third)
            cluster.wait_checkpoint(pipeline.id, end)
        assert worker.proc.poll() is None
        assert_scored(cluster, pipeline.id, end - WINDOW, end)
        logs = worker.logs(tail=None)
        assert f"openanomaly.infer[{third.id}] succeeded" in logs
        # neither stopped task was handed out again (acknowledged on failure and on timeout)
        assert logs.count(f"openanomaly.infer[{first.id}] received") == 1
        assert logs.count(f"openanomaly.infer[{second.id}] received") == 1

        # 4. SIGTERM while a task runs: it gets the grace period, then its message goes back
        slow.set()
        other = cluster.add_pipeline(f"{pipeline.id}-b", metric)  # nothing scored yet
        sigterm_puts_the_running_task_back(cluster, worker, proxy, other.id, end)
    finally:
        proxy.close()


def sigterm_puts_the_running_task_back(
    cluster: Cluster, worker: Worker, proxy: FaultProxy, pipeline: str, end: int
) -> None:
    reads = proxy.counts["/api/v1/query_range"]
    with cluster.dispatcher() as dispatcher:
        dispatcher.submit(InferWindow(pipeline, end - WINDOW, end))
    wait_for(lambda: proxy.counts["/api/v1/query_range"] > reads, "the read", cluster)
    asked = time.monotonic()
    worker.stop(timeout=30)
    assert time.monotonic() - asked < GRACE + 10, cluster.logs()
    client = redis.Redis.from_url(cluster.broker)
    try:  # back in the queue, for the next worker
        assert client.llen(f"{cluster.prefix}:{cluster.prefix}.infer") == 1, cluster.logs()
    finally:
        client.close()
    assert cluster.checkpoint(pipeline) is None


def test_a_tsdb_outage_is_retried_with_backoff_until_the_tsdb_is_back(cluster: Cluster) -> None:
    metric = f"retries_{uuid.uuid4().hex[:10]}"
    end = write_history(cluster.tsdb, metric, SERIES, span=600)
    reads: list[float] = []

    def rule(index: int, method: str, path: str) -> Fault | None:
        if not path.endswith("/query_range"):
            return None
        reads.append(time.monotonic())
        return Fault(status=503) if index < 6 else None  # two attempts of 1 + 2 reads each

    proxy = FaultProxy(cluster.tsdb.url, rule)
    try:
        cluster.extra = {
            "OA_TSDB__URL": proxy.url,
            "OA_TSDB__READ_RETRIES": "2",
            "OA_TSDB__READ_BACKOFF": "0.1",
            "OA_CELERY__RETRIES": "3",
            "OA_CELERY__RETRY_BACKOFF": "2",
        }
        pipeline = cluster.add_pipeline(metric.replace("_", "-"), metric)
        worker = cluster.start_worker("worker", "--queues", "infer", "--concurrency", "1")
        worker.wait_ready()
        window = InferWindow(pipeline.id, end - WINDOW, end)
        with cluster.dispatcher() as dispatcher:
            dispatcher.submit(window)
        cluster.wait_checkpoint(pipeline.id, end)
        assert_scored(cluster, pipeline.id, end - WINDOW, end)
        logs = worker.logs(tail=None)
        assert logs.count(f"infer job {window.id}: ") == 2, logs  # two retries, then success
        assert "retry in 2.0 s" in logs and "retry in 4.0 s" in logs
        # the attempts began 2 s, then 4 s after the one before failed (reads 3 and 6)
        assert reads[3] - reads[2] >= 2.0 and reads[6] - reads[5] >= 4.0, reads
        assert worker.stop() == 0, cluster.logs()
    finally:
        proxy.close()


__all__ = ["cluster"]  # the fixture, imported to be used here


def test_pool_processes_start_with_the_preloaded_engines_library(cluster: Cluster) -> None:
    """statsforecast (``preload_engines``' default) is imported before the pool forks: a pool
    process that has run no task yet has its compiled library mapped, so its first training
    does not pay the import (about 9 CPU-seconds) inside its time limit."""
    worker = cluster.start_worker("preload", "--concurrency", "1")
    worker.wait_ready()
    (pool,) = pool_processes(worker.proc.pid)
    assert "statsforecast/_lib" in Path(f"/proc/{pool}/maps").read_text()
    assert "engines preloaded: statsforecast" in worker.logs()
    assert worker.stop() == 0
