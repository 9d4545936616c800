"""The Numenta Anomaly Benchmark (NAB) scorer, plus event-level precision and recall.

NAB scores a file by its labelled anomaly *windows* (inclusive row ranges):

* the first ``min(floor(0.15 n), 750)`` rows are a probationary period and are ignored;
* a window's best (earliest) detection earns ``tp * S(p) / S(-1)`` with
  ``S(p) = 2 sigmoid(-5p) - 1`` and ``p = -(right - i + 1) / width`` (about ``+tp`` at the left
  edge, 0 at the right edge); later detections in the same window neither add nor cost;
* a window without a detection costs ``fn``;
* a detection outside every window costs ``fp * S(p)`` with ``p = |prev_right - i| /
  (prev_width - 1)`` from the preceding window's right edge (``S = -1`` for ``p > 3`` or when no
  window precedes it), so a late detection just after a window costs little.

The corpus score is ``100 (raw - null) / (perfect - null)`` over the summed raw scores, where
the null detector flags nothing (``-fn`` per window) and the perfect one flags every window at
its left edge (``+tp`` per window).

**What counts as a detection.** As NAB scores its published detectors, every row with
``anomaly_score > threshold`` (1 by the product's contract) is one (``mode="row"``, the
default): each row of a long false run costs another false positive. Counting only the
*rising edge* of each run (``mode="edge"``, one alert firing per run) reads higher and is not
comparable with NAB's scoreboard; it is offered as a secondary figure. Missing scores (NaN) are
never flagged. NAB's own scorer flags ``score >= threshold``; the two agree unless a score is
exactly the threshold.

Event-level metrics do not depend on that choice: an *event* is a run of consecutive flagged
rows after the probationary period; it is true when it overlaps a window. Precision is true
events over events; recall is windows overlapped by an event (i.e. containing at least one
flagged row) over windows; false alarms are events overlapping no window, per 1,000 rows scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Mode = Literal["edge", "row"]

PROBATION_SHARE = 0.15
PROBATION_MAX = 750  # rows: NAB caps the probationary period at 15% of 5,000 rows


@dataclass(frozen=True)
class CostProfile:
    """NAB's weights of a true positive, a false positive and a missed window."""

    tp: float
    fp: float
    fn: float


PROFILES: dict[str, CostProfile] = {
    "standard": CostProfile(1.0, 0.11, 1.0),
    "reward_low_FP_rate": CostProfile(1.0, 0.22, 1.0),
    "reward_low_FN_rate": CostProfile(1.0, 0.11, 2.0),
}
STANDARD = PROFILES["standard"]


def probation_rows(n: int) -> int:
    """How many leading rows of an ``n``-row file NAB ignores."""
    return min(int(PROBATION_SHARE * n), PROBATION_MAX)


def scaled_sigmoid(p: FloatArray) -> FloatArray:
    """``2 sigmoid(-5p) - 1``, and -1 beyond ``p > 3`` (far after a window)."""
    p = np.asarray(p, dtype=np.float64)
    near = np.minimum(p, 3.0)  # keeps exp() finite; the clipped part is replaced below
    return np.where(p > 3.0, -1.0, 2.0 / (1.0 + np.exp(5.0 * near)) - 1.0)


