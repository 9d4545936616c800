"""Large pipelines split into shards: memory and time per process, against a real
VictoriaMetrics, measured in one run.

(a) One inference cycle of the built-in profile over ``--series`` series (default 300,000):
    the whole pipeline in one process, then ``--shards`` shards each in its own process, all at
    once. Each process first trains its shard, then its peak RSS is restarted (VmHWM) and the
    cycle measured: read (the whole query evaluated by the TSDB, the shard's series kept while
    the answer streams in), forecast, score, remote write.
(b) On one worker and on two worker processes (two shards): the training of an expensive model
    (statsforecast AutoETS, ``--ets-series`` series) and one inference cycle of
    ``--infer-series`` series with the built-in profile; their times and the ratio.

Shards run as processes calling the Service directly (as a worker would run the job), not as
Celery tasks. Figures come with the machine's load average: the cores are shared.

    uv run python -m bench.scale
    uv run python -m bench.scale --series 20000 --ets-series 200 --infer-series 10000  # quick
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.servers import start_victoriametrics

from bench.throughput import STEP, container, load, reset_peak_rss, status_mb
from openanomaly.domain.records import InferResult, InferWindow, ModelVersion
from openanomaly.domain.shards import Shard
from openanomaly.domain.spec import Pipeline

HISTORY = 2 * 3600  # data loaded: 1h to train on, the context, the cycle
CONTEXT = 60
PERIOD = 24 * STEP


def pipeline(metric: str, shards: int, model: dict[str, Any]) -> Pipeline:
    return Pipeline.model_validate(
        {
            "id": f"scale-{metric}-{shards}".replace("_", "-"),
            "query": metric,
            "step": STEP,
            "train": {"window": 3600},
            "infer": {"every": STEP, "context": CONTEXT * STEP},
            "model": model,
            "shards": shards,
        }
    )


BUILTIN = {"engine": "builtin", "name": "profile", "params": {"season": PERIOD}}
ETS = {"engine": "statsforecast", "name": "AutoETS", "params": {"season_length": 24}}


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One process: train its shard (unless ``--no-train-time``) and run one cycle, or only
    train (``--train-only``); its figures."""
    p = pipeline(args.metric, args.shards, ETS if args.ets else BUILTIN)
    shard = Shard(args.index, args.shards)
    c = container(args.url, p)
    began = time.perf_counter()
    version = c.service.trainer.train(p, args.now - 2 * STEP, shard=shard)
    assert isinstance(version, ModelVersion)
    out: dict[str, Any] = {"train": time.perf_counter() - began, "train_rss": status_mb("VmHWM")}
    out["series"] = version.series
    if not args.train_only:
        reset_peak_rss()
        began = time.perf_counter()
        job = InferWindow(p.id, args.now - 2 * STEP, args.now - STEP, shard=args.index)
        r = c.service.run(job)
        assert isinstance(r, InferResult)
        out |= {
            "cycle": time.perf_counter() - began,
            "cycle_rss": status_mb("VmHWM"),
            "samples": r.samples_written,
            "phases": r.timings,
        }
    c.close()
    return out


def processes(
    url: str, metric: str, now: int, shards: int, *, ets: bool = False, train_only: bool = False
) -> tuple[float, list[dict[str, Any]]]:
    """Run every shard of the pipeline in its own process, all at once: wall time, figures."""
    argv = [sys.executable, "-m", "bench.scale", "--url", url, "--metric", metric]
    argv += ["--now", str(now), "--shards", str(shards)]
    argv += ["--ets"] * ets + ["--train-only"] * train_only
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    began = time.perf_counter()
    running = [
        subprocess.Popen([*argv, "--index", str(i)], stdout=subprocess.PIPE, text=True, env=env)
        for i in range(shards)
    ]
    outs = []
    for proc in running:
        stdout, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a shard process failed ({proc.returncode})")
        outs.append(json.loads(stdout.strip().splitlines()[-1]))
    return time.perf_counter() - began, outs


_LOADED: set[int] = set()


