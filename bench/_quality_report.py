"""The tables of ``bench/quality.py``: NAB scores, event metrics and cost per engine/category."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rich.console import Console
from rich.table import Table

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

CATEGORIES = ("artificialNoAnomaly", "artificialWithAnomaly", "realKnownCause", "realAWSCloudwatch")
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

    @property
    def category(self) -> str:
        return self.file.split("/")[0]


def nab(
    runs: Sequence[FileRun], threshold: float, *, mode: Mode = "edge", profile: str = "standard"
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


def _row(runs: Sequence[FileRun], best: float, best_row: float) -> list[str]:
    ev = events(runs)
    fits = sum(r.fits for r in runs)
    steps = sum(r.windows for r in runs)
    infer = sum(r.infer_seconds for r in runs)
    return [
        str(len(runs)),
        str(ev.windows),
        _fmt(nab(runs, THRESHOLD)),
        _fmt(nab(runs, THRESHOLD, mode="row")),
        _fmt(nab(runs, best)),
        _fmt(nab(runs, best_row, mode="row")),
        _fmt(nab(runs, THRESHOLD, profile="reward_low_FP_rate")),
        _fmt(nab(runs, THRESHOLD, profile="reward_low_FN_rate")),
        _fmt(ev.precision, 2),
        _fmt(ev.recall, 2),
        _fmt(ev.false_alarms_per_1000, 2),
        _fmt(sum(r.fit_seconds for r in runs) / fits if fits else math.nan, 3),
        _fmt(infer / len(runs), 2),
        _fmt(1000 * infer / steps if steps else math.nan, 2),
    ]


HEADERS = (
    "engine", "category", "files", "windows", "NAB@1", "NAB@1 row", "NAB best", "best row",
    "lowFP@1", "lowFN@1", "precision", "recall", "FA/1k", "fit s", "infer s", "ms/step",
)  # fmt: skip


def report(runs: Sequence[FileRun], *, engines: Sequence[str], per_file: bool = False) -> None:
    """Print the quality table (and optionally one row per file) to stdout."""
    console = Console(width=220)
    table = Table(title="NAB sample, standard profile unless noted", show_lines=False)
    for h in HEADERS:
        table.add_column(h, justify="left" if h in ("engine", "category") else "right")
    thresholds: list[str] = []
    for engine in engines:
        mine = [r for r in runs if r.engine == engine]
        if not mine:
            continue
        corpus = [(r.score, r.labels) for r in mine]
        best, _ = best_threshold(corpus)
        best_row, _ = best_threshold(corpus, mode="row")
        thresholds.append(f"{engine}: {best:.3g} (edge), {best_row:.3g} (row)")
        for cat in (*CATEGORIES, "all"):
            group = mine if cat == "all" else [r for r in mine if r.category == cat]
            if group:
                table.add_row(engine, cat, *_row(group, best, best_row))
        table.add_section()
    console.print(table)
    console.print(
        "best thresholds (chosen on the labels, over all files): " + "; ".join(thresholds)
    )
    console.print(LEGEND)
    if per_file:
        _per_file(console, runs)


LEGEND = """\
NAB@1: NAB standard score (0 = flags nothing, 100 = every window at its left edge) with the
  product's threshold, a detection being the start of a run of anomaly_score > 1 (an alert firing);
  "row": every row > 1 counts (NAB's own convention); "best"/"best row": the single threshold that
  maximises the corpus score (NAB's scoreboard, optimistic: chosen with the labels), applied to
  every category. lowFP/lowFN: NAB's reward_low_FP_rate / reward_low_FN_rate profiles at 1.
precision: flagged events overlapping a window / events; recall: windows overlapped by an event;
  FA/1k: events overlapping no window per 1,000 scored rows. fit s: seconds per fit of one series;
  infer s: seconds to score one whole file step by step; ms/step: per inference window."""


def _per_file(console: Console, runs: Sequence[FileRun]) -> None:
    table = Table(title="per file (threshold 1, edge detections)")
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
