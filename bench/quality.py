"""Detection quality on the NAB sample, end to end through a real VictoriaMetrics.

Every NAB file is remote-written into a VictoriaMetrics started here (temp dir, loopback only)
with its own, past, timestamps. Then, per engine and file, a pipeline is backtested over it in
production-sized steps: read back through PromQL at the file's step (inferred from the data),
fitted on what came before (the first 15% of the file is learning only), refitted daily, scored
every step from its context. The scores are remote-written as ``anomaly_score`` (as
``openanomaly backtest --write`` does), read back by PromQL and compared with the labelled
windows by NAB's scorer (``openanomaly.quality.nab``) as NAB scores its published detectors:
every row with ``anomaly_score > 1`` is a detection, the first in a window a true positive
weighted by earliness, every one outside a window a false positive. The headline is NAB's
standard, reward_low_FP_rate and reward_low_FN_rate scores per engine and category (any
NAB-layout ``--data`` folder), with the label-chosen best threshold (NAB's scoreboard) and the
alert-start count (the first row of each run only) beside them. Each engine runs with its
defaults and one pipeline configuration for every file (``PIPELINE``): no per-file tuning.

``--dump DIR`` writes ``DIR/<engine>/<category>/<file>.csv`` (``timestamp,value,anomaly_score``,
every row of the data file, 0 in the learning period) for NAB's own scorer. ``--plots DIR``
draws each backtest there (``<file>.png``: the series, its band, the flagged rows, the score, the
labelled windows shaded) beside its band per row (``<file>.csv``), to see where points are lost.
A calibration check follows (``--calibrate``, the default engine unless told): on clean synthetic
series the share of points above 1 against the ``1 - interval`` the band promises, short
histories included.

    uv run python -m bench.quality                                   # the default engine set
    uv run python -m bench.quality --engines builtin:profile statsforecast:AutoETS
    uv run python -m bench.quality --files 'realKnownCause/*' --per-file
    uv run python -m bench.quality --engines neuralforecast --files 'artificialNoAnomaly/*'
    uv run python -m bench.quality --engines chronos:/path/to/chronos-bolt-small  # local weights
    uv run python -m bench.quality --engines builtin:profile --dump /tmp/nab-results
    uv run python -m bench.quality --files 'realKnownCause/*' --engines auto --plots /tmp/plots

The default set runs every engine that needs no weights and no network training, in about an
hour on two cores (pyod and mlforecast take about 25 minutes each on one core, darts 6,
builtin:profile alone half a minute). NeuralForecast trains a network at every daily refit
(minutes each) and Darts' local models (``darts:ExponentialSmoothing``) refit at every step:
hours to days for the whole sample, so they are asked for by name, best with ``--files``.
Chronos needs its weights, which these machines cannot download: name a local checkpoint.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from tests.servers import start_victoriametrics

from bench._calibration import CALIBRATION_LEGEND, calibration_table
from bench._quality_report import FileRun, dump, plots, report, seconds
from openanomaly.adapters.prometheus.reader import PrometheusReader
from openanomaly.adapters.prometheus.remote_write import RemoteWriteWriter
from openanomaly.domain.outputs import build_outputs
from openanomaly.domain.records import OutputSeries
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import ModelSpec, Pipeline
from openanomaly.engines import DefaultEngineFactory
from openanomaly.ports import ModelEngine
from openanomaly.quality.nab import Labels
from openanomaly.services.backtest import backtest


def _default_data() -> Path:
    """``$NAB_DIR``, else ``shared/data/nab`` beside the main clone: a git worktree lives
    elsewhere, so the main clone is found from git's common directory, not from this file."""
    if "NAB_DIR" in os.environ:
        return Path(os.environ["NAB_DIR"])
    here = Path(__file__).resolve().parents[1]
    try:
        common = subprocess.run(
            ["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        root = Path(common).parent
    except (OSError, subprocess.CalledProcessError):  # no git, or not a clone: this checkout
        root = here
    return root.parent / "shared/data/nab"


DATA = _default_data()
DEFAULT_ENGINES = [
    "builtin:profile",
    "builtin:mad",
    "builtin:zscore",
    "statsforecast:AutoETS",
    "mlforecast",
    "pyod",
    "darts",
    "auto",
]
METRIC = "nab_value"
# The one pipeline every file and engine runs with (step, query and model are filled in): fit
# on up to four weeks of history, refit daily, score every new point from the last day.
PIPELINE: dict[str, Any] = {
    "train": {"window": "28d", "every": "1d"},
    "infer": {"context": "1d"},
}
INFER_STEPS = 1  # infer.every in steps: score each point as soon as it arrives


@dataclass(frozen=True)
class NabFile:
    """One labelled series: its rows, the grid step they are read at and the windows."""

    name: str  # category/file.csv
    timestamps: np.ndarray  # unix seconds per row
    values: np.ndarray
    labels: Labels
    step: int

    @property
    def category(self) -> str:
        return self.name.split("/")[0]

    @property
    def grid(self) -> np.ndarray:
        """The grid point each row is read back at (a range query shows a sample at the first
        step at or after it)."""
        return -(-self.timestamps // self.step) * self.step


def load_corpus(root: Path, patterns: Sequence[str]) -> list[NabFile]:
    """The NAB files matching any of ``patterns`` (``category/file.csv`` globs)."""
    windows = json.loads((root / "combined_windows.json").read_text())
    names = sorted(n for n in windows if any(fnmatch.fnmatch(n, p) for p in patterns))
    files = []
    for name in names:
        frame = pd.read_csv(root / name)
        ts = seconds(frame["timestamp"])
        spans = [(int(a), int(b)) for a, b in (seconds(w) for w in windows[name])]
        step = int(np.median(np.diff(ts)))  # 5 minutes mostly; hourly and half-hourly too
        labels = Labels.from_timestamps(ts, spans)
        files.append(NabFile(name, ts, frame["value"].to_numpy(float), labels, step))
    return files


def write_corpus(write_url: str, files: Sequence[NabFile]) -> int:
    """Remote-write every file as ``nab_value{file=...}`` at its own timestamps."""
    writer = RemoteWriteWriter(write_url, flavor="victoriametrics")
    try:
        return writer.write(
            [
                OutputSeries({"__name__": METRIC, "file": f.name}, f.timestamps, f.values)
                for f in files
            ]
        )
    finally:
        writer.close()


def bench_pipeline(engine: str, file: NabFile, index: int) -> Pipeline:
    """The global bench pipeline for ``file`` with model ``engine`` (``engine[:name]``)."""
    lib, _, name = engine.partition(":")
    return Pipeline.model_validate(
        {
            **PIPELINE,
            "id": re.sub(
                r"[^a-z0-9_.-]+", "-", f"nab-{index:02d}-{lib}-{name or 'default'}".lower()
            )[:63],
            "query": f'{METRIC}{{file="{file.name}"}}',
            "step": file.step,
            "infer": {**PIPELINE["infer"], "every": INFER_STEPS * file.step},
            "model": {"engine": lib, "name": name or None},
        }
    )


class _Clock:
    fit = 0.0
    read = 0.0
    fits = 0
    depth = 0  # fits under way: a model fitting candidates (auto) is timed once, not twice


class _TimedModel:
    """Delegates to a model, adding the time spent in ``fit`` to a clock."""

    def __init__(self, model: ModelEngine, clock: _Clock) -> None:
        self._model, self._clock = model, clock
        self.requires_fit = model.requires_fit

    def fit(self, history: SeriesBatch) -> _TimedModel:
        began, clock = time.perf_counter(), self._clock
        clock.depth += 1
        try:
            self._model = self._model.fit(history)
        finally:
            clock.depth -= 1
        if not clock.depth:
            clock.fit += time.perf_counter() - began
            clock.fits += 1
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)


class _TimedEngines(DefaultEngineFactory):
    def __init__(self, clock: _Clock) -> None:
        self._clock = clock

    def create(self, spec: ModelSpec, *, step: int) -> ModelEngine:
        return _TimedModel(super().create(spec, step=step), self._clock)


class _TimedReader(PrometheusReader):
    clock: _Clock

    def query_range(
        self, query: str, start: int, end: int, step: int, *, recent: bool = False
    ) -> SeriesBatch:
        began = time.perf_counter()
        try:
            return super().query_range(query, start, end, step, recent=recent)
        finally:
            self.clock.read += time.perf_counter() - began


def run_file(url: str, engine: str, file: NabFile, index: int) -> FileRun:
    """Backtest one file with one engine, write the scores, read them back per CSV row."""
    pipeline, clock = bench_pipeline(engine, file, index), _Clock()
    reader = _TimedReader(url)
    reader.clock = clock
    grid = file.grid
    start, end = int(grid[file.labels.probation]) - file.step, int(grid[-1])
    began = time.perf_counter()
    result = backtest(pipeline, reader, _TimedEngines(clock), start=start, end=end)
    wall = time.perf_counter() - began
    writer = RemoteWriteWriter(f"{url}/api/v1/write", flavor="victoriametrics")
    try:
        writer.write(
            build_outputs(result.batch.labels, result.batch.timestamps, result.scored, pipeline)
        )
    finally:
        writer.close()
    httpx.get(f"{url}/internal/force_flush", timeout=30).raise_for_status()
    back = reader.query_range(f'anomaly_score{{pipeline="{pipeline.id}"}}', start, end, file.step)
    reader.close()
    scored, stamps = result.scored, result.batch.timestamps
    band = np.stack(
        [_at_rows(stamps, a[0], grid) for a in (scored.yhat, scored.lower, scored.upper)]
    )
    return FileRun(
        engine=engine,
        file=file.name,
        score=_per_row(back, grid),
        labels=file.labels,
        fit_seconds=clock.fit,
        fits=clock.fits,
        infer_seconds=wall - clock.fit - clock.read,
        windows=result.windows,
        band=band,
    )


def _per_row(back: SeriesBatch, grid: np.ndarray) -> np.ndarray:
    """The read-back score at each CSV row's grid point (NaN where none was written)."""
    if len(back) != 1:
        return np.full(grid.size, np.nan)
    return _at_rows(back.timestamps, back.values[0], grid)


def _at_rows(timestamps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """``values`` (at ``timestamps``) at each CSV row's grid point (NaN where none is)."""
    out = np.full(grid.size, np.nan)
    idx = np.clip(np.searchsorted(timestamps, grid), 0, max(timestamps.size - 1, 0))
    ok = timestamps.size > 0 and timestamps[idx] == grid
    out[ok] = values[idx[ok]]
    return out


def run_all(url: str, engines: Sequence[str], files: Sequence[NabFile], jobs: int) -> list[FileRun]:
    """Every (engine, file) pair, ``jobs`` at a time, longest files first, with a progress bar."""
    tasks = [(e, i, f) for e in engines for i, f in enumerate(files)]
    tasks.sort(key=lambda t: -t[2].timestamps.size)
    runs: list[FileRun] = []
    failed: list[tuple[str, str]] = []
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with ProcessPoolExecutor(jobs) as pool:
        # Submitted before the progress bar starts its thread: the workers fork a quiet process.
        futures: dict[Future[FileRun], tuple[str, str]] = {
            pool.submit(run_file, url, e, f, i): (e, f.name) for e, i, f in tasks
        }
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task("backtest NAB", total=len(tasks))
            for done in as_completed(futures):
                engine, name = futures[done]
                try:
                    runs.append(done.result())
                except Exception as exc:  # one failed pair is reported, the others go on
                    bar.console.print(
                        f"[red]{engine} {name} failed:[/] {type(exc).__name__}: {exc}"
                    )
                    failed.append((engine, name))
                bar.update(task, advance=1, description=f"{engine} {name.split('/')[-1][:28]}")
    if failed:
        print(f"{len(failed)} backtests failed (left out of the tables): {failed}")
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", nargs="+", default=DEFAULT_ENGINES, help="engine[:model] ...")
    ap.add_argument("--files", nargs="+", default=["*"], help="category/file.csv globs")
    ap.add_argument("--data", type=Path, default=DATA, help="the NAB sample directory")
    ap.add_argument("--jobs", type=int, default=2, help="files backtested at once")
    ap.add_argument("--per-file", action="store_true", help="also print one row per file")
    ap.add_argument("--dump", type=Path, help="write the per-row scores NAB's scorer reads here")
    ap.add_argument(
        "--plots", type=Path, help="write a PNG and the band (CSV) of every backtest here"
    )
    ap.add_argument(
        "--calibrate",
        nargs="*",
        default=["builtin:profile"],
        help="engines for the clean-data calibration check (none: skip it)",
    )
    args = ap.parse_args()
    files = load_corpus(args.data, args.files)
    if not files:
        sys.exit(f"no NAB file matches {args.files} in {args.data}")
    config = f"pipeline {json.dumps(PIPELINE)}, infer.every {INFER_STEPS} step"
    print(f"NAB sample: {len(files)} files; {config}")
    with tempfile.TemporaryDirectory() as tmp:
        server = start_victoriametrics(Path(tmp))
        try:
            began = time.perf_counter()
            sent = write_corpus(server.write_url, files)
            server.flush()
            print(f"VictoriaMetrics at {server.url}: wrote {sent:,} samples")
            runs = run_all(server.url, args.engines, files, args.jobs)
            print(f"backtests done in {time.perf_counter() - began:.0f}s wall ({args.jobs} jobs)")
        finally:
            server.stop()
    report(runs, engines=args.engines, per_file=args.per_file)
    if args.dump:
        print(f"wrote {dump(runs, args.dump, args.data)} score files under {args.dump}")
    if args.plots:
        print(f"drew {plots(runs, args.plots, args.data)} backtests under {args.plots}")
    if args.calibrate:
        console = Console(width=220)
        console.print(calibration_table(args.calibrate))
        console.print(CALIBRATION_LEGEND)


if __name__ == "__main__":
    main()