@dataclass(frozen=True)
class Labels:
    """One file's length and its labelled windows as inclusive ``(left, right)`` row indices.

    Windows must be sorted, disjoint and inside ``[0, n)``. A window lying wholly in the
    probationary period is not scored (NAB ignores those rows) but still counts as the
    "preceding window" of later false positives.
    """

    n: int
    windows: IntArray = field(default_factory=lambda: np.empty((0, 2), dtype=np.int64))

    def __post_init__(self) -> None:
        w = np.asarray(self.windows, dtype=np.int64).reshape(-1, 2)
        if w.size and (
            w[0, 0] < 0
            or w[-1, 1] >= self.n
            or np.any(w[:, 1] < w[:, 0])
            or np.any(w[1:, 0] <= w[:-1, 1])
        ):
            raise ValueError(f"windows must be sorted, disjoint and in [0, {self.n}): {w.tolist()}")
        object.__setattr__(self, "windows", w)

    @classmethod
    def from_timestamps(
        cls, timestamps: Sequence[int] | IntArray, windows: Iterable[tuple[int, int]]
    ) -> Labels:
        """Windows given as ``(start, end)`` times, mapped to the rows they cover."""
        ts = np.asarray(timestamps, dtype=np.int64)
        bounds = [
            (int(np.searchsorted(ts, a, "left")), int(np.searchsorted(ts, b, "right")) - 1)
            for a, b in windows
        ]
        return cls(ts.size, np.array([b for b in bounds if b[1] >= b[0]], dtype=np.int64))

    @property
    def probation(self) -> int:
        return probation_rows(self.n)

    @property
    def scored_windows(self) -> BoolArray:
        """Which windows reach past the probationary period."""
        return np.asarray(self.windows[:, 1] >= self.probation)

    def window_of_rows(self) -> IntArray:
        """Each row's window index, or -1 outside every window."""
        which = np.full(self.n, -1, dtype=np.int64)
        for k, (left, right) in enumerate(self.windows):
            which[left : right + 1] = k
        return which


def row_weights(labels: Labels, profile: CostProfile = STANDARD) -> FloatArray:
    """What a detection at each row would be worth: a TP weight inside windows, an FP cost
    (negative) outside them."""
    rows = np.arange(labels.n)
    left, right = labels.windows[:, 0], labels.windows[:, 1]
    width = (right - left + 1).astype(np.float64)
    which = labels.window_of_rows()
    weights = np.full(labels.n, -profile.fp)
    inside = which >= 0
    k = which[inside]
    position = -(right[k] - rows[inside] + 1) / width[k]
    weights[inside] = profile.tp * scaled_sigmoid(position) / scaled_sigmoid(np.array(-1.0))
    # The preceding window of row i is the last one whose right edge is before i.
    prev = np.searchsorted(right, rows, side="left") - 1
    after = ~inside & (prev >= 0)
    pk = prev[after]
    span = width[pk] - 1.0
    distance = np.abs(rows[after] - right[pk]).astype(np.float64)
    past = np.divide(distance, span, out=np.full(distance.shape, np.inf), where=span > 0)
    weights[after] = profile.fp * scaled_sigmoid(past)
    return weights


def detections(score: FloatArray, threshold: float = 1.0, *, mode: Mode = "row") -> BoolArray:
    """Rows counted as detections: every row of ``score > threshold`` (``row``, as NAB's
    detectors are scored) or the run starts only (``edge``, as an alert fires)."""
    flagged: BoolArray = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=-np.inf) > threshold
    if mode == "row":
        return flagged
    return np.asarray(flagged & ~np.concatenate([[False], flagged[:-1]]))


@dataclass(frozen=True)
class FileScore:
    """NAB's raw score of one file with its null and perfect baselines and the counts."""

    raw: float
    null: float
    perfect: float
    tp: int  # windows detected
    fn: int  # windows missed
    fp: int  # detections outside windows


def score_file(
    detected: BoolArray,
    labels: Labels,
    profile: CostProfile = STANDARD,
    *,
    weights: FloatArray | None = None,
) -> FileScore:
    """NAB's raw score of ``detected`` (one bool per row); ``weights`` may be precomputed by
    ``row_weights(labels, profile)`` when one file is scored many times."""
    w = row_weights(labels, profile) if weights is None else weights
    hits = np.flatnonzero(detected[: labels.n])
    hits = hits[hits >= labels.probation]
    which = labels.window_of_rows()[hits]
    best = np.full(len(labels.windows), -np.inf)
    np.maximum.at(best, which[which >= 0], w[hits[which >= 0]])  # the earliest detection wins
    counted = labels.scored_windows
    found = counted & np.isfinite(best)
    missed = int(np.count_nonzero(counted & ~found))
    fp_rows = hits[which < 0]
    raw = float(best[found].sum() - profile.fn * missed + w[fp_rows].sum())
    windows = int(np.count_nonzero(counted))
    return FileScore(
        raw, -profile.fn * windows, profile.tp * windows, int(found.sum()), missed, fp_rows.size
    )


