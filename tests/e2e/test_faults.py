"""Exactly once under faults, on real Prometheus and VictoriaMetrics.

Each scenario runs the standalone service (``openanomaly run``, a real process) on a pipeline
while a feeder writes one new point per series every step, as a scrape would, and disturbs it:
``kill -9`` at random points of its cycles, a proxy that delays, drops and refuses requests,
two service processes on one database. Afterwards the raw samples of the disturbed pipeline are
read back (duplicates included) and compared with those of an undisturbed twin pipeline (same
query and model, another id) that scores the same range with ``openanomaly infer --from --to``:
every (output, series, timestamp) must be there exactly once, with the same value.

The range compared starts at the disturbed pipeline's first written sample (windows before it
were never begun: the pipeline simply started later) and ends at its checkpoint after one
undisturbed recovery run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.series import SeriesBatch
from openanomaly.synthetic import as_output, seasonal_panel
from tests.e2e.test_cli_detection import oa
from tests.faults import Fault, FaultProxy, assert_exactly_once, raw_samples
from tests.servers import WAIT, TsdbServer, free_port

pytestmark = pytest.mark.e2e

STEP = 5
EVERY = 10
SERIES = 12
HISTORY = 20 * 60  # Prometheus refuses samples older than about 1h behind its newest one
CLI = Path(sys.executable).parent / "openanomaly"


@dataclass
class Scenario:
    tsdb: TsdbServer
    tmp: Path
    metric: str
    pipeline: str
    started: list[subprocess.Popen[bytes]] = field(default_factory=list, repr=False)

    def env(self, *, db: str = "oa.db", tsdb_url: str | None = None) -> dict[str, str]:
        return {
            **{k: v for k, v in os.environ.items() if not k.startswith("OA_")},
            "OA_TSDB__URL": tsdb_url or self.tsdb.url,
            "OA_TSDB__FLAVOR": self.tsdb.flavor,
            "OA_DATABASE_URL": f"sqlite:///{self.tmp / db}",
            "OA_ARTIFACTS_DIR": str(self.tmp / "artifacts"),
            # Small write batches: a window's outputs take several requests, so a kill or a
            # fault can fall between two of them.
            "OA_TSDB__WRITE_BATCH_SAMPLES": "40",
            "OA_API__PORT": str(free_port()),
        }

    def pipelines_file(self, pipeline: str) -> Path:
        path = self.tmp / f"{pipeline}.yaml"
        path.write_text(
            "pipelines:\n"
            f"  - id: {pipeline}\n"
            f"    query: {self.metric}\n"
            f"    step: {STEP}s\n"
            "    train: {window: 15m, every: 1d}\n"
            f"    infer: {{every: {EVERY}s, context: 2m, delay: 4s, max_catchup: 5m}}\n"
            "    model: {engine: builtin, name: zscore}\n"
        )
        return path

    def start(self, env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        with (self.tmp / log).open("ab") as out:
            proc = subprocess.Popen(
                [str(CLI), "run", "--pipelines", str(self.pipelines_file(self.pipeline))],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.started.append(proc)
        return proc

    def kill_leftovers(self) -> None:
        """A test that failed half-way leaves its service running: kill it, or it writes into the
        next test's time and warns there."""
        for proc in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    def checkpoint(self, db: str = "oa.db") -> int:
        store = SqlStore(f"sqlite:///{self.tmp / db}")
        try:
            end = store.last_end(self.pipeline)
        finally:
            store.close()
        assert end is not None, self.logs()
        return end

    def wait_checkpoint(self, past: float, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.tmp.joinpath("oa.db").exists():
                store = SqlStore(f"sqlite:///{self.tmp / 'oa.db'}")
                try:
                    end = store.last_end(self.pipeline)
                finally:
                    store.close()
                if end is not None and end >= past:
                    return
            time.sleep(0.5)
        pytest.fail(f"the checkpoint did not pass {past} in {timeout}s:\n{self.logs()}")

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.tmp.glob("*.log"))

    def verify(self) -> None:
        """Recover, then compare the disturbed pipeline's samples with its undisturbed twin's.

        A window cut off by the last disturbance is journalled: an undisturbed run of the same
        pipeline (``openanomaly infer``) must complete it without re-sending what is stored.
        """
        oa(self.env(), "infer", self.pipeline)
        end = self.checkpoint()
        written = raw_samples(self.tsdb, self.pipeline, 0, end + 3600)
        assert written, f"nothing was written:\n{self.logs()}"
        beyond = {k: [t for t, _ in v if t > end] for k, v in written.items()}
        assert not any(beyond.values()), "samples past the checkpoint after a recovery run"
        first = min(t for points in written.values() for t, _ in points)
        start = first - STEP  # windows are (start, end]
        twin = f"{self.pipeline}-twin"
        env = self.env(db="twin.db")
        oa(env, "pipelines", "apply", str(self.pipelines_file(twin)))
        oa(env, "infer", twin, "--from", str(start), "--to", str(end))
        reference = raw_samples(self.tsdb, twin, start, end)
        assert_exactly_once(written, reference)


