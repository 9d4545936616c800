"""Bad input and shutdown through the real command: every bad-input case ends with a clear
message and no traceback; `openanomaly run` with bad pipelines beside a good one serves the good
one against a real VictoriaMetrics; SIGTERM does not drain the backlog."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from openanomaly.adapters.config.sql import SqlStore
from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.spec import Pipeline
from openanomaly.synthetic import as_output, seasonal_panel
from tests.e2e.test_cli_detection import oa
from tests.servers import TsdbServer, free_port

pytestmark = pytest.mark.e2e
STEP = 5
CLI = Path(sys.executable).parent / "openanomaly"


def env_for(tmp_path: Path, tsdb_url: str = "http://127.0.0.1:9", **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("OA_")},
        "OA_TSDB__URL": tsdb_url,
        "OA_DATABASE_URL": f"sqlite:///{tmp_path / 'oa.db'}",
        "OA_ARTIFACTS_DIR": str(tmp_path / "artifacts"),
        **extra,
    }


def clean_failure(proc: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc.stderr


BAD_FILE = """
pipelines:
  - id: good
    query: up
  - id: bad
    query: up
    model: {engine: nosuch}
    train: {cron: "99 * * * *"}
"""


def test_bad_input_on_the_command_line_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(textwrap.dedent(BAD_FILE).lstrip())
    env = env_for(tmp_path)

    err = clean_failure(oa(env, "validate", str(bad), check=False), code=1)
    assert f"{bad}:6: pipelines[1].model.engine: unknown engine 'nosuch'; known: " in err
    assert f"{bad}:7: pipelines[1].train.cron: minute: '99' is out of range 0-59" in err

    err = clean_failure(oa(env, "pipelines", "apply", str(bad), check=False))
    assert "unknown engine 'nosuch'" in err
    assert "good" not in oa(env, "pipelines", "list").stdout  # all or nothing

    good = tmp_path / "good.yaml"
    good.write_text("pipelines:\n  - {id: good, query: up, step: 1m}\n")
    oa(env, "pipelines", "apply", str(good))
    for command in ("infer", "backtest"):
        err = clean_failure(oa(env, command, "good", "--from", "2000-01-01", check=False))
        assert "more than the limit of 500,000" in err


def test_settings_work_without_the_database_and_a_missing_driver_is_named(
    tmp_path: Path,
) -> None:
    # pg8000: a PostgreSQL driver SQLAlchemy knows that this environment does not install
    env = env_for(tmp_path, OA_DATABASE_URL="postgresql+pg8000://oa:hunter2@127.0.0.1:1/oa")

    shown = oa(env, "settings")
    assert "oa:***@127.0.0.1" in shown.stdout and "hunter2" not in shown.stdout

    err = clean_failure(oa(env, "pipelines", "list", check=False))
    assert "pg8000" in err and "openanomaly[postgres]" in err and "hunter2" not in err


def test_a_mistyped_url_scheme_does_not_echo_the_credentials(tmp_path: Path) -> None:
    env = env_for(tmp_path, OA_TSDB__URL="htp://user:hunter2@127.0.0.1:9")

    err = clean_failure(oa(env, "pipelines", "list", check=False))
    assert "tsdb.url (OA_TSDB__URL)" in err and "hunter2" not in err


# -- the service ---------------------------------------------------------------------------------


def start_service(
    env: dict[str, str], log: Path, *args: str
) -> tuple[subprocess.Popen[bytes], str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(CLI), "run", *args], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{env['OA_API__PORT']}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the service did not come up:\n{log.read_text()}")


def test_bad_pipelines_beside_a_good_one_do_not_stop_the_service(
    victoriametrics: TsdbServer, tmp_path: Path
) -> None:
    metric = f"iso_{uuid.uuid4().hex[:10]}"
    now = int(time.time()) // STEP * STEP
    ts = np.arange(now - 3600, now + 1, STEP)
    writer = RemoteWriteWriter(victoriametrics.write_url, flavor="victoriametrics")
    try:
        writer.write(as_output(seasonal_panel(2, ts, period=600, metric=metric, seed=5)))
    finally:
        writer.close()
    victoriametrics.flush()
    common = {
        "step": f"{STEP}s",
        "train": {"window": "40m"},
        "infer": {"every": f"{STEP}s", "context": "10m", "delay": "1s", "max_catchup": "2m"},
        "model": {"name": "profile", "params": {"season": "10m"}},
    }
    good = {"id": "good", "query": metric, **common}
    pipelines = [
        good,
        {**good, "id": "no-engine", "model": {"engine": "nosuch"}},  # refused when applied
        {**good, "id": "bad-query", "query": f"sum({metric}"},  # refused by the TSDB at run time
    ]
    file = tmp_path / "pipelines.yaml"
    file.write_text(json.dumps({"pipelines": pipelines}))
    # Stored by an older release that did not check cron ranges: the scheduler refuses it.
    store = SqlStore(f"sqlite:///{tmp_path / 'oa.db'}")
    store.put(Pipeline.model_validate({**good, "id": "bad-cron", "train": {"cron": "99 * * * *"}}))
    store.close()
    env = env_for(
        tmp_path,
        victoriametrics.url,
        OA_TSDB__FLAVOR="victoriametrics",
        OA_API__PORT=str(free_port()),
    )
    log = tmp_path / "service.log"

    proc, url = start_service(env, log, "--pipelines", str(file))
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            metrics = httpx.get(f"{url}/metrics").text
            if 'kind="infer",pipeline="good",status="ok"' in metrics and (
                'openanomaly_pipeline_broken{pipeline="bad-query"} 1.0' in metrics
            ):
                break
            time.sleep(1)
        else:
            pytest.fail(f"no good inference or no broken pipeline:\n{log.read_text()[-4000:]}")
        assert 'openanomaly_pipeline_broken{pipeline="bad-cron"} 1.0' in metrics
        assert 'openanomaly_pipeline_broken{pipeline="good"} 0.0' in metrics
        status = httpx.get(f"{url}/api/v1/pipelines/bad-query/status").json()
        assert "bad_data" in status["broken"] or "parse" in status["broken"], status
        victoriametrics.flush()
        reader = PrometheusReader(victoriametrics.url)
        try:
            scores = reader.query_range(
                'anomaly_score{pipeline="good"}', now - 300, int(time.time()), STEP
            )
        finally:
            reader.close()
        assert len(scores) == 2
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert "pipeline no-engine not applied" in text and "unknown engine 'nosuch'" in text
    assert "pipeline=bad-cron not scheduled" in text
    assert "Traceback" not in text


class SlowTsdb:
    """A TSDB that takes ``delay`` seconds per query (an empty matrix) and counts requests
    received and answered, so that a test sees whether one was cut off."""

    def __init__(self, delay: float) -> None:
        self.received = self.answered = 0
        lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                with lock:
                    owner.received += 1
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay)
                body = b'{"status":"success","data":{"resultType":"matrix","result":[]}}'
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                with lock:
                    owner.answered += 1

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def slow_tsdb() -> Iterator[SlowTsdb]:
    server = SlowTsdb(delay=1.0)
    yield server
    server.close()


def test_sigterm_leaves_the_backlog_to_the_checkpoint(slow_tsdb: SlowTsdb, tmp_path: Path) -> None:
    grace = 3
    pipelines = [
        # One read per job (a short train window): requests count jobs.
        {"id": f"p{i:02d}", "query": f"m{i}", "step": "5s", "train": {"window": "1m"}}
        for i in range(30)
    ]
    file = tmp_path / "pipelines.yaml"
    file.write_text(json.dumps({"pipelines": pipelines}))
    env = env_for(
        tmp_path,
        slow_tsdb.url,
        OA_API__PORT=str(free_port()),
        OA_WORKERS="1",
        OA_SHUTDOWN_GRACE=str(grace),
    )
    log = tmp_path / "service.log"
    proc, _ = start_service(env, log, "--pipelines", str(file))
    deadline = time.monotonic() + 30
    while slow_tsdb.received < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert slow_tsdb.received >= 2, log.read_text()  # 30+ jobs of >= 1 s each are queued

    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=60)
    took = time.monotonic() - began

    text = log.read_text()
    assert code == 0, text
    assert took < grace + 2, f"{took:.1f}s:\n{text[-3000:]}"
    assert "queued jobs left to the checkpoint" in text
    assert slow_tsdb.answered == slow_tsdb.received  # the job in flight was not cut off
    assert slow_tsdb.received < 10  # not the 30+ jobs of the backlog