def normalised(scores: Iterable[FileScore]) -> float:
    """The corpus score: 0 for the null detector, 100 for the perfect one (NaN if no window)."""
    items = list(scores)
    raw, null = sum(s.raw for s in items), sum(s.null for s in items)
    perfect = sum(s.perfect for s in items)
    return 100.0 * (raw - null) / (perfect - null) if perfect > null else float("nan")


def default_thresholds() -> FloatArray:
    """Candidate thresholds for the best-threshold sweep: 1 and a log grid over 0.1..1e6 (40
    per decade; a band that collapses on a constant stretch gives huge scores)."""
    return np.unique(np.concatenate([[1.0], np.geomspace(0.1, 1e6, 281)]))


def best_threshold(
    files: Sequence[tuple[FloatArray, Labels]],
    *,
    mode: Mode = "row",
    profile: CostProfile = STANDARD,
    thresholds: FloatArray | None = None,
) -> tuple[float, float]:
    """The single threshold maximising the corpus score of ``(score, labels)`` files, and that
    score: NAB's published scoreboard number (optimistic: it is chosen with the labels)."""
    weights = [row_weights(labels, profile) for _, labels in files]
    best = (float("nan"), -np.inf)
    for t in default_thresholds() if thresholds is None else thresholds:
        total = normalised(
            score_file(detections(s, float(t), mode=mode), labels, profile, weights=w)
            for (s, labels), w in zip(files, weights, strict=True)
        )
        if total > best[1]:
            best = (float(t), total)
    return best


@dataclass(frozen=True)
class EventStats:
    """Event-level counts of one file or, summed with ``+``, of a corpus."""

    events: int = 0
    true_events: int = 0
    windows: int = 0
    windows_hit: int = 0
    rows: int = 0

    def __add__(self, other: EventStats) -> EventStats:
        return EventStats(
            self.events + other.events,
            self.true_events + other.true_events,
            self.windows + other.windows,
            self.windows_hit + other.windows_hit,
            self.rows + other.rows,
        )

    @property
    def precision(self) -> float:
        return self.true_events / self.events if self.events else float("nan")

    @property
    def recall(self) -> float:
        return self.windows_hit / self.windows if self.windows else float("nan")

    @property
    def false_alarms_per_1000(self) -> float:
        return 1000.0 * (self.events - self.true_events) / self.rows if self.rows else float("nan")


def event_stats(score: FloatArray, labels: Labels, threshold: float = 1.0) -> EventStats:
    """Events (runs of ``score > threshold`` after the probationary period) against windows."""
    flagged = detections(score, threshold, mode="row")[: labels.n].copy()
    flagged[: labels.probation] = False
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flagged.astype(np.int8), [0]])))
    starts, ends = edges[::2], edges[1::2]  # run i covers rows [starts[i], ends[i])
    in_window = np.concatenate([[0], np.cumsum(labels.window_of_rows() >= 0)])
    true = np.count_nonzero(in_window[ends] - in_window[starts] > 0)
    hit_rows = np.concatenate([[0], np.cumsum(flagged)])
    left, right = labels.windows[:, 0], labels.windows[:, 1]
    counted = labels.scored_windows
    hit = (hit_rows[right + 1] - hit_rows[left] > 0) & counted
    return EventStats(
        starts.size,
        int(true),
        int(np.count_nonzero(counted)),
        int(np.count_nonzero(hit)),
        labels.n - labels.probation,
    )
