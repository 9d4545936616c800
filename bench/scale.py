"""Large pipelines split into shards: memory and time per process, against a real
VictoriaMetrics, measured in one run.

(a) One inference cycle of the built-in profile over ``--series`` series (default 300,000):
    the whole pipeline in one process, then ``--shards`` shards each in its own process, all at
    once. Each process first trains its shard, then its peak RSS is restarted (VmHWM) and the
    cycle measured: read (the whole query evaluated by the TSDB, the shard's series kept while
    the answer streams in), forecast, score, remote write.
(b) On one worker and on two worker processes (two shards), real ``openanomaly worker``
    processes on Celery (``bench/cluster.py``): the training of an expensive model
    (statsforecast AutoETS, ``--ets-series`` series) and one inference cycle of
    ``--infer-series`` series with the built-in profile; their times (run history and wall
    clock), phases, the CPU seconds of the workers and of the TSDB, and the ratios.

The shards of (a) run as processes calling the Service directly (as a worker runs the job).
Figures come with the machine's load average: the cores are shared.

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

from tests.celery_workers import CLI
from tests.servers import TsdbServer, start_victoriametrics

from bench import cluster as workers
from bench.throughput import STEP, container, load, reset_peak_rss, status_mb
from openanomaly.domain.records import InferResult, InferWindow, ModelVersion
from openanomaly.domain.shards import Shard
from openanomaly.domain.spec import Pipeline

HISTORY = 2 * 3600  # data loaded: 1h to train on, the context, the cycle
CONTEXT = 60
PERIOD = 24 * STEP


def spec(model: dict[str, Any]) -> dict[str, Any]:
    return {
        "step": STEP,
        "train": {"window": 3600},
        "infer": {"every": STEP, "context": CONTEXT * STEP},
        "model": model,
    }


def pipeline(metric: str, shards: int, model: dict[str, Any]) -> Pipeline:
    return Pipeline.model_validate(
        {
            **spec(model),
            "id": f"{metric}-{shards}".replace("_", "-"),
            "query": metric,
            "shards": shards,
        }
    )


BUILTIN = {"engine": "builtin", "name": "profile", "params": {"season": PERIOD}}
ETS = {"engine": "statsforecast", "name": "AutoETS", "params": {"season_length": 24}}


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One process of (a): train its shard, then run one cycle; its figures."""
    p = pipeline(args.metric, args.shards, BUILTIN)
    shard = Shard(args.index, args.shards)
    c = container(args.url, p)
    began = time.perf_counter()
    version = c.service.trainer.train(p, args.now - 2 * STEP, shard=shard)
    assert isinstance(version, ModelVersion)
    out: dict[str, Any] = {"train": time.perf_counter() - began, "train_rss": status_mb("VmHWM")}
    out["series"] = version.series
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


def processes(url: str, metric: str, now: int, shards: int) -> tuple[float, list[dict[str, Any]]]:
    """Run every shard of the pipeline in its own process, all at once: wall time, figures."""
    argv = [sys.executable, "-m", "bench.scale", "--url", url, "--metric", metric]
    argv += ["--now", str(now), "--shards", str(shards)]
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


def scenario_b(
    server: TsdbServer, tmp: Path, now: int, *, ets_n: int, infer_n: int, preload: bool = True
) -> None:
    print(
        f"(b) one worker against two worker processes (two shards): openanomaly worker on "
        f"Celery/Redis, concurrency 1 each, engines preloaded: {preload} (load {load_avg()})"
    )
    ets_metric = f"scale_ets_{ets_n}"
    load(server.url, ets_metric, ets_n, now - HISTORY, now)
    warm_metric = loaded(server.url, workers.WARM_SERIES, now, server.flush)
    infer_metric = loaded(server.url, infer_n, now, server.flush)
    (tmp / "cluster").mkdir()
    cluster, redis = workers.start(tmp / "cluster", server, preload=preload)
    figures: dict[int, tuple[workers.Timed, workers.Timed]] = {}
    try:
        with cluster.dispatcher() as d:
            for n in (1, 2):
                workers.add_worker(cluster)
                rounds, first = workers.warm(
                    cluster, d, [spec(ETS), spec(BUILTIN)], metric=warm_metric, now=now, step=STEP
                )
                print(
                    f"  {n} worker{'s' * (n > 1)}: warm after {rounds} round(s); the first job "
                    f"of a fresh pool process (AutoETS, {workers.WARM_SERIES} series) took "
                    f"{first:.1f}s (load {load_avg()})"
                )
                ets = cluster.put(pipeline(ets_metric, n, ETS))
                train = workers.run(cluster, d, workers.train_jobs(ets, now - 2 * STEP))
                print(f"    training AutoETS on {ets_n:,} series: {described(train)}", flush=True)
                profile = cluster.put(pipeline(infer_metric, n, BUILTIN))
                fit = workers.run(cluster, d, workers.train_jobs(profile, now - 2 * STEP))
                print(f"    (training builtin/profile on {infer_n:,} series: {described(fit)})")
                window = workers.infer_jobs(profile, now - 2 * STEP, now - STEP)
                cycle = workers.run(cluster, d, window)
                print(
                    f"    one inference cycle on {infer_n:,} series: {described(cycle)}", flush=True
                )
                figures[n] = (train, cycle)
        jobs = subprocess.run(
            [str(CLI), "jobs", "--kind", "train", "--limit", "3"],
            env={**cluster.env(), "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        print("  openanomaly jobs --kind train --limit 3:\n" + jobs.stdout.rstrip())
    finally:
        cluster.close()
        redis.clean()
    for label, k in (("training AutoETS", 0), ("one inference cycle", 1)):
        one, two = figures[1][k], figures[2][k]
        print(
            f"  ratio, {label}: {one.span / two.span:.2f}x by the run history "
            f"({one.span:.1f}s / {two.span:.1f}s), {one.wall / two.wall:.2f}x by the wall clock "
            f"(load {load_avg()})",
            flush=True,
        )


def described(t: workers.Timed) -> str:
    """A batch's times, phases, CPU and memory on one line."""
    took = ", ".join(f"{s:.1f}" for s in t.took())
    phases = "; ".join(
        " ".join(f"{k} {v:.1f}s" for k, v in p.items() if k != "fit")  # fit: read + model
        for p in t.phases
    )
    cores = sum(t.cpu) / t.wall
    return (
        f"{t.span:.1f}s by the run history (jobs {took}s on {len(set(r.worker for r in t.rows))} "
        f"process(es)), wall {t.wall:.1f}s | phases {phases} | CPU workers "
        f"{' + '.join(f'{c:.1f}' for c in t.cpu)} s ({cores:.2f} cores), TSDB {t.tsdb_cpu:.1f} s | "
        f"peak RSS {' / '.join(f'{m:,.0f}' for m in t.peak_mb)} MB (load {load_avg()})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", type=int, default=300_000, help="(a); 0: skip")
    ap.add_argument("--shards", type=int, default=4, help="(a)")
    ap.add_argument("--ets-series", type=int, default=2000, help="(b); 0: skip (b)")
    ap.add_argument("--infer-series", type=int, default=100_000, help="(b)")
    ap.add_argument(
        "--no-preload", action="store_true", help="(b): workers with OA_PRELOAD_ENGINES='[]'"
    )
    for hidden in ("--url", "--metric"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    for hidden in ("--now", "--index"):
        ap.add_argument(hidden, type=int, help=argparse.SUPPRESS)
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
                scenario_b(
                    server,
                    Path(tmp),
                    now,
                    ets_n=args.ets_series,
                    infer_n=args.infer_series,
                    preload=not args.no_preload,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
