"""The whole cluster on real servers, as `deploy/compose/cluster.yaml` runs it: VictoriaMetrics,
Redis and PostgreSQL (servers of the test's own, restarted under load), moto's S3, the API, two
workers and two beats, each a real process configured by ``OA_*`` variables only.

A pipeline created through the API and one applied with the CLI are trained (the model lands in
S3) and inferred on the beats' schedule while a feeder adds a point per series every step.
Redis, then PostgreSQL, are restarted under that load; the workers and beats reconnect by
themselves. Afterwards every (output, series, timestamp) of the API's pipeline is in the TSDB
exactly once, with the values of an undisturbed standalone run of the same range, and the run
history shows the jobs.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from openanomaly.adapters.config.sql import SqlStore
from tests.cluster_servers import (
    PrivateServer,
    S3Server,
    start_private_postgres,
    start_private_redis,
)
from tests.e2e.test_cli_detection import oa
from tests.e2e.test_faults import CLI, EVERY, STEP, Scenario, scenario
from tests.faults import SeriesId, duplicates, raw_samples
from tests.servers import WAIT, free_port

pytestmark = pytest.mark.e2e

__all__ = ["scenario"]  # the fixture, imported to be used here


@dataclass
class Cluster:
    scenario: Scenario
    redis: PrivateServer
    postgres: PrivateServer
    s3: S3Server
    bucket: str
    api_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.postgres.port}/postgres"

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **self.scenario.env(),
            "OA_CONFIG_STORE": "postgres",
            "OA_DATABASE_URL": self.database_url,
            "OA_ARTIFACT_STORE": "s3",
            "OA_S3__BUCKET": self.bucket,
            "OA_S3__ENDPOINT_URL": self.s3.endpoint_url,
            "OA_S3__ACCESS_KEY_ID": self.s3.access_key_id,
            "OA_S3__SECRET_ACCESS_KEY": self.s3.secret_access_key,
            "OA_S3__REGION": self.s3.region,
            "OA_DISPATCHER": "celery",
            "OA_CELERY__BROKER": f"redis://127.0.0.1:{self.redis.port}/0",
            "OA_SCHEDULER": "redbeat",
            "OA_CELERY__BEAT_LOCK_TIMEOUT": "5",
            "OA_PIPELINE_SYNC_EVERY": "2",
            "OA_API__PORT": str(self.api_port),
            **extra,
        }

    def start(self, name: str, *args: str) -> None:
        env = self.env(OA_HEALTH_PORT=str(free_port()))
        with (self.scenario.tmp / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(
                [str(CLI), *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def wait_api(self, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api()}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self.check_alive()
            time.sleep(0.3)
        pytest.fail(f"the API did not answer in {timeout}s:\n{self.scenario.logs()}")

    def check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
        assert not dead, f"processes exited: {dead}\n{self.scenario.logs()}"

    def checkpoint(self, pipeline: str) -> int | None:
        store = SqlStore(self.database_url)
        try:
            return store.last_end(pipeline)
        except Exception:  # the server is being restarted: ask again
            return None
        finally:
            store.close()

    def wait_checkpoint(self, pipeline: str, past: float, timeout: float = WAIT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            end = self.checkpoint(pipeline)
            if end is not None and end >= past:
                return
            self.check_alive()
            time.sleep(0.5)
        pytest.fail(
            f"{pipeline}'s checkpoint did not pass {past} in {timeout}s "
            f"(at {self.checkpoint(pipeline)}):\n{self.scenario.logs()}"
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.procs.items():
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail(f"{name} did not stop on SIGTERM:\n{self.scenario.logs()}")


def pipeline_body(pipeline: str, metric: str) -> dict[str, object]:
    return {
        "id": pipeline,
        "query": metric,
        "step": f"{STEP}s",
        "train": {"window": "15m", "every": "1d"},
        "infer": {"every": f"{EVERY}s", "context": "2m", "delay": "4s", "max_catchup": "5m"},
        "model": {"engine": "builtin", "name": "profile"},
    }


@pytest.fixture
def cluster(scenario: Scenario, s3_server: S3Server, tmp_path: Path) -> Iterator[Cluster]:
    redis = start_private_redis(tmp_path / "redis")
    postgres = start_private_postgres(tmp_path / "postgres")
    c = Cluster(scenario, redis, postgres, s3_server, s3_server.bucket())
    try:
        c.start("api", "api")
        for i in (1, 2):
            c.start(f"worker{i}", "worker", "--concurrency", "1")
            c.start(f"beat{i}", "beat")
        c.wait_api()
        yield c
    finally:
        c.stop()
        redis.stop()
        postgres.stop(remove=True)


@pytest.mark.parametrize("tsdb", ["victoriametrics"], indirect=True)
def test_the_cluster_schedules_trains_infers_and_survives_redis_and_postgres_restarts(
    cluster: Cluster,
) -> None:
    s = cluster.scenario
    first = s.pipeline
    r = httpx.put(
        f"{cluster.api()}/api/v1/pipelines/{first}", json=pipeline_body(first, s.metric), timeout=30
    )
    assert r.status_code == 200, r.text
    cluster.wait_checkpoint(first, time.time() + EVERY)

    cluster.redis.restart(down=2)  # the broker and RedBeat's lock: workers and beats reconnect
    cluster.wait_checkpoint(first, time.time() + 2 * EVERY)
    cluster.postgres.restart(down=2)  # the config store, checkpoints and leases
    cluster.wait_checkpoint(first, time.time() + 2 * EVERY)

    second = f"{first}-cli"
    spec = s.tmp / "second.yaml"
    spec.write_text(s.pipelines_file(second).read_text().replace("zscore", "profile"))
    oa(cluster.env(), "pipelines", "apply", str(spec))
    cluster.wait_checkpoint(second, time.time() + EVERY)
    cluster.check_alive()

    jobs = httpx.get(f"{cluster.api()}/api/v1/jobs", params={"pipeline": first}, timeout=30)
    assert jobs.status_code == 200, jobs.text
    kinds = {(j["kind"], j["status"]) for j in jobs.json()}
    assert {("train", "ok"), ("infer", "ok")} <= kinds, kinds
    objects = cluster.s3.client().list_objects_v2(Bucket=cluster.bucket).get("Contents", [])
    assert objects, "no model artifact in S3"
    cluster.stop()

    # One undisturbed recovery run completes a window cut off by the stop. Then every input
    # point from the first score to the checkpoint has one score, and no output sample is
    # stored twice.
    oa(cluster.env(OA_DISPATCHER="threads", OA_SCHEDULER="apscheduler"), "infer", first)
    end = cluster.checkpoint(first)
    assert end is not None
    written = raw_samples(s.tsdb, first, 0, end + 3600)
    assert not duplicates(written), f"samples stored twice: {duplicates(written)}"
    scores = {k[1]: {t for t, _ in v} for k, v in written.items() if k[0] == "anomaly_score"}
    start = min(min(ts) for ts in scores.values())
    inputs = input_timestamps(s, start, end)
    assert set(scores) == set(inputs), "not every series was scored"
    lost = {k: sorted(inputs[k] - v)[:5] for k, v in scores.items() if inputs[k] - v}
    assert not lost, f"input points left without a score: {lost}"
    assert sum(len(v) for v in scores.values()) > 10 * len(scores)


def input_timestamps(s: Scenario, start: int, end: int) -> dict[SeriesId, set[int]]:
    """The timestamps of the pipeline's input points in ``[start, end]``, per series (labels as
    the outputs carry them: ``source_metric`` for ``__name__``)."""
    s.tsdb.flush()
    r = httpx.post(
        f"{s.tsdb.url}/api/v1/export",
        data={"match[]": s.metric, "start": str(start), "end": str(end)},
        timeout=60,
    )
    r.raise_for_status()
    out: dict[SeriesId, set[int]] = {}
    for line in r.text.splitlines():
        item = json.loads(line)
        labels = {k: v for k, v in item["metric"].items() if k != "__name__"}
        labels["source_metric"] = item["metric"]["__name__"]
        out[tuple(sorted(labels.items()))] = {int(t) // 1000 for t in item["timestamps"]}
    return out
