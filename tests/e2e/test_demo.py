"""The demo as a new user runs it (``scripts/demo.py`` with the project's Python, the set-up
being done): twice in a row, each run on fresh data; stopped by Ctrl-C; a server that exits
early shows why. One inference cycle per run (``--cycles 1``) keeps it to ~40 s a run."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.e2e

DEMO = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
N_SERIES = 8


def argv(tmp_path: Path) -> list[str]:
    work, out = tmp_path / "work", tmp_path / "out"
    return [sys.executable, str(DEMO), "--dir", str(work), "--out", str(out), "--cycles", "1"]


def run_demo(tmp_path: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv(tmp_path), capture_output=True, text=True, timeout=300, check=False, env=env
    )


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def pid_of(tmp_path: Path, name: str) -> int:
    return int((tmp_path / "work" / f"{name}.pid").read_text())


@pytest.fixture
def stop_servers(tmp_path: Path) -> Iterator[None]:
    """The VictoriaMetrics a successful demo leaves running is stopped after the test."""
    yield
    pidfile = tmp_path / "work" / "victoria-metrics.pid"
    if pidfile.exists() and alive(pid := int(pidfile.read_text())):
        os.kill(pid, signal.SIGTERM)


def found(pattern: str, text: str) -> str:
    m = re.search(pattern, text)
    assert m is not None, f"no {pattern!r} in:\n{text}"
    return m.group(1)


def raw_samples(url: str, metric: str) -> int:
    """Every stored sample of ``metric``, duplicates included (the export API does not
    deduplicate, unlike a query)."""
    httpx.get(f"{url}/internal/force_flush", timeout=10).raise_for_status()
    resp = httpx.get(f"{url}/api/v1/export", params={"match[]": metric}, timeout=30)
    resp.raise_for_status()
    return sum(len(json.loads(line)["values"]) for line in resp.text.splitlines())


@pytest.mark.usefixtures("stop_servers")
def test_runs_twice_in_a_row_the_second_on_fresh_data(tmp_path: Path) -> None:
    # A stale pid file naming some other process: the demo must leave that process alone.
    (tmp_path / "work").mkdir()
    bystander = subprocess.Popen(["sleep", "300"])
    (tmp_path / "work" / "victoria-metrics.pid").write_text(f"{bystander.pid}\n")
    try:
        counts: list[int] = []
        pids: list[int] = []
        for _ in range(2):
            proc = run_demo(tmp_path)
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, out
            assert "Traceback" not in out
            assert "2 of 2 injected anomalies found" in out
            assert alive(bystander.pid)
            if pids:
                assert "stopping the victoria-metrics of an earlier run" in out
                assert not alive(pids[-1])
            pids.append(pid_of(tmp_path, "victoria-metrics"))
            points = int(found(r"loaded \d+ series x (\d+) points", out))
            fed = out.count("cycle: wrote")
            url = found(r"VictoriaMetrics on (\S+)", out)
            samples = raw_samples(url, "demo_requests")
            assert samples == N_SERIES * (points + fed), out
            counts.append(samples - N_SERIES * fed)
            assert (tmp_path / "out" / "demo.png").stat().st_size > 0
        assert counts[0] == counts[1]
    finally:
        bystander.kill()
        bystander.wait()


def test_ctrl_c_ends_it_at_once_with_code_130_and_no_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Its own process group, which a terminal's Ctrl-C signals as a whole.
    proc = subprocess.Popen(
        argv(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    out: list[str] = []

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        deadline = time.monotonic() + 180
        while not any("openanomaly run: API on" in line for line in out):
            assert time.monotonic() < deadline, "".join(out)
            out.append(lines.get(timeout=deadline - time.monotonic()))
        service, vm = pid_of(tmp_path, "openanomaly"), pid_of(tmp_path, "victoria-metrics")
        time.sleep(1)  # into the feeder's loop
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join(timeout=10)
    out += list(lines.queue)
    text = "".join(out)
    assert code == 130, text
    assert took < 8, f"took {took:.1f}s"
    assert "Traceback" not in text
    assert "KeyboardInterrupt" not in text
    assert not alive(service)
    assert not alive(vm)


def test_a_server_that_exits_early_shows_the_end_of_its_log(tmp_path: Path) -> None:
    fake = tmp_path / "bin" / "victoria-metrics"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'cannot acquire lock on file /x/flock.lock' >&2\nexit 255\n")
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    proc = run_demo(tmp_path, env)
    assert proc.returncode == 1
    assert "victoria-metrics exited early (code 255)" in proc.stderr
    assert "cannot acquire lock on file /x/flock.lock" in proc.stderr
    assert "Traceback" not in proc.stderr
