"""Engine micro-benchmark: ``uv run python -m bench.engines [--ets-series 20]``.

Prints the built-in profile model's fit and predict time on 1k and 10k series (5-minute steps,
daily season, 14 days of history, a 60-point context, 12 points to forecast), then AutoETS's
fit and predict (``forward``, no refit) time per series (hourly steps, daily season) when
statsforecast is installed.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from openanomaly.domain.series import SeriesBatch
from openanomaly.engines.builtin import ProfileModel
from openanomaly.errors import EngineNotInstalled


def panel(n: int, t: int, step: int, season: int, seed: int = 0) -> tuple[SeriesBatch, np.ndarray]:
    """``n`` noisy seasonal series of ``t`` points; also returns the full timestamp grid."""
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000 // step * step + np.arange(t) * step
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    level = rng.uniform(10, 100, (n, 1))
    values = level + 5 * np.sin(2 * np.pi * np.arange(t) / season + phase)
    values = values + rng.normal(0, 0.5, (n, t))
    labels = tuple({"__name__": "bench", "i": str(i)} for i in range(n))
    return SeriesBatch(labels, ts, values), ts


def best_of(fn: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return min(times)


def bench_profile(n: int) -> None:
    step, season, history, context, horizon = 300, 288, 14 * 288, 60, 12
    batch, ts = panel(n, history + context + horizon, step, season)
    train = batch.between(int(ts[0]) - 1, int(ts[history - 1]))
    ctx = batch.between(int(ts[history - 1]), int(ts[history + context - 1]))
    future = ts[history + context :]
    model = ProfileModel(step=step, season="1d")
    fit = best_of(lambda: model.fit(train), repeat=1)
    predict = best_of(lambda: model.predict(ctx, future, 0.99))
    print(
        f"builtin profile  {n:>6} series: fit {fit:6.2f} s ({history} points each), "
        f"predict {predict * 1e3:7.1f} ms ({context}-point context, {horizon} steps)"
    )


def bench_autoets(n: int) -> None:
    from openanomaly.domain.spec import ModelSpec
    from openanomaly.engines import DefaultEngineFactory

    step, season, history, context, horizon = 3600, 24, 14 * 24, 60, 12
    batch, ts = panel(n, history + context + horizon, step, season, seed=1)
    train = batch.between(int(ts[0]) - 1, int(ts[history - 1]))
    ctx = batch.between(int(ts[history - 1]), int(ts[history + context - 1]))
    future = ts[history + context :]
    try:
        # as a pipeline gets it: through the factory, with the profile floor
        spec = ModelSpec(engine="statsforecast", name="AutoETS", params={"season_length": season})
        engine = DefaultEngineFactory().create(spec, step=step)
    except EngineNotInstalled as exc:
        print(f"AutoETS skipped: {exc}")
        return
    engine.fit(train.take([0]))  # pay the one-off JIT/initialisation cost outside the timing
    fit = best_of(lambda: engine.fit(train), repeat=1)
    predict = best_of(lambda: engine.predict(ctx, future, 0.99), repeat=3)
    print(
        f"AutoETS          {n:>6} series: fit {fit / n * 1e3:7.1f} ms/series ({history} points), "
        f"predict {predict / n * 1e3:6.2f} ms/series (forward, {context}-point context)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ets-series", type=int, default=20)
    args = parser.parse_args()
    for n in (1_000, 10_000):
        bench_profile(n)
    bench_autoets(args.ets_series)


if __name__ == "__main__":
    main()
