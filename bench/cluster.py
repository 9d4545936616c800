"""(b) of ``bench.scale`` on the product's cluster path: ``openanomaly worker`` processes
(Celery, ``OA_DISPATCHER=celery``) on the local Redis under a key prefix of their own, sharing
a SQLite config store, the jobs submitted through the dispatcher.

"One worker" is one worker process with concurrency 1; "two workers" are two worker processes
with concurrency 1 each, not one with concurrency 2: each is started in its own session (the
harness's ``start_new_session``), so on a kernel with autogroup scheduling (this one) each gets
its own share of the cores against the machine's other sessions, as two machines or containers
would, where the pool processes of one worker would share one share.

Every worker is warm before a timed job: it has run a training of each model and an inference
window (its imports, the engines' first calls) on a tiny pipeline. A timed job's time is taken
from the run history (``JobRun.started_at``/``ended_at``, what ``openanomaly jobs`` shows), beside
the wall clock from the first submission to the last row ended; its phases from the worker's
log line (``read=... model=... save=...``), and the CPU seconds the workers and the TSDB used
from /proc.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.celery_workers import Cluster, Worker, pool_processes, process_cpu_seconds
from tests.cluster_servers import HOST, PORTS, Redis, require
from tests.servers import TsdbServer

from openanomaly.adapters.dispatch.celery import CeleryDispatcher
from openanomaly.domain.records import InferWindow, Job, JobRun, TrainJob
from openanomaly.domain.spec import Pipeline

WARM_SERIES = 8
THREADS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
"""One BLAS thread per pool process: a process per core is the parallelism measured."""


@dataclass
class Timed:
    """One batch of jobs run by the workers."""

    wall: float  # first submission to the last row ended (polled every 0.2 s)
    rows: list[JobRun]  # the run history's rows, in the order submitted
    cpu: list[float]  # CPU seconds each worker (main and pool processes) used meanwhile
    tsdb_cpu: float  # and the TSDB
    phases: list[dict[str, float]]  # per job, from its log line
    peak_mb: list[float]  # peak RSS of each worker's pool process meanwhile

    @property
    def span(self) -> float:
        """The run history's time: the last end less the first start."""
        ended = max(r.ended_at or 0.0 for r in self.rows)
        return ended - min(r.started_at or ended for r in self.rows)

    def took(self) -> list[float]:
        return [(r.ended_at or 0.0) - (r.started_at or 0.0) for r in self.rows]


def start(tmp: Path, tsdb: TsdbServer, *, preload: bool = True) -> tuple[Cluster, Redis]:
    """The workers' cluster (none started yet); ``preload``: False sets ``preload_engines`` to
    none, to see what a fresh pool process's first job costs without it."""
    require("redis")
    redis = Redis(f"redis://{HOST}:{PORTS['redis']}/0", f"oa-bench-{uuid.uuid4().hex[:10]}")
    extra = THREADS | ({} if preload else {"OA_PRELOAD_ENGINES": "[]"})
    return Cluster(tmp, tsdb, redis.url, redis.prefix, extra=extra), redis


def add_worker(cluster: Cluster) -> Worker:
    worker = cluster.start_worker(f"worker-{len(cluster.workers)}", "--concurrency", "1")
    worker.wait_ready()
    return worker


def run(cluster: Cluster, dispatcher: CeleryDispatcher, jobs: Sequence[Job]) -> Timed:
    """Submit ``jobs``, wait for their rows to end; fails on a job that did not end ``ok``."""
    pools = [pool_processes(w.proc.pid) for w in cluster.workers]
    for pids in pools:
        for pid in pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # restart VmHWM (Linux >= 4.0)
    cpu = [w.cpu_seconds() for w in cluster.workers]
    tsdb = process_cpu_seconds(cluster.tsdb.process.pid)
    began = time.perf_counter()
    ids = [dispatcher.submit(job) for job in jobs]
    rows = cluster.wait_runs(ids, timeout=1800)
    wall = time.perf_counter() - began
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        raise SystemExit(f"jobs did not end ok: {bad}\n{cluster.logs()}")
    return Timed(
        wall=wall,
        rows=rows,
        cpu=[w.cpu_seconds() - c for w, c in zip(cluster.workers, cpu, strict=True)],
        tsdb_cpu=process_cpu_seconds(cluster.tsdb.process.pid) - tsdb,
        phases=[logged_phases(cluster, job) for job in jobs],
        peak_mb=[max((vm_hwm(pid) for pid in pids), default=0.0) for pids in pools],
    )


def train_jobs(p: Pipeline, end: int) -> list[Job]:
    """One job per shard, as the planner's ``train_jobs`` (the one job of an unsharded one)."""
    return [TrainJob(p.id, end, None if p.shards == 1 else i) for i in range(p.shards)]


def infer_jobs(p: Pipeline, start: int, end: int) -> list[Job]:
    return [InferWindow(p.id, start, end, None if p.shards == 1 else i) for i in range(p.shards)]


def vm_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


_PHASE = re.compile(r"\b(\w+)=([0-9.]+)s\b")


def logged_phases(cluster: Cluster, job: Job) -> dict[str, float]:
    """The phases of the last log line of ``job``'s pipeline shard (``trained``/``inferred``)."""
    shard = getattr(job, "shard", None)
    key = job.pipeline_id if shard is None else f"{job.pipeline_id}#{shard}/"
    verb = "trained" if isinstance(job, TrainJob) else "inferred"
    lines = [
        line
        for w in cluster.workers
        for line in w.logs(tail=None).splitlines()
        if f"{verb} pipeline={key}" in line
    ]
    return {k: float(v) for k, v in _PHASE.findall(lines[-1])} if lines else {}


def warm(
    cluster: Cluster,
    dispatcher: CeleryDispatcher,
    specs: Sequence[dict[str, Any]],
    *,
    metric: str,
    now: int,
    step: int,
) -> tuple[int, float]:
    """Run a training of each of ``specs`` (pipeline specs) and an inference window of the
    first on every worker's pool process, on ``metric``'s tiny pipeline; returns the rounds
    and the seconds of the first round's first training (the slowest shard's; a fresh pool
    process's first job).

    A round submits one job per worker and shard at once (idle workers with a prefetch of one
    take one each); rounds repeat, on fresh pipelines (a pipeline's checkpoint is past the
    window after its first round), until every pool process has run each.
    """
    n = len(cluster.workers)
    for rounds in range(1, 8):
        pids = {p for w in cluster.workers for p in pool_processes(w.proc.pid)}
        seen: dict[str, set[int]] = {}
        for k, spec in enumerate(specs):
            p = Pipeline.model_validate(
                {**spec, "id": f"warm-{n}-{rounds}-{k}", "query": metric, "shards": n}
            )
            cluster.put(p)
            done = run(cluster, dispatcher, train_jobs(p, now - 2 * step))
            seen[f"train {k}"] = {int((r.worker or ":0").rsplit(":", 1)[1]) for r in done.rows}
            if rounds == 1 and k == 0:
                first = max(done.took())
            if k == 0:
                done = run(cluster, dispatcher, infer_jobs(p, now - 2 * step, now - step))
                seen["infer"] = {int((r.worker or ":0").rsplit(":", 1)[1]) for r in done.rows}
        if all(pids <= ran for ran in seen.values()):
            return rounds, first
    raise SystemExit(f"the workers were not all warm after {rounds} rounds:\n{cluster.logs()}")