@pytest.fixture
def scenario(tsdb: TsdbServer, tmp_path: Path) -> Iterator[Scenario]:
    """A metric with ``HISTORY`` of past points and a feeder adding one point per step."""
    metric = f"faults_{uuid.uuid4().hex[:10]}"
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - HISTORY, now + 600, STEP)
    panel = seasonal_panel(SERIES, ts, period=600, metric=metric, seed=5)
    writer = RemoteWriteWriter(tsdb.write_url, flavor=tsdb.flavor)
    past = ts <= now
    writer.write(as_output(SeriesBatch(panel.labels, ts[past], panel.values[:, past])))
    stop = threading.Event()

    def feed() -> None:
        for j in np.flatnonzero(~past):
            if stop.wait(max(0.0, ts[j] - time.time())):
                return
            column = SeriesBatch(panel.labels, ts[j : j + 1], panel.values[:, j : j + 1])
            writer.write(as_output(column))

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    s = Scenario(tsdb, tmp_path, metric, metric.replace("_", "-"))
    yield s
    s.kill_leftovers()
    stop.set()
    feeder.join(timeout=10)
    writer.close()


def stop_gracefully(proc: subprocess.Popen[bytes], scenario: Scenario) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the service did not stop on SIGTERM:\n{scenario.logs()}")
    assert code == 0, scenario.logs()


def test_kill_9_at_random_points_writes_every_sample_once(scenario: Scenario) -> None:
    rng = random.Random(7)
    env = scenario.env()
    for _ in range(4):
        proc = scenario.start(env, "run.log")
        time.sleep(rng.uniform(0.5, 4.0))
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait()
    proc = scenario.start(env, "run.log")
    scenario.wait_checkpoint(time.time() + 2 * EVERY)
    stop_gracefully(proc, scenario)
    scenario.verify()


def test_faulty_network_to_the_tsdb_writes_every_sample_once(scenario: Scenario) -> None:
    def rule(index: int, method: str, path: str) -> Fault | None:
        if index >= 40:
            return None  # a bad spell, then a healthy network: the service must catch up
        if path.endswith("/write"):
            if index % 7 == 3:
                return Fault(status=500)
            if index % 11 == 5:
                return Fault(drop=True, after=True)  # stored, but the answer is lost
            if index % 13 == 6:
                return Fault(status=429, headers={"Retry-After": "1"})
        elif index % 9 == 4:
            return Fault(delay=EVERY * 1.5)  # a read slower than a cycle
        elif index % 17 == 8:
            return Fault(drop=True)
        return None

    proxy = FaultProxy(scenario.tsdb.url, rule)
    try:
        proc = scenario.start(scenario.env(tsdb_url=proxy.url), "run.log")
        scenario.wait_checkpoint(time.time() + 2 * EVERY)
        stop_gracefully(proc, scenario)
    finally:
        proxy.close()
    kinds = {(route.rsplit("/", 1)[-1], f.status, f.drop) for route, f in proxy.faults}
    assert ("write", 500, False) in kinds and ("write", None, True) in kinds, kinds
    scenario.verify()


@pytest.mark.parametrize("tsdb", ["victoriametrics"], indirect=True)
def test_two_services_on_one_database_write_every_sample_once(scenario: Scenario) -> None:
    # The lease keeps the two apart whatever the TSDB: one flavor suffices (the TSDB that
    # would store both copies).
    first = scenario.start(scenario.env(), "first.log")
    second = scenario.start(scenario.env(), "second.log")
    try:
        scenario.wait_checkpoint(time.time() + 2 * EVERY)
    finally:
        for proc in (first, second):
            stop_gracefully(proc, scenario)
    scenario.verify()
