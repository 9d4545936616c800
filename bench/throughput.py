"""Throughput and memory of inference cycles and of a training, against a real VictoriaMetrics.

For N synthetic series (step 1m, a 24-minute season) the built-in profile is trained once, then
inference cycles are timed: read the new point plus a 60-point context by PromQL, forecast,
score, remote-write the four output series. Next to the cycle it measures, in the same run, the
bare I/O floor: the raw ``query_range`` answer fetched (bytes, not decoded) and the cycle's
remote-write bodies posted again (already encoded). Each scenario runs in its own process, so
its peak RSS (VmHWM, reset after the training for the cycle figure) is its own.

The training scenario fits 20k series that hold 2 hours of data on the default 7-day window
(1m steps), next to the same training on a 2-hour window: memory follows the data that exists.

    uv run python -m bench.throughput                       # 1k, 10k, 100k cycles; the training
    uv run python -m bench.throughput --series 100000 --train-series 0
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tests.servers import start_victoriametrics

from openanomaly.adapters.memory import MemoryArtifactStore, MemoryPipelineStore, MemoryRegistry
from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import HEADERS, RemoteWriteWriter
from openanomaly.bootstrap import Container, bootstrap
from openanomaly.domain.records import InferResult, InferWindow
from openanomaly.domain.spec import Pipeline
from openanomaly.settings import Settings
from openanomaly.synthetic import as_output, seasonal_panel

STEP = 60
HISTORY = 3 * 3600  # the cycle scenarios: 2h to train on, then the cycles
PERIOD = 24 * STEP
CONTEXT = 60
TRAIN_DATA = 2 * 3600  # the training scenario: 2 hours of data ...
TRAIN_WINDOW = 7 * 86400  # ... under the default 7-day window


# --- measuring one process -------------------------------------------------------------------


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (``VmHWM``: peak resident set,
    ``VmRSS``: resident set now) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak_rss() -> bool:
    """Give freed memory back to the OS and restart VmHWM from the current RSS (Linux >= 4.0);
    False where that is not allowed (then the peak includes what came before)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class BodyRecorder:
    """An httpx request hook keeping the remote-write bodies of the last cycle."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> None:
        if str(request.url) == self.url:
            self.bodies.append(request.content)


def io_floor(
    url: str, form: dict[str, str], bodies: list[bytes], repeats: int = 3
) -> dict[str, float]:
    """Seconds to fetch the raw answer of ``form`` and to post ``bodies`` as they are (medians)."""
    fetch, post = [], []
    with httpx.Client(timeout=120.0) as client:
        for _ in range(repeats):
            began = time.perf_counter()
            answer = client.post(f"{url}/api/v1/query_range", data=form)
            answer.raise_for_status()
            fetch.append(time.perf_counter() - began)
            began = time.perf_counter()
            for body in bodies:
                client.post(f"{url}/api/v1/write", content=body, headers=HEADERS).raise_for_status()
            post.append(time.perf_counter() - began)
    return {"fetch": statistics.median(fetch), "post": statistics.median(post)}


# --- the scenarios (each in its own process) ---------------------------------------------------


def load(url: str, metric: str, n: int, start: int, end: int) -> None:
    ts = np.arange(start, end + 1, STEP)
    panel = seasonal_panel(n, ts, period=PERIOD, metric=metric, seed=n)
    began = time.perf_counter()
    writer = RemoteWriteWriter(f"{url}/api/v1/write", flavor="victoriametrics")
    sent = 0
    for rows in np.array_split(np.arange(n), max(1, n // 10_000)):  # bounded memory
        sent += writer.write(as_output(panel.take(rows)))
    print(f"  loaded {sent:,} samples in {time.perf_counter() - began:.1f}s", flush=True)


def container(url: str, pipeline: Pipeline, recorder: BodyRecorder | None = None) -> Container:
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [recorder]} if recorder else {}
    registry = MemoryRegistry()
    return bootstrap(
        Settings(tsdb={"url": url}),
        reader=PrometheusReader(url, client=httpx.Client(timeout=120.0)),
        writer=RemoteWriteWriter(
            f"{url}/api/v1/write",
            client=httpx.Client(timeout=120.0, event_hooks=hooks),
            flavor="victoriametrics",
        ),
        pipelines=MemoryPipelineStore([pipeline]),
        registry=registry,
        checkpoints=registry,
        artifacts=MemoryArtifactStore(),
    )


def cycle_scenario(url: str, n: int, now: int, cycles: int) -> dict[str, Any]:
    metric = f"bench_builtin_{n}"
    pipeline = Pipeline.model_validate(
        {
            "id": f"builtin-{n}",
            "query": metric,
            "step": STEP,
            "train": {"window": HISTORY - 3600},
            "infer": {"every": STEP, "context": CONTEXT * STEP},
            "model": {"engine": "builtin", "name": "profile", "params": {"season": PERIOD}},
        }
    )
    recorder = BodyRecorder(f"{url}/api/v1/write")
    c = container(url, pipeline, recorder)
    first = now - cycles * STEP
    began, cpu_began = time.perf_counter(), time.process_time()
    c.service.trainer.train(pipeline, first - STEP)
    fit, fit_rss = time.perf_counter() - began, status_mb("VmHWM")
    fit_cpu = time.process_time() - cpu_began  # comparable on a loaded machine, unlike wall
    reset = reset_peak_rss()
    base_rss = status_mb("VmRSS")  # the trained model, the imports, what the allocator kept
    runs: list[tuple[float, float, InferResult]] = []
    for k in range(cycles):
        recorder.bodies.clear()
        w = InferWindow(pipeline.id, first + k * STEP - STEP, first + k * STEP)
        wall, cpu = time.perf_counter(), time.process_time()
        r = c.service.run(w)
        assert isinstance(r, InferResult)
        runs.append((time.perf_counter() - wall, time.process_time() - cpu, r))
    cycle_rss = status_mb("VmHWM")
    c.close()
    last = runs[-1][2]
    form = {
        "query": metric,
        "start": str(last.start - CONTEXT * STEP),
        "end": str(last.end),
        "step": str(STEP),
    }
    floor = io_floor(url, form, recorder.bodies)
    steady = runs[1:] if len(runs) > 1 else runs  # the first one loads the model
    phases = {k: statistics.median(x[2].timings[k] for x in steady) for k in last.timings}
    return {
        "series": n,
        "fit": fit,
        "fit_cpu": fit_cpu,
        "fit_rss": fit_rss,
        "cycle": statistics.median(x[0] for x in steady),
        "cpu": statistics.median(x[1] for x in steady),
        "phases": phases,
        "cycle_rss": cycle_rss,
        "rss_reset": reset,
        "base_rss": base_rss,
        "samples": last.samples_written,
        **floor,
    }


def train_scenario(url: str, n: int, now: int, window: int) -> dict[str, Any]:
    pipeline = Pipeline.model_validate(
        {
            "id": f"train-{n}-{window}",
            "query": f"bench_train_{n}",
            "step": STEP,
            "train": {"window": window},
            "infer": {"every": STEP, "context": CONTEXT * STEP},
            "model": {"engine": "builtin", "name": "profile"},
        }
    )
    c = container(url, pipeline)
    began = time.perf_counter()
    version = c.service.trainer.train(pipeline, now)
    seconds = time.perf_counter() - began
    c.close()
    return {"series": version.series, "window": window, "train": seconds, "rss": status_mb("VmHWM")}


def child(args: argparse.Namespace) -> None:
    """One scenario, in this process: its figures as one JSON line on stdout."""
    if args.child == "cycle":
        out = cycle_scenario(args.url, args.n, args.now, args.cycles)
    else:
        out = train_scenario(args.url, args.n, args.now, args.window)
    print(json.dumps(out))


def in_subprocess(*argv: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.throughput", *argv],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# --- the report ------------------------------------------------------------------------------


def print_cycle(r: dict[str, Any]) -> None:
    n, cycle = r["series"], r["cycle"]
    floor = r["fetch"] + r["post"]
    total = sum(r["phases"].values())
    shares = ", ".join(f"{k} {v / total:.0%}" for k, v in r["phases"].items())
    peak = f"{r['cycle_rss']:,.0f} MB" + ("" if r["rss_reset"] else " (with the training)")
    peak += f" from {r['base_rss']:,.0f} MB"
    print(
        f"  builtin/profile {n:>7,} series: cycle {cycle:6.2f}s | floor {floor:5.2f}s (fetch "
        f"{r['fetch']:.2f}s + post {r['post']:.2f}s) | cycle/floor {cycle / floor:4.1f}x | "
        f"{n / cycle:8,.0f} series/s, {n / r['cpu']:8,.0f} series/CPU-s | peak RSS {peak} "
        f"(training {r['fit']:.1f}s, {r['fit_cpu']:.1f} CPU-s, {r['fit_rss']:,.0f} MB) | {shares}",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, nargs="*", default=[1000, 10000, 100000])
    ap.add_argument("--train-series", type=int, default=20000, help="0: skip the training")
    ap.add_argument("--cycles", type=int, default=3)
    ap.add_argument("--child", choices=["cycle", "train"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--now", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--window", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        server = start_victoriametrics(Path(tmp))
        try:
            now = int(time.time()) // STEP * STEP
            print(f"VictoriaMetrics at {server.url}; step {STEP}s, context {CONTEXT} points")
            for n in args.series:
                load(server.url, f"bench_builtin_{n}", n, now - HISTORY, now)
                server.flush()
                common = ["--url", server.url, "--n", str(n), "--now", str(now)]
                print_cycle(
                    in_subprocess("--child", "cycle", *common, "--cycles", str(args.cycles))
                )
            if args.train_series:
                n = args.train_series
                load(server.url, f"bench_train_{n}", n, now - TRAIN_DATA, now)
                server.flush()
                common = ["--url", server.url, "--n", str(n), "--now", str(now)]
                for window in (TRAIN_WINDOW, TRAIN_DATA):
                    r = in_subprocess("--child", "train", *common, "--window", str(window))
                    print(
                        f"  training builtin/profile, {r['series']:,} series with 2h of data on "
                        f"a {window // 3600}h window: {r['train']:.1f}s, peak RSS "
                        f"{r['rss']:,.0f} MB",
                        flush=True,
                    )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
