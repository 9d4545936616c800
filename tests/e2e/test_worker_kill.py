"""``kill -9`` of a Celery worker in the middle of an inference window, on real servers: two
``openanomaly worker`` processes on Redis, a shared SQLite config store, VictoriaMetrics behind
a proxy that slows each remote-write request down, so that a window takes seconds and is cut
between two of its writes.

1. ``kill -9`` of the pool process running the window: the worker sees it lost
   (``task_reject_on_worker_lost``) and puts the message back at once.
2. ``kill -9`` of a whole worker (main process and pool) running the next window: nobody is
   left to put it back; Redis hands it out again after its visibility timeout.

Each window is then completed once, by one task run, and the TSDB holds exactly the samples of
a clean run of a twin pipeline (same query and model, another id), duplicates included in the
count (``tests/faults.py``).
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from openanomaly.domain.records import InferWindow
from tests.celery_workers import Cluster, Worker, cluster, pool_processes, write_history
from tests.faults import Fault, FaultProxy, assert_exactly_once, raw_samples

pytestmark = pytest.mark.e2e

SERIES = 20
EVERY = 60


def running(cluster: Cluster, pipeline: str, workers: list[Worker]) -> tuple[Worker, int]:
    """The worker whose pool process holds the pipeline's lease (a window is being written),
    and that process's pid (the lease owner is ``host:pid:...``)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        store = cluster.store()
        try:
            owner = store.state(pipeline).owner
        finally:
            store.close()
        if owner is not None:
            pid = int(owner.split(":")[1])
            for worker in workers:
                if pid in pool_processes(worker.proc.pid):
                    return worker, pid
        time.sleep(0.1)
    pytest.fail(f"no worker took the window of {pipeline}:\n{cluster.logs()}")


def wait_writes(proxy: FaultProxy, more_than: int, cluster: Cluster) -> None:
    deadline = time.monotonic() + 60
    while proxy.counts["/api/v1/write"] <= more_than:
        if time.monotonic() > deadline:
            pytest.fail(f"no write went through the proxy:\n{cluster.logs()}")
        time.sleep(0.05)


def test_kill_9_of_a_worker_mid_window_redelivers_it_and_writes_every_sample_once(
    cluster: Cluster,
) -> None:
    metric = f"wkill_{uuid.uuid4().hex[:10]}"
    now = write_history(cluster.tsdb, metric, SERIES, span=900)
    end = now // EVERY * EVERY
    proxy = FaultProxy(
        cluster.tsdb.url,
        lambda _i, _m, path: Fault(delay=0.25) if path.endswith("/write") else None,
    )
    try:
        cluster.extra = {
            "OA_TSDB__URL": proxy.url,
            # 20 series x 12 points x 4 outputs in requests of 40 samples: 24 slow writes
            "OA_TSDB__WRITE_BATCH_SAMPLES": "40",
            # Redis' visibility timeout, above every hard limit, short enough for a test
            **{f"OA_CELERY__{kind}_SOFT_LIMIT": "15" for kind in ("TRAIN", "INFER", "BACKTEST")},
            **{f"OA_CELERY__{kind}_HARD_LIMIT": "20" for kind in ("TRAIN", "INFER", "BACKTEST")},
            "OA_CELERY__VISIBILITY_TIMEOUT": "25",
        }
        pipeline = cluster.add_pipeline(metric.replace("_", "-"), metric)
        twin = cluster.add_pipeline(f"{pipeline.id}-twin", metric)
        workers = [
            cluster.start_worker(name, "--queues", "infer", "--concurrency", "1")
            for name in ("first", "second")
        ]
        for worker in workers:
            worker.wait_ready()
        windows = [
            InferWindow(pipeline.id, end - 2 * EVERY, end - EVERY),
            InferWindow(pipeline.id, end - EVERY, end),
        ]
        with cluster.dispatcher() as dispatcher:
            # 1. the pool process dies: its worker puts the message back
            writes = proxy.counts["/api/v1/write"]
            dispatcher.submit(windows[0])
            victim, pid = running(cluster, pipeline.id, workers)
            wait_writes(proxy, writes + 4, cluster)
            os.kill(pid, signal.SIGKILL)
            cluster.wait_checkpoint(pipeline.id, windows[0].end)

            # 2. the whole worker dies: Redis hands the message out after its visibility timeout
            writes = proxy.counts["/api/v1/write"]
            dispatcher.submit(windows[1])
            victim, _ = running(cluster, pipeline.id, workers)
            wait_writes(proxy, writes + 4, cluster)
            killed_at = time.monotonic()
            victim.kill_all()
            cluster.wait_checkpoint(pipeline.id, windows[1].end)
            redelivered_after = time.monotonic() - killed_at

            # the reference: the same windows of the twin, undisturbed
            for window in windows:
                dispatcher.submit(InferWindow(twin.id, window.start, window.end))
            cluster.wait_checkpoint(twin.id, end)
        assert redelivered_after >= 20, "redelivered before the visibility timeout"

        got = raw_samples(cluster.tsdb, pipeline.id, end - 2 * EVERY, end)
        reference = raw_samples(cluster.tsdb, twin.id, end - 2 * EVERY, end)
        assert_exactly_once(got, reference)
        logs = "\n".join(w.logs(tail=None) for w in workers)
        for window in windows:  # run twice (cut, then completed), succeeded once
            assert logs.count(f"openanomaly.infer[{window.id}] received") == 2, cluster.logs()
            assert logs.count(f"openanomaly.infer[{window.id}] succeeded") == 1, cluster.logs()
        assert "recovered=1" in logs  # the cut windows were completed from what the TSDB held
        survivor = next(w for w in workers if w is not victim)
        assert survivor.stop() == 0, cluster.logs()
    finally:
        proxy.close()


__all__ = ["cluster"]  # the fixture, imported to be used here
