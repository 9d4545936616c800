"""PyOD outlier detectors on sliding windows, mapped onto the forecast-band contract.

**Features.** The point at ``t`` is described by the window of the ``window`` values ending at
``t`` (the point itself included), each scaled by its series' median and robust spread learned at
fit, and with ``diffs`` also the point minus each earlier value of the window. A detector
(``IForest`` by default, ``LOF``, or another PyOD detector by class name, with its own
parameters) is fitted on training windows pooled across series (``pooled=False``: one detector
per series), at most ``max_windows`` of them, drawn at random.

**The honest mapping to a band.** PyOD scores the window ending at a point, so it needs the
actual value, which ``predict`` never sees; a detector has no forecast to give. We ask instead
which values the detector would call normal: for each series, given its last ``window - 1``
context values, the band is the contiguous set of candidates ``y`` around the best-scored one
whose window ``[context..., y]`` scores at most the threshold, found by a grid search over ``y``
(vectorized over series) and a finer grid at the edges (``windowband.band``); ``yhat`` is the
best-scored candidate. The profile floor (``engines/floor.py``) then widens each side of the
band, where narrower, to the side of the built-in profile's band (fitted on the same history,
its season chosen from the data), moved to ``yhat``. A score ``|y - yhat| / half-width``
above 1 then means exactly that the detector flags the point and that it lies beyond the
profile's width from ``yhat``, up to the search's resolution. The detector alone, at 0.999,
flagged about 12 normal points per 1,000 on NAB's artificialNoAnomaly: a few hundred
held-out windows of one series cannot tell its 0.999
threshold, and windows know no time of day. Inside the band the score is a distance from
``yhat``, not the detector's score, and the band may be asymmetric.

**Thresholds, calibrated at fit.** Up to 128 windows of each series (more when there are few
series: 8,192 in all; at most half of a series' windows) are held out of training; the
detector's scores of them, standardized per series by their median and spread and pooled across
series, give a split-conformal quantile at the asked ``interval`` (their largest when too few
for it). A series' threshold is its median plus that many spreads, so
a noisy series is not flagged for its usual noise, nor a quiet one spared. ``contamination`` only
sets PyOD's own ``threshold_``, which is not used.

**Limits.** Every step of a multi-step horizon gets the same band, from the context's last window
(the values in between are unknown): the band is meant for the next point. The grid spans
``span`` times the series' step-to-step spread around the recent level; a detector that would
accept values beyond it is cut there. While an anomaly sits in the context's last window, the
detector would flag any next value; those series get no band here (NaN), hence the built-in
profile's under the floor, so one anomaly does not flag the ``window - 1`` points after it.
Scaling uses the training median: a lasting level shift stays flagged until the next training.
Windows carry no time of day. Predicting costs ``series x (grid + 2 * refine)``
``decision_function`` rows. Series with fewer
than 3 held-out windows (about ``window + 5`` points) are unknown (cold start); contexts shorter
than ``window - 1`` points get no band here (NaN), hence the profile's under the floor.

Artifacts are pickles (they hold the fitted detectors) in the versioned envelope: load them only
from a trusted ArtifactStore.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.engines.base import (
    PickledEngine,
    check_floor,
    check_int,
    check_number,
    check_unique,
    require,
    translated,
)
from openanomaly.engines.kernels.panel import ScaledPanel, interpolate_short_gaps, last_run
from openanomaly.engines.kernels.robust import MAD_TO_SD, MIN_POINTS, TINY, nanmedian, z_score
from openanomaly.engines.pyod.windowband import band, window_features
from openanomaly.errors import EngineError, NotEnoughHistory, UnknownModel

DEFAULT_MODEL = "IForest"
DETECTORS = {  # class name -> module, for the tabular detectors that need no torch
    "IForest": "iforest",
    "LOF": "lof",
    "KNN": "knn",
    "ECOD": "ecod",
    "COPOD": "copod",
    "HBOS": "hbos",
    "PCA": "pca",
    "OCSVM": "ocsvm",
    "MCD": "mcd",
    "INNE": "inne",
    "LODA": "loda",
    "CBLOF": "cblof",
    "COF": "cof",
    "SOD": "sod",
    "ABOD": "abod",
    "GMM": "gmm",
    "KDE": "kde",
    "KPCA": "kpca",
    "QMCD": "qmcd",
    "Sampling": "sampling",
    "FeatureBagging": "feature_bagging",
}
ENGINE_PARAMS = (
    "window",
    "diffs",
    "pooled",
    "max_windows",
    "contamination",
    "grid",
    "span",
    "refine",
    "max_gap",
    "spread_floor",
    "random_state",
)
_UNIT_FLOOR = 1e-3  # smallest grid unit, in series-spread units
_CALIBRATION = 128  # held-out windows per series whose scores set its threshold, at least...
_CALIBRATION_TOTAL = 8192  # ...and at least this many in all when series are few


def _detector_class(name: str) -> Any:
    if name not in DETECTORS:
        raise UnknownModel("pyod detector", name, list(DETECTORS))
    return getattr(require("pyod", f"pyod.models.{DETECTORS[name]}")[0], name)


def _windows(
    filled: FloatArray, observed: npt.NDArray[np.bool_], w: int
) -> tuple[IntArray, IntArray]:
    """Row and last column of every full window whose last point was observed."""
    ok = ~np.isnan(filled)
    run = np.cumsum(np.concatenate([np.zeros((ok.shape[0], 1), int), ok], axis=1), axis=1)
    full = np.zeros_like(ok)
    full[:, w - 1 :] = run[:, w:] - run[:, :-w] == w
    rows, cols = np.nonzero(full & observed)
    return rows.astype(np.int64), cols.astype(np.int64)


class PyODEngine(ScaledPanel, PickledEngine):
    """A PyOD detector on sliding windows, read as a band (see the module doc).

    Args:
        name: a class name of ``DETECTORS`` (default IForest).
        step: the grid spacing in seconds.
        detector_params: passed to the detector's constructor (checked against its signature).
        window: points per window, >= 2.
        diffs: add the point minus each earlier value of its window to the features.
        pooled: one detector for all series (True) or one per series.
        max_windows: most training windows (per detector), >= 100.
        contamination: PyOD's expected outlier share, in (0, 0.5] (its ``threshold_`` only).
        grid: candidates of the band search, >= 8.
        span: half-width of the search, in step-to-step spreads, > 0.
        refine: candidates of the finer grid at each band edge, >= 0.
        max_gap: longest gap (in steps) interpolated, >= 0.
        spread_floor: smallest half-width relative to ``|median|`` of the series, in [0, 1).
        random_state: seed of the window sampling and of the detector, >= 0.

    Attributes:
        keys_: the series identities seen by ``fit``.
        detectors_: the fitted detector (pooled), or one per series (None: too few windows).
        score_center_, score_scale_: ``(series,)`` median and spread of the detector's scores of
            its held-out windows.
        scores_: the held-out scores standardized by those, pooled and sorted.
        center_, scale_: ``(series,)`` median and robust spread, the features' scaling.
        unit_: ``(series,)`` the search grid's unit: robust spread of the scaled first differences.
        known_: ``(series,)`` which series had windows to learn from.
    """

    ENGINE = "pyod"
    FORMAT = 2  # 2: the envelope, no profile inside (the floor wraps the engine)
    keys_: tuple[str, ...]
    detectors_: list[Any]
    score_center_: FloatArray
    score_scale_: FloatArray
    scores_: FloatArray
    center_: FloatArray
    scale_: FloatArray
    unit_: FloatArray
    known_: npt.NDArray[np.bool_]

    def __init__(
        self,
        name: str = DEFAULT_MODEL,
        detector_params: Mapping[str, Any] | None = None,
        *,
        step: int,
        window: int = 8,
        diffs: bool = True,
        pooled: bool = True,
        max_windows: int = 20_000,
        contamination: float = 0.005,
        grid: int = 48,
        span: float = 8.0,
        refine: int = 16,
        max_gap: int = 5,
        spread_floor: float = 0.001,
        random_state: int = 0,
    ) -> None:
        self._cls = _detector_class(name)
        self.name, self.step = name, check_int("step", step, 1)
        self.window = check_int("window", window, 2)
        for flag, value in (("diffs", diffs), ("pooled", pooled)):
            if not isinstance(value, bool):
                raise EngineError(f"{flag} must be true or false, got {value!r}")
        self.diffs, self.pooled = diffs, pooled
        self.max_windows = check_int("max_windows", max_windows, 100)
        self.contamination = check_number(
            "contamination", contamination, 0, 0.5, open_low=True, open_high=False
        )
        self.span = check_number("span", span, 0, open_low=True)
        self.grid, self.refine = check_int("grid", grid, 8), check_int("refine", refine, 0)
        self.max_gap = check_int("max_gap", max_gap, 0)
        self.spread_floor = check_floor(spread_floor)
        self.random_state = check_int("random_state", random_state, 0)
        self.detector_params = dict(detector_params or {})
        self._new_detector()  # checks the detector's parameters now

    def _new_detector(self) -> Any:
        accepted = [p for p in inspect.signature(self._cls.__init__).parameters if p != "self"]
        unknown = sorted(set(self.detector_params) - set(accepted))
        if unknown:
            raise EngineError(
                f"pyod {self.name} has no parameter {', '.join(map(repr, unknown))}; accepted: "
                f"{', '.join([*ENGINE_PARAMS, *(p for p in accepted if p != 'contamination')])}"
            )
        kwargs = {"contamination": self.contamination, **self.detector_params}
        if "random_state" in accepted:
            kwargs.setdefault("random_state", self.random_state)
        try:
            return self._cls(**kwargs)
        except Exception as exc:
            raise EngineError(
                f"pyod {self.name}: bad parameters {self.detector_params}: {exc}"
            ) from None

    def _fit_detector(self, x: FloatArray) -> Any:
        # Repeated windows (a constant series) would give neighbour-based detectors zero
        # distances, hence infinite scores: keep one of each.
        x = np.unique(x, axis=0)
        detector = self._new_detector()
        with translated(f"pyod {self.name} failed to fit {x.shape[0]} windows"):
            return detector.fit(x)

    def fit(self, history: SeriesBatch) -> Self:
        """Fit the detector(s) on windows of ``history`` and calibrate thresholds; returns self."""
        check_unique(history.keys)
        n = len(history)
        norm = self._learn_scale(history)
        filled = interpolate_short_gaps(norm, self.max_gap)
        diff = np.diff(filled, axis=1)
        unit = MAD_TO_SD * nanmedian(np.abs(diff - nanmedian(diff)[:, None]))
        self.unit_ = np.fmax(np.nan_to_num(unit, nan=1.0), _UNIT_FLOOR)
        rows, cols = _windows(filled, ~np.isnan(norm), self.window)
        rng = np.random.default_rng(self.random_state)
        order = np.lexsort((rng.random(rows.size), rows))  # by series, at random within one
        rows, cols = rows[order], cols[order]
        counts = np.bincount(rows, minlength=n)
        rank = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
        per_series = max(_CALIBRATION, -(-_CALIBRATION_TOTAL // n))
        n_calib = np.minimum(per_series, counts // 2)
        calib = rank < n_calib[rows]

        def features(at: IntArray) -> FloatArray:
            lags = cols[at, None] - self.window + 1 + np.arange(self.window - 1)
            last = filled[rows[at], cols[at]][:, None]
            return window_features(filled[rows[at, None], lags], last, diffs=self.diffs)

        train, held = np.flatnonzero(~calib), np.flatnonzero(calib)
        if self.pooled:
            train_groups, held_groups = [train], [held]
        else:
            train_groups = np.split(train, np.cumsum(counts - n_calib)[:-1])
            held_groups = np.split(held, np.cumsum(n_calib)[:-1])
        self.detectors_ = []
        scores = np.full(held.size, np.nan)
        done = 0
        for group, at in zip(train_groups, held_groups, strict=True):
            detector = None
            if group.size >= 2 * self.window:
                fit_on = group
                if group.size > self.max_windows:
                    fit_on = np.sort(rng.choice(group, self.max_windows, replace=False))
                detector = self._fit_detector(features(fit_on))
                if at.size:
                    scores[done : done + at.size] = detector.decision_function(features(at))
            self.detectors_.append(detector)
            done += at.size
        if all(d is None for d in self.detectors_):
            raise NotEnoughHistory(f"pyod: no series has enough windows of {self.window} points")
        held_scores = np.full((n, max(int(n_calib.max()), 1)), np.nan)
        held_scores[rows[held], rank[held]] = scores
        self._calibrate(held_scores)
        self._set_keys(history.keys, self.known_)
        return self

    def _calibrate(self, held: FloatArray) -> None:
        """Thresholds from ``(series, k)`` held-out window scores (NaN padded): each series'
        scores are standardized by their median and spread, then pooled."""
        count = np.count_nonzero(np.isfinite(held), axis=1)
        held = np.where(np.isfinite(held), held, np.nan)
        center = nanmedian(held)
        spread = MAD_TO_SD * nanmedian(np.abs(held - center[:, None]))
        spread = np.fmax(spread, 1e-6 * np.abs(center) + TINY)
        self.known_ = count >= MIN_POINTS
        self.score_center_, self.score_scale_ = center, spread
        u = (held[self.known_] - center[self.known_, None]) / spread[self.known_, None]
        self.scores_ = np.sort(u[np.isfinite(u)])

    def _threshold(self, rows: IntArray, interval: float) -> FloatArray:
        """Each series' score threshold at ``interval``: the split-conformal quantile of the
        pooled standardized held-out scores (their largest when too few for ``interval``)."""
        n = self.scores_.size
        k = min(math.ceil((n + 1) * interval), n)
        q = float(self.scores_[k - 1]) if n else 0.0
        return self.score_center_[rows] + q * self.score_scale_[rows]

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """The detector's inlier band for the next point, for every step (see the module doc);
        NaN for the series it cannot band."""
        self.check_fitted("detectors_")
        z_score(interval)  # validates it
        scaled = self._scaled(context, timestamps)
        out, sel, r, filled = scaled.out, scaled.sel, scaled.rows, scaled.filled
        if not sel.size:
            return out
        start, length = last_run(filled, self.window - 1)
        ok = length == self.window - 1
        sel, r, start = sel[ok], r[ok], start[ok]
        base = filled[np.flatnonzero(ok)[:, None], start[:, None] + np.arange(self.window - 1)]
        groups = (
            [(np.arange(r.size), 0)]
            if self.pooled
            else [(np.array([i]), int(ri)) for i, ri in enumerate(r)]
        )
        for part, d in groups:
            if not part.size or self.detectors_[d] is None:
                continue
            rr = r[part]
            with translated(f"pyod {self.name}: predict"):
                mid, lo, hi, abnormal = band(
                    self.detectors_[d].decision_function,
                    base[part],
                    nanmedian(base[part]),
                    self.unit_[rr],
                    self._threshold(rr, interval),
                    span=self.span,
                    grid=self.grid,
                    refine=self.refine,
                    diffs=self.diffs,
                )
            # An abnormal context window would flag any next value: no band (the floor's).
            keep = ~abnormal
            mid, lo, hi, rr = mid[keep], lo[keep], hi[keep], rr[keep]
            c, s = self.center_[rr], self.scale_[rr]
            y, rows_out = (c + s * mid)[:, None], sel[part[keep]]
            floor = self.spread_floor * np.abs(c)[:, None] + TINY
            out.yhat[rows_out] = y
            out.lower[rows_out] = np.minimum((c + s * lo)[:, None], y - floor)
            out.upper[rows_out] = np.maximum((c + s * hi)[:, None], y + floor)
        return out


def create(name: str, params: Mapping[str, Any], *, step: int) -> PyODEngine:
    """A new engine: engine options (``ENGINE_PARAMS``) are taken out, the rest go to the
    detector's constructor."""
    engine = {k: v for k, v in params.items() if k in ENGINE_PARAMS}
    detector = {k: v for k, v in params.items() if k not in ENGINE_PARAMS}
    return PyODEngine(name, detector, step=step, **engine)


def loads(data: bytes, *, step: int) -> PyODEngine:
    """An engine saved by ``dumps``; refuses one trained at another step."""
    _detector_class(DEFAULT_MODEL)
    return PyODEngine.loads(data, step=step)
