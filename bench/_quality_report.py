"""The tables of ``bench/quality.py``: NAB scores, event metrics and cost per engine/category,
the files NAB's own scorer reads, and the calibration check on clean data."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from openanomaly.domain.scoring import Scored
from openanomaly.domain.series import SeriesBatch
from openanomaly.plot import plot_scored
from openanomaly.quality.nab import (
    PROFILES,
    EventStats,
    Labels,
    Mode,
    best_threshold,
    detections,
    event_stats,
    normalised,
    score_file,
)

THRESHOLD = 1.0  # the product's contract: anomaly_score > 1 is anomalous


@dataclass(frozen=True)
class FileRun:
    """What one engine's backtest of one file gave: the read-back score per CSV row, and cost."""

    engine: str
    file: str
    score: np.ndarray
    labels: Labels
    fit_seconds: float
    fits: int
    infer_seconds: float
    windows: int  # inference windows replayed
    band: np.ndarray | None = None  # (3, rows): the written yhat, lower and upper per CSV row

    @property
    def category(self) -> str:
        return self.file.split("/")[0]


def seconds(stamps: Sequence[str] | pd.Series) -> np.ndarray:
    """NAB's timestamps (``YYYY-MM-DD HH:MM:SS``, UTC) as unix seconds."""
    return np.asarray(pd.to_datetime(stamps), dtype="datetime64[s]").astype(np.int64)


def nab(
    runs: Sequence[FileRun], threshold: float, *, mode: Mode = "row", profile: str = "standard"
) -> float:
    """The normalised NAB score of ``runs`` at ``threshold`` (NaN when they have no window)."""
    cost = PROFILES[profile]
    return normalised(
        score_file(detections(r.score, threshold, mode=mode), r.labels, cost) for r in runs
    )


def events(runs: Sequence[FileRun], threshold: float = THRESHOLD) -> EventStats:
    return sum((event_stats(r.score, r.labels, threshold) for r in runs), EventStats())


def _fmt(x: float, digits: int = 1) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


def _row(runs: Sequence[FileRun], best: float) -> list[str]:
    ev = events(runs)
    fits = sum(r.fits for r in runs)
    steps = sum(r.windows for r in runs)
    infer = sum(r.infer_seconds for r in runs)
    return [
        str(len(runs)),
        str(ev.windows),
        _fmt(nab(runs, THRESHOLD)),
        _fmt(nab(runs, THRESHOLD, profile="reward_low_FP_rate")),
        _fmt(nab(runs, THRESHOLD, profile="reward_low_FN_rate")),
        _fmt(nab(runs, best)),
        _fmt(nab(runs, THRESHOLD, mode="edge")),
        _fmt(ev.precision, 2),
        _fmt(ev.recall, 2),
        _fmt(ev.false_alarms_per_1000, 2),
        _fmt(sum(r.fit_seconds for r in runs) / fits if fits else math.nan, 3),
        _fmt(infer / len(runs), 2),
        _fmt(1000 * infer / steps if steps else math.nan, 2),
    ]


HEADERS = (
    "engine", "category", "files", "windows", "standard", "lowFP", "lowFN", "best thr",
    "alert-start", "precision", "recall", "FA/1k", "fit s", "infer s", "ms/step",
)  # fmt: skip


def report(runs: Sequence[FileRun], *, engines: Sequence[str], per_file: bool = False) -> None:
    """Print the quality table (and optionally one row per file) to stdout."""
    console = Console(width=220)
    table = Table(title="NAB, scored as NAB scores (every row > threshold)", show_lines=False)
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("engine", "category") else "right")
    thresholds: list[str] = []
    categories = sorted({r.category for r in runs})  # whatever the data folder holds
    for engine in engines:
        mine = [r for r in runs if r.engine == engine]
        if not mine:
            continue
        best, _ = best_threshold([(r.score, r.labels) for r in mine])
        thresholds.append(f"{engine}: {best:.3g}")
        for cat in (*categories, "all"):
            group = mine if cat == "all" else [r for r in mine if r.category == cat]
            if group:
                table.add_row(engine, cat, *_row(group, best))
        table.add_section()
    console.print(table)
    console.print(
        "best thresholds (chosen on the labels, over all files): " + "; ".join(thresholds)
    )
    console.print(LEGEND)
    if per_file:
        _per_file(console, runs)