def loaded(url: str, n: int, now: int, flush: Callable[[], None]) -> str:
    """The metric of ``n`` synthetic series, loaded once per run ((a) and (b) may share it)."""
    metric = f"scale_builtin_{n}"
    if n not in _LOADED:
        load(url, metric, n, now - HISTORY, now)
        flush()
        _LOADED.add(n)
    return metric


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def scenario_a(url: str, now: int, n: int, shards: int, flush: Callable[[], None]) -> None:
    metric = loaded(url, n, now, flush)
    print(f"(a) {n:,} series, one inference cycle of builtin/profile (load {load_avg()})")
    rows = {}
    for k in (1, shards):
        wall, outs = processes(url, metric, now, k)
        rows[k] = (wall, outs)
        peak = max(o["cycle_rss"] for o in outs)
        train_peak = max(o["train_rss"] for o in outs)
        cycles = [o["cycle"] for o in outs]
        phases = {
            ph: max(o["phases"].get(ph, 0.0) for o in outs) for ph in ("read", "model", "score")
        }
        print(
            f"  {k} process{'es' if k > 1 else ''}: cycle {max(cycles):6.1f}s (slowest shard; "
            f"{', '.join(f'{c:.1f}' for c in cycles)}) | peak RSS per process in the cycle "
            f"{peak:,.0f} MB (training {train_peak:,.0f} MB) | series "
            f"{sum(o['series'] for o in outs):,} | samples {sum(o['samples'] for o in outs):,} "
            f"| slowest read {phases['read']:.1f}s | wall with training {wall:.1f}s",
            flush=True,
        )
    one, many = rows[1][1][0], rows[shards][1]
    print(
        f"  ratio: peak RSS {one['cycle_rss'] / max(o['cycle_rss'] for o in many):.1f}x lower "
        f"per process, cycle {one['cycle'] / max(o['cycle'] for o in many):.2f}x faster "
        f"(load {load_avg()})",
        flush=True,
    )


def scenario_b(url: str, now: int, ets_n: int, infer_n: int, flush: Callable[[], None]) -> None:
    print(f"(b) one worker vs two worker processes (two shards) (load {load_avg()})")
    metric = f"scale_ets_{ets_n}"
    load(url, metric, ets_n, now - HISTORY, now)
    flush()
    one, _ = processes(url, metric, now, 1, ets=True, train_only=True)
    two, outs = processes(url, metric, now, 2, ets=True, train_only=True)
    fits = ", ".join(f"{o['train']:.1f}s" for o in outs)
    print(
        f"  training statsforecast AutoETS on {ets_n:,} series: 1 worker {one:.1f}s, "
        f"2 workers {two:.1f}s (shards {fits}): {one / two:.2f}x (load {load_avg()})",
        flush=True,
    )
    metric = loaded(url, infer_n, now, flush)
    _, (single,) = processes(url, metric, now, 1)
    _, pair = processes(url, metric, now, 2)
    slow = max(o["cycle"] for o in pair)
    print(
        f"  one inference cycle of builtin/profile on {infer_n:,} series: 1 worker "
        f"{single['cycle']:.1f}s ({single['cycle_rss']:,.0f} MB), 2 workers {slow:.1f}s "
        f"({max(o['cycle_rss'] for o in pair):,.0f} MB each at most): "
        f"{single['cycle'] / slow:.2f}x (load {load_avg()})",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=300_000, help="(a); 0: skip")
    ap.add_argument("--shards", type=int, default=4, help="(a)")
    ap.add_argument("--ets-series", type=int, default=2000, help="(b); 0: skip (b)")
    ap.add_argument("--infer-series", type=int, default=100_000, help="(b)")
    for hidden in ("--url", "--metric"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    for hidden in ("--now", "--index"):
        ap.add_argument(hidden, type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ets", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.url:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        # Up to --series series per query, N shards evaluating it at once on a shared machine:
        # above VictoriaMetrics' default caps (300,000 series, 30 s).
        cap = f"-search.maxUniqueTimeseries={max(args.series, args.infer_series) * 2}"
        server = start_victoriametrics(Path(tmp), extra_args=[cap, "-search.maxQueryDuration=10m"])
        try:
            now = int(time.time()) // STEP * STEP
            print(f"VictoriaMetrics at {server.url}; {os.cpu_count()} cores, load {load_avg()}")
            if args.series:
                scenario_a(server.url, now, args.series, args.shards, server.flush)
            if args.ets_series:
                scenario_b(server.url, now, args.ets_series, args.infer_series, server.flush)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
