"""The OpenAnomaly demo: a local VictoriaMetrics, series with known anomalies, the standalone
service running for a few cycles, and the anomalies found (a PromQL query and a PNG plot).

Run it with ``scripts/demo`` (which installs what it needs first), or once set up with
``uv run python scripts/demo.py [--cycles N] [--dir DIR] [--out DIR]``:

  --cycles N  the inference cycles to wait for (default 4, about 1.5 minutes in all; the
              tests use 1: the first cycle already scores the injected anomalies)
  --dir DIR   the working directory: data, logs and pid files (default .demo); each run
              removes what the previous one left there
  --out DIR   where the plot goes (default demo-out)

Every run starts from fresh data: it first stops the VictoriaMetrics (and the service) that an
earlier run left, found by the pid files in DIR, and only when that pid still is a
victoria-metrics serving DIR's data (a pid is reused once its process is gone). VictoriaMetrics
keeps running after a successful run, for the results to be explored. Ctrl-C stops the feeder,
the service and VictoriaMetrics and exits with code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import FrameType

import httpx
import numpy as np

from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.timeparse import iso
from openanomaly.plot import plot_scored
from openanomaly.synthetic import as_output, inject, seasonal_panel

ROOT = Path(__file__).resolve().parent.parent
STEP = 15
N_SERIES = 8
PHASE = 300  # where in its hourly season the demo's last point lies
SCORES = "max_over_time(anomaly_score[30m])"
LEFT = [
    "vmdata",
    "artifacts",
    "oa.db",
    "oa.db-wal",
    "oa.db-shm",
    "pipelines.yaml",
    *(f"{name}.{ext}" for name in ("victoria-metrics", "openanomaly") for ext in ("log", "pid")),
]
"""What a run leaves in its working directory."""

PIPELINES = f"""\
pipelines:
  - id: demo
    query: demo_requests
    step: {STEP}s
    train: {{window: 5h, every: 1h}}
    infer: {{every: {STEP}s, context: 1h, delay: 1s, max_catchup: 20m}}
    model: {{engine: builtin, name: profile, params: {{season: 1h}}}}
    scoring: {{direction: both, interval: 0.999}}
    outputs: {{labels: {{team: demo}}}}
"""


class DemoError(Exception):
    """The demo cannot go on; the message says why."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=4, help="inference cycles to wait for")
    parser.add_argument("--dir", type=Path, default=ROOT / ".demo", help="working directory")
    parser.add_argument("--out", type=Path, default=ROOT / "demo-out", help="plot directory")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        return run(args.dir.resolve(), args.out.resolve(), args.cycles)
    except DemoError as e:
        print(f"demo failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the service and VictoriaMetrics are stopped", file=sys.stderr)
        return 130


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Once: a second Ctrl-C must not break off the stopping of the servers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def run(work: Path, out: Path, cycles: int) -> int:
    data, pipelines = work / "vmdata", work / "pipelines.yaml"
    stop_previous(work / "openanomaly.pid", "openanomaly", str(pipelines))
    stop_previous(work / "victoria-metrics.pid", "victoria-metrics", f"-storageDataPath={data}")
    clear(work)
    running: list[tuple[subprocess.Popen[bytes], signal.Signals]] = []
    try:
        vm, url = start_victoriametrics(work, data)
        running.append((vm, signal.SIGTERM))
        writer, panel, now, injected = load(url)
        pipelines.write_text(PIPELINES)
        service, api = start_service(work, url, pipelines)
        running.append((service, signal.SIGINT))
        log = work / "openanomaly.log"
        print(f"openanomaly run: API on {api}, log in {log}")
        feed_live(
            writer, panel, now, api, running=lambda: check_running(service, log), cycles=cycles
        )
        stop(service, signal.SIGINT)
        code = report(url, injected, out)
        running.remove((vm, signal.SIGTERM))
    finally:
        # The service first: it must not be left retrying against a stopped TSDB.
        for proc, sig in reversed(running):
            stop(proc, sig)
    print(f"\nVictoriaMetrics keeps running at {url} for you to explore (stop it: kill {vm.pid}).")
    return code