LEGEND = """\
standard, lowFP, lowFN: NAB's standard, reward_low_FP_rate and reward_low_FN_rate scores (0 = flags
  nothing, 100 = every window at its left edge) at the product's threshold, every row with
  anomaly_score > 1 a detection (NAB's convention: each flagged row outside a window costs).
best thr: the standard score at the single threshold (printed below) that maximises it over all
  files, chosen with the labels as NAB's scoreboard does (optimistic). alert-start: the standard
  score counting only the first row of each run of flagged rows (an alert firing; not comparable
  with NAB's scoreboard).
precision: flagged events overlapping a window / events; recall: windows overlapped by an event;
  FA/1k: events overlapping no window per 1,000 scored rows. fit s: seconds per fit of one series;
  infer s: seconds to score one whole file step by step; ms/step: per inference window."""


def _per_file(console: Console, runs: Sequence[FileRun]) -> None:
    table = Table(title="per file (threshold 1, every flagged row)")
    for h in ("engine", "file", "windows", "NAB@1", "raw", "tp", "fn", "fp", "FA/1k"):
        table.add_column(h, justify="left" if h in ("engine", "file") else "right")
    for r in sorted(runs, key=lambda r: (r.engine, r.file)):
        s = score_file(detections(r.score, THRESHOLD), r.labels)
        ev = event_stats(r.score, r.labels)
        table.add_row(
            r.engine, r.file, str(ev.windows), _fmt(nab([r], THRESHOLD)), f"{s.raw:.2f}",
            str(s.tp), str(s.fn), str(s.fp), _fmt(ev.false_alarms_per_1000, 2),
        )  # fmt: skip
    console.print(table)


def dump(runs: Sequence[FileRun], root: Path, data: Path) -> int:
    """Write ``root/<engine>/<category>/<file>.csv`` (``timestamp,value,anomaly_score``, one row
    per row of the data file, 0 where nothing was scored: the learning period, gaps): the files
    NAB's own scorer reads. Returns how many files were written."""
    for r in runs:
        frame = pd.read_csv(data / r.file)
        frame["anomaly_score"] = np.nan_to_num(r.score, nan=0.0)
        out = root / _folder(r.engine) / r.file
        out.parent.mkdir(parents=True, exist_ok=True)
        frame[["timestamp", "value", "anomaly_score"]].to_csv(out, index=False)
    return len(runs)


def plots(runs: Sequence[FileRun], root: Path, data: Path) -> int:
    """Write ``root/<engine>/<category>/<file>.png`` (the series, its band, the rows flagged, the
    score, the labelled windows shaded) and, beside it, ``<file>.csv``
    (``timestamp,value,yhat,lower,upper,anomaly_score`` per row of the data file, empty where
    nothing was scored) for every run that kept its band. Returns how many files were drawn."""
    drawn = 0
    for r in runs:
        if r.band is None:
            continue
        frame = pd.read_csv(data / r.file)
        ts = seconds(frame["timestamp"])
        frame["yhat"], frame["lower"], frame["upper"] = r.band
        frame["anomaly_score"] = r.score
        out = root / _folder(r.engine) / r.file
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False, columns=_BAND_COLUMNS)
        # A few NAB files step back in time (a clock reset): drawn are the rows after every
        # earlier one, as the grid reads them.
        ahead = ts > np.maximum.accumulate(np.concatenate([[np.iinfo(np.int64).min], ts[:-1]]))
        values = frame["value"].to_numpy(float)[None, ahead]
        batch = SeriesBatch(({"__name__": "value", "file": r.file},), ts[ahead], values)
        scored = Scored(r.score[None, ahead], *(b[None, ahead] for b in r.band))
        s = score_file(detections(r.score, THRESHOLD), r.labels)
        title = (
            f"{r.engine} {r.file}: NAB standard {_fmt(normalised([s]))}, windows found {s.tp} "
            f"of {s.tp + s.fn}, {s.fp} flagged rows outside them"
        )
        spans = [(int(ts[a]), int(ts[b])) for a, b in r.labels.windows]
        plot_scored(batch, scored, out.with_suffix(".png"), title=title, spans=spans)
        drawn += 1
    return drawn


_BAND_COLUMNS = ["timestamp", "value", "yhat", "lower", "upper", "anomaly_score"]


def _folder(engine: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", engine)
