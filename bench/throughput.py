"""Throughput of one inference cycle, end to end against a real VictoriaMetrics.

For N synthetic series (step 1m, 6h of history, a 24-minute season) the pipeline is trained
once, then inference cycles are timed: read the new point plus a 60-point context by PromQL,
forecast, score, remote-write the four output series. Prints series/s (wall clock), series
per CPU-second of this process, and the share of time in reading, modelling, scoring, writing.

    uv run python bench/throughput.py                       # builtin at 1k and 10k, AutoETS at 1k
    uv run python bench/throughput.py --series 1000 --ets-series 0 --cycles 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.servers import start_victoriametrics

from openanomaly.adapters.memory import MemoryArtifactStore, MemoryPipelineStore, MemoryRegistry
from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.bootstrap import bootstrap
from openanomaly.domain.records import InferWindow
from openanomaly.domain.spec import Pipeline
from openanomaly.services.inferencer import InferResult
from openanomaly.settings import Settings
from openanomaly.synthetic import as_output, seasonal_panel

STEP = 60
HISTORY = 6 * 3600
PERIOD = 24 * STEP  # statsforecast's ETS takes seasons of at most 24 steps


def load(server_url: str, metric: str, n: int, now: int) -> None:
    ts = np.arange(now - HISTORY, now + 1, STEP)
    panel = seasonal_panel(n, ts, period=PERIOD, metric=metric, seed=n)
    began = time.perf_counter()
    sent = RemoteWriteWriter(f"{server_url}/api/v1/write", flavor="victoriametrics").write(
        as_output(panel)
    )
    print(f"  loaded {sent:,} samples in {time.perf_counter() - began:.1f}s")


def run_case(
    url: str, n: int, *, engine: str, name: str, params: dict[str, object], cycles: int, now: int
) -> None:
    metric = f"bench_{engine}_{n}"
    pipeline = Pipeline.model_validate(
        {
            "id": f"{engine}-{n}".lower(),
            "query": metric,
            "step": STEP,
            "train": {"window": HISTORY - 3600},
            "infer": {"every": STEP, "context": 60 * STEP},
            "model": {"engine": engine, "name": name, "params": params},
        }
    )
    registry = MemoryRegistry()
    c = bootstrap(
        Settings(tsdb={"url": url}),
        reader=PrometheusReader(url),
        writer=RemoteWriteWriter(f"{url}/api/v1/write", flavor="victoriametrics"),
        pipelines=MemoryPipelineStore([pipeline]),
        registry=registry,
        checkpoints=registry,
        artifacts=MemoryArtifactStore(),
    )
    first = now - cycles * STEP
    began, cpu_began = time.perf_counter(), time.process_time()
    version = c.service.trainer.train(pipeline, first - STEP)
    fit, fit_cpu = time.perf_counter() - began, time.process_time() - cpu_began
    results: list[tuple[float, float, InferResult]] = []
    for k in range(cycles):
        w = InferWindow(pipeline.id, first + k * STEP - STEP, first + k * STEP)
        wall, cpu = time.perf_counter(), time.process_time()
        r = c.service.run(w)
        assert isinstance(r, InferResult)
        results.append((time.perf_counter() - wall, time.process_time() - cpu, r))
    c.close()
    steady = results[1:] if len(results) > 1 else results  # the first one loads the model
    wall = statistics.median(x[0] for x in steady)
    cpu = statistics.median(x[1] for x in steady)
    shares = {k: statistics.median(x[2].timings[k] for x in steady) for k in steady[0][2].timings}
    model_ms = 1000 * shares.get("model", float("nan"))
    total = sum(shares.values())
    share_text = ", ".join(f"{k} {v / total:.0%}" for k, v in shares.items())
    print(
        f"  {engine}/{name:<8} {n:>6} series: fit {fit:6.1f}s ({fit_cpu:.1f} CPU-s, "
        f"{version.series} series) | cycle {wall * 1000:7.1f} ms wall -> {n / wall:9,.0f} "
        f"series/s, {n / cpu:9,.0f} series/CPU-s | model {model_ms:.1f} ms | {share_text} | "
        f"anomalies {steady[-1][2].anomalies}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--ets-series", type=int, nargs="*", default=[1000])
    ap.add_argument("--cycles", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_victoriametrics(Path(tmp))
        try:
            now = int(time.time()) // STEP * STEP
            print(f"VictoriaMetrics at {server.url}; step {STEP}s, context 60 points")
            for n in sorted(set(args.series) | set(args.ets_series)):
                print(f"{n} series")
                cases = [
                    ("builtin", "profile", {"season": PERIOD}, n in args.series),
                    ("statsforecast", "AutoETS", {"season_length": 24}, n in args.ets_series),
                ]
                for engine, name, params, wanted in cases:
                    if wanted:
                        load(server.url, f"bench_{engine}_{n}", n, now)
                        server.flush()
                        run_case(
                            server.url,
                            n,
                            engine=engine,
                            name=name,
                            params=params,
                            cycles=args.cycles,
                            now=now,
                        )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
