"""``kill -9`` of the beat leader, on real processes: two ``openanomaly beat`` and one
``openanomaly worker`` on a real Redis (broker, RedBeat's schedule and lock) and a real
VictoriaMetrics, sharing a SQLite config store, while a feeder adds a point per series every
step. The leader is killed without any clean-up; the standby must take over within the lock
timeout (plus one poll), and afterwards every (output, series, timestamp) from the first score
to the checkpoint must be in the TSDB exactly once, with the values of an undisturbed run of the
same range (``assert_exactly_once`` on the raw samples): no window lost, none written twice.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from tests.cluster_servers import Redis
from tests.e2e.test_cli_detection import oa
from tests.e2e.test_faults import CLI, EVERY, Scenario, scenario
from tests.servers import free_port

pytestmark = pytest.mark.e2e

__all__ = ["scenario"]  # the fixture, imported to be used here

LOCK_TIMEOUT = 5
POLL = 1.0  # a standby tries the lock every second (poll_interval)


@dataclass
class Cluster:
    scenario: Scenario
    redis: Redis
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            **self.scenario.env(),
            "OA_DISPATCHER": "celery",
            "OA_CELERY__BROKER": self.redis.url,
            "OA_CELERY__QUEUE_PREFIX": self.redis.prefix,
            "OA_SCHEDULER": "redbeat",
            "OA_CELERY__BEAT_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
            "OA_PIPELINE_SYNC_EVERY": "2",
        }

    def start(self, name: str, *args: str) -> None:
        self.ports[name] = free_port()
        env = {**self.env(), "OA_HEALTH_PORT": str(self.ports[name])}
        with (self.scenario.tmp / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [str(CLI), *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def role(self, name: str) -> str | None:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.ports[name]}/healthz", timeout=1)
        except httpx.HTTPError:
            return None
        role: str | None = r.json().get("role") if r.status_code == 200 else None
        return role

    def wait_role(self, name: str, role: str, timeout: float, also: str | None = None) -> float:
        began = time.monotonic()
        while self.role(name) not in (role, also):
            self.check_alive()
            if time.monotonic() - began > timeout:
                pytest.fail(f"{name} is not {role} after {timeout}s:\n{self.scenario.logs()}")
            time.sleep(0.1)
        return time.monotonic() - began

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"processes exited: {dead}\n{self.scenario.logs()}"

    def stop(self, name: str) -> int:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail(f"{name} did not stop on SIGTERM:\n{self.scenario.logs()}")


@pytest.fixture
def cluster(scenario: Scenario, redis_server: Redis) -> Iterator[Cluster]:
    c = Cluster(scenario, redis_server)
    yield c
    for name in list(c.procs):
        c.stop(name)


@pytest.mark.parametrize("tsdb", ["victoriametrics"], indirect=True)
def test_kill_9_of_the_beat_leader_loses_no_window_and_repeats_none(cluster: Cluster) -> None:
    s = cluster.scenario
    env = cluster.env()
    oa(env, "pipelines", "apply", str(s.pipelines_file(s.pipeline)))
    oa(env, "train", s.pipeline)  # the windows compared all run on this one model
    cluster.start("worker", "worker", "--concurrency", "1")
    cluster.start("beat1", "beat")
    cluster.start("beat2", "beat")
    for name in ("beat1", "beat2"):  # a loaded machine starts them slowly
        cluster.wait_role(name, "leader", timeout=180, also="standby")
    roles = {cluster.role(name): name for name in ("beat1", "beat2")}
    assert set(roles) == {"leader", "standby"}, roles  # one leader, whatever the start order
    first, second = roles["leader"], roles["standby"]
    s.wait_checkpoint(time.time() + 2 * EVERY)  # scheduled and inferred

    leader = cluster.procs.pop(first)
    leader.send_signal(signal.SIGKILL)  # no clean-up: its lock stays until it expires
    leader.wait()
    killed = time.time()
    took = cluster.wait_role(second, "leader", timeout=LOCK_TIMEOUT + POLL + 5)
    assert took <= LOCK_TIMEOUT + POLL + 1.0, f"the standby took {took:.1f}s to take over"

    s.wait_checkpoint(killed + 3 * EVERY)  # windows after the kill were scheduled
    cluster.check_alive()
    assert cluster.stop(second) == 0
    assert cluster.stop("worker") == 0
    s.verify()
