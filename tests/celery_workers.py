"""Cluster-mode tests' harness: ``openanomaly worker`` processes on a real broker, a pipeline in
a shared SQL config store, a real VictoriaMetrics with history to score, and the dispatcher the
API would use, in the test process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from openanomaly.adapters.celery.app import claim_ttls, make_app
from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.dispatch.celery import CeleryDispatcher, WorkClaims
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.records import JobRun
from openanomaly.domain.spec import Pipeline
from openanomaly.errors import NotFound
from openanomaly.settings import Settings
from openanomaly.synthetic import as_output, seasonal_panel
from tests.cluster_servers import Redis
from tests.servers import WAIT, TsdbServer, free_port

CLI = Path(sys.executable).parent / "openanomaly"
STEP = 5


@dataclass
class Worker:
    """One ``openanomaly worker`` process (its own session: ``kill_all`` reaches its pool)."""

    proc: subprocess.Popen[bytes]
    health: str
    log: Path

    def wait_ready(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the worker exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.health}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        pytest.fail(f"the worker was not consuming after {timeout} s:\n{self.logs()}")

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an orchestrator stops it; the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"the worker did not stop on SIGTERM in {timeout} s:\n{self.logs()}")

    def kill_all(self) -> None:
        """``kill -9`` of the worker and its pool processes (a crashed machine or container)."""
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def logs(self, tail: int | None = 6000) -> str:
        text = self.log.read_text(errors="replace")
        return text if tail is None else text[-tail:]

    def cpu_seconds(self) -> float:
        """CPU seconds (user + system) the worker and its pool processes have used so far."""
        pids = [self.proc.pid, *pool_processes(self.proc.pid)]
        return sum(process_cpu_seconds(pid) for pid in pids)


@dataclass
class Cluster:
    """Workers on ``broker`` sharing the SQLite config store in ``tmp``, scoring ``tsdb``."""

    tmp: Path
    tsdb: TsdbServer
    broker: str
    prefix: str = field(default_factory=lambda: f"oa-test-{uuid.uuid4().hex[:10]}")
    extra: dict[str, str] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return f"sqlite:///{self.tmp / 'oa.db'}"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("OA_")},
            "OA_DISPATCHER": "celery",
            "OA_CELERY__BROKER": self.broker,
            "OA_CELERY__QUEUE_PREFIX": self.prefix,
            "OA_TSDB__URL": self.tsdb.url,
            "OA_TSDB__FLAVOR": self.tsdb.flavor,
            "OA_DATABASE_URL": self.database_url,
            "OA_ARTIFACTS_DIR": str(self.tmp / "artifacts"),
            "OA_LOG_LEVEL": "INFO",
            **self.extra,
            **extra,
        }

    def settings(self) -> Settings:
        """The settings of a process that submits jobs (the API's), from the same variables."""
        env = {k[3:].lower(): v for k, v in self.env().items() if k.startswith("OA_")}
        nested: dict[str, Any] = {}
        for key, text in env.items():
            # JSON for a list or a mapping, as pydantic-settings reads such a variable
            value = json.loads(text) if text[:1] in ("[", "{") else text
            head, _, tail = key.partition("__")
            if tail:
                nested.setdefault(head, {})[tail] = value
            else:
                nested[key] = value
        return Settings(**nested)

    def start_worker(self, name: str, *args: str, **extra: str) -> Worker:
        port = free_port()
        log = self.tmp / f"{name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [str(CLI), "worker", *args],
                env=self.env(OA_HEALTH_PORT=str(port), **extra),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(proc, f"http://127.0.0.1:{port}", log)
        self.workers.append(worker)
        return worker

    @contextmanager
    def dispatcher(self) -> Iterator[CeleryDispatcher]:
        """An API's dispatcher: claiming each job's work in the cluster's config store."""
        settings, store = self.settings(), self.store()
        claims = WorkClaims(store, claim_ttls(settings))
        dispatcher = CeleryDispatcher(make_app(settings), claims=claims)
        try:
            yield dispatcher
        finally:
            dispatcher.close()
            store.close()

    def store(self) -> SqlStore:
        return SqlStore(self.database_url)

    def add_pipeline(self, pipeline_id: str, metric: str, **infer: str) -> Pipeline:
        spec = Pipeline.model_validate(
            {
                "id": pipeline_id,
                "query": metric,
                "step": f"{STEP}s",
                "infer": {"every": "1m", "context": "2m", "delay": "1s", **infer},
                "model": {"engine": "builtin", "name": "zscore"},
            }
        )
        return self.put(spec)

    def put(self, spec: Pipeline) -> Pipeline:
        """Store ``spec`` in the shared config store, where every worker reads it."""
        store = self.store()
        try:
            store.put(spec)
        finally:
            store.close()
        return spec

    def checkpoint(self, pipeline_id: str) -> int | None:
        store = self.store()
        try:
            return store.last_end(pipeline_id)
        finally:
            store.close()

    def wait_checkpoint(self, pipeline_id: str, end: int, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            last = self.checkpoint(pipeline_id)
            if last is not None and last >= end:
                return
            time.sleep(0.5)
        pytest.fail(f"{pipeline_id} was not scored up to {end} in {timeout} s:\n{self.logs()}")

    def wait_runs(self, job_ids: list[str], timeout: float = 600) -> list[JobRun]:
        """The run history's rows of ``job_ids`` once every one has ended (in that order)."""
        store = self.store()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                rows = []
                for job_id in job_ids:
                    with suppress(NotFound):
                        rows.append(store.get_run(job_id))
                if len(rows) == len(job_ids) and all(r.ended_at for r in rows):
                    return rows
                time.sleep(0.2)
        finally:
            store.close()
        pytest.fail(f"jobs {job_ids} did not end in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(f"--- {w.log.name}\n{w.logs()}" for w in self.workers)

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.kill_all()


def write_history(tsdb: TsdbServer, metric: str, series: int, *, span: int) -> int:
    """``series`` seasonal series of ``span`` seconds of past points; returns the last time."""
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - span, now + 1, STEP)
    writer = RemoteWriteWriter(tsdb.write_url, flavor=tsdb.flavor)
    try:
        writer.write(as_output(seasonal_panel(series, ts, period=600, metric=metric, seed=3)))
    finally:
        writer.close()
    tsdb.flush()
    return now


@pytest.fixture
def cluster(redis_server: Redis, victoriametrics: TsdbServer, tmp_path: Path) -> Iterator[Cluster]:
    """Workers on the test's Redis prefix against the session's VictoriaMetrics."""
    c = Cluster(tmp_path, victoriametrics, redis_server.url, redis_server.prefix)
    yield c
    c.close()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and of its children that it has waited for (a
    replaced pool process); 0 for a process that has gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # utime, stime, cutime, cstime: fields 14-17 of proc(5), 12-15 after "pid (comm) state"
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def pool_processes(pid: int) -> list[int]:
    """The pool processes of the worker ``pid`` (its children)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