def clear(work: Path) -> None:
    """Remove what an earlier run left in ``work``, and only that: DIR may be any directory."""
    work.mkdir(parents=True, exist_ok=True)
    for name in LEFT:
        path = work / name
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def start_victoriametrics(work: Path, data: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [
        "victoria-metrics",
        f"-httpListenAddr=127.0.0.1:{port}",
        f"-storageDataPath={data}",
        "-retentionPeriod=100y",
        "-search.latencyOffset=0s",
        "-search.disableCache",
    ]
    vm = start(work, "victoria-metrics", argv)
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", vm, work / "victoria-metrics.log")
    print(f"VictoriaMetrics on {url}")
    return vm, url


def load(url: str) -> tuple[RemoteWriteWriter, SeriesBatch, int, dict[str, str]]:
    """Write 6 hours of series with two known anomalies, up to now; return the writer, the
    series, now, and the injected anomalies by instance."""
    now = int(time.time()) // STEP * STEP
    history_ts = np.arange(now - 6 * 3600, now + 1, STEP)
    n = history_ts.size
    # The same series every run, whatever the clock: the hourly shape is generated as if it
    # were always PHASE seconds into the hour now, so the anomalies land at the same phase.
    shape = seasonal_panel(
        N_SERIES, history_ts - now + PHASE, period=3600, metric="demo_requests", seed=7
    )
    panel = SeriesBatch(shape.labels, history_ts, shape.values)
    # A spike 6 minutes ago on host-00002; a level shift from 10 to 4 minutes ago on -00005.
    spike, shift = (2, n - 1 - 360 // STEP), (5, n - 1 - 600 // STEP, n - 1 - 240 // STEP)
    panel, _ = inject(panel, spikes=[spike], shifts=[shift])
    at = [iso(t) for t in history_ts[[spike[1], shift[1], shift[2]]]]
    injected = {
        panel.labels[spike[0]]["instance"]: f"a spike at {at[0]}",
        panel.labels[shift[0]]["instance"]: f"a level shift from {at[1]} to {at[2]}",
    }
    writer = RemoteWriteWriter(f"{url}/api/v1/write", flavor="victoriametrics")
    writer.write(as_output(panel))
    print(
        f"loaded {N_SERIES} series x {n} points (6h to {iso(now)}, step {STEP}s)"
        f" with {len(injected)} known anomalies"
    )
    return writer, panel, now, injected


def start_service(work: Path, url: str, pipelines: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        # the user's own OA_* settings (another store, another TSDB) are not the demo's
        **{k: v for k, v in os.environ.items() if not k.startswith("OA_")},
        "OA_TSDB__URL": url,
        "OA_TSDB__FLAVOR": "victoriametrics",
        "OA_DATABASE_URL": f"sqlite:///{work / 'oa.db'}",
        "OA_ARTIFACTS_DIR": str(work / "artifacts"),
        "OA_API__PORT": str(port),
    }
    cli = Path(sys.executable).parent / "openanomaly"
    service = start(work, "openanomaly", [str(cli), "run", "--pipelines", str(pipelines)], env)
    api = f"http://127.0.0.1:{port}"
    wait_http(f"{api}/healthz", service, work / "openanomaly.log")
    return service, api


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(
    work: Path, name: str, argv: list[str], env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start a server logging to ``work/<name>.log``, its pid in ``work/<name>.pid``. In a
    session of its own: a Ctrl-C reaches the demo only, which stops the service before the
    TSDB that it writes to."""
    with (work / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (work / f"{name}.pid").write_text(f"{proc.pid}\n")
    return proc


def stop(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float = 15) -> None:
    proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def stop_previous(pidfile: Path, program: str, marker: str) -> None:
    """Stop the ``program`` that an earlier run left, when the pid in ``pidfile`` still is a
    ``program`` with ``marker`` among its arguments, and wait until it is gone."""
    try:
        pid = int(pidfile.read_text())
    except (OSError, ValueError):
        return
    if not is_ours(pid, program, marker):
        return
    print(f"stopping the {program} of an earlier run (pid {pid})")
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while is_ours(pid, program, marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not is_ours(pid, program, marker):
            return
    raise DemoError(f"{program} (pid {pid}) of an earlier run does not stop")


def is_ours(pid: int, program: str, marker: str) -> bool:
    """Whether ``pid`` is a live ``program`` (the executable or the script run) with
    ``marker`` among its arguments."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
            return False  # exited, not yet reaped by its parent
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return any(Path(a).name == program for a in argv[:2]) and marker in argv


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_running(proc, log)
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise DemoError(f"{log.stem} not ready after {timeout}s; the end of {log}:\n{tail(log)}")


def check_running(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is not None:
        raise DemoError(
            f"{log.stem} exited early (code {proc.returncode}); the end of {log}:\n{tail(log)}"
        )


def tail(log: Path, lines: int = 15) -> str:
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n".join(f"  | {line}" for line in text)


def infer_runs(api: str) -> int:
    text = httpx.get(f"{api}/metrics", timeout=5).text
    m = re.search(r'openanomaly_jobs_total\{kind="infer",pipeline="demo",status="ok"\} (\S+)', text)
    return int(float(m.group(1))) if m else 0


def feed_live(
    writer: RemoteWriteWriter,
    panel: SeriesBatch,
    now: int,
    api: str,
    *,
    running: Callable[[], None],
    cycles: int,
) -> None:
    """Write one new normal point per step, as a scrape would, until the service has run
    ``cycles`` inference cycles on them; ``running()`` raises once the service is gone."""
    rng = np.random.default_rng(1)
    base = panel.values[:, -1 - 3600 // STEP]  # same phase one season ago
    t = now
    while infer_runs(api) < cycles:
        t += STEP
        time.sleep(max(0.0, t + 1 - time.time()))
        running()
        values = base * (1 + 0.03 * rng.standard_normal(base.size))
        writer.write(as_output(SeriesBatch(panel.labels, np.array([t]), values[:, None])))
        print(f"  cycle: wrote {iso(t)}, inference runs so far: {infer_runs(api)}")


def report(url: str, injected: Mapping[str, str], out: Path) -> int:
    query = f"{SCORES} > 1"
    print(f"\nAnomalies found (PromQL: {query}):")
    print(f"  curl -s '{url}/api/v1/query' --data-urlencode 'query={query}'")
    body = httpx.post(f"{url}/api/v1/query", data={"query": SCORES}, timeout=10).json()
    peaks = {r["metric"].get("instance", "?"): float(r["value"][1]) for r in body["data"]["result"]}
    lines, found_all = verdicts(peaks, injected)
    print("\n".join(lines))
    reader = PrometheusReader(url)
    end = int(time.time())
    start = end - 3600
    actual = reader.query_range("demo_requests", start, end, STEP)
    parts = {
        name: reader.query_range(f'{name}{{pipeline="demo"}}', start, end, STEP)
        for name in ("anomaly_score", "anomaly_pred", "anomaly_lower", "anomaly_upper")
    }
    scored = Scored(*(align_rows(actual, parts[n]) for n in parts))
    png = plot_scored(actual, scored, out / "demo.png", title="OpenAnomaly demo: the last hour")
    print(f"\nPlot: {png}")
    return 0 if found_all else 1


def verdicts(peaks: Mapping[str, float], injected: Mapping[str, str]) -> tuple[list[str], bool]:
    """A line per series that was flagged (peak score > 1) or injected, the injected first,
    saying which flagged series were injected and which are false positives; then a summary.
    Also whether every injected anomaly was found."""
    flagged = {s for s, peak in peaks.items() if peak > 1}
    lines = []
    for s in sorted(flagged | set(injected), key=lambda s: (s not in injected, s)):
        score = f"peak score {peaks[s]:.3f}" if s in peaks else "no score"
        if s not in injected:
            verdict = "false positive: nothing was injected"
        elif s in flagged:
            verdict = f"found: injected {injected[s]}"
        else:
            verdict = f"MISSED: injected {injected[s]}"
        lines.append(f"  {s}  {score:<17} {verdict}")
    missed = sorted(set(injected) - flagged)
    false = len(flagged - set(injected))
    found = f"{len(injected) - len(missed)} of {len(injected)} injected anomalies found"
    lines.append(f"{found}, {false} false positive{'s' if false != 1 else ''}.")
    return lines, not missed


def align_rows(actual: SeriesBatch, written: SeriesBatch) -> np.ndarray:
    """The written series' values in the rows and columns of ``actual`` (by instance)."""
    out = np.full(actual.values.shape, np.nan)
    rows = {lb["instance"]: i for i, lb in enumerate(actual.labels)}
    cols = np.searchsorted(actual.timestamps, written.timestamps)
    for lb, values in zip(written.labels, written.values, strict=True):
        out[rows[lb["instance"]], cols] = values
    return out


if __name__ == "__main__":
    sys.exit(main())
