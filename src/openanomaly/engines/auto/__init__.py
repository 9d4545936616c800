"""The ``auto`` engine: per series, the candidate model that forecast best on the end of the
training window.

```yaml
model:
  engine: auto
  params:
    holdout: 0.25                  # or a duration: "2d"
    candidates:                    # default: see default_candidates()
      - {engine: builtin, name: mad}
      - {engine: builtin, name: profile, params: {season: 1d}}
```

``fit`` holds out the last ``holdout`` of the window, fits every candidate on the head, and
replays the holdout as production would: windows of ``every`` are forecast from the ``context``
before them (at most ``max_windows``, evenly spread). Each candidate is scored per series by
the mean *interval score* (Winkler) of its ``interval`` band: the band's width, plus
``2 / (1 - interval)`` times the distance of each point outside it. A narrow band that still
covers the data wins, which is what anomaly scoring needs. A miss counts at most 3 robust
noise standard deviations of the series (from its first differences), so that anomalies and
level shifts in the holdout, which every model misses, do not reward the widest band. The
first candidate within ``tolerance`` of the best wins (the list is in order of preference,
simplest first), then each winner is refitted on the whole window for the series it won.
Series the holdout cannot rank get the first candidate. The cost is the candidates' fits on
the head, the replay, and the winners' refits.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from openanomaly.domain.series import FloatArray, Forecast, IntArray, SeriesBatch
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines.auto import select
from openanomaly.engines.base import Engine, check_int, check_unique, unknown_params
from openanomaly.engines.remote import wire
from openanomaly.errors import EngineError, UnknownModel
from openanomaly.ports import EngineFactory, ModelEngine

log = logging.getLogger(__name__)

DEFAULT_MODEL = "holdout"
_SEASONS = {"1d": 86400, "1w": 7 * 86400}


def default_candidates(step: int, span: int) -> list[ModelSpec]:
    """Simple first: the profile without season, daily and weekly profiles when the head spans
    two seasons, then AutoETS (daily when short enough for ETS) when installed. ``mad`` is not
    among them: its band fits the holdout's body well and its tails badly, so it won most
    series and then flagged every spike (NAB sample: -508 with it, see the README)."""
    out = [ModelSpec(name="profile", params={"season": None})]
    fits = {s: n % step == 0 and n // step >= 2 and span >= 2 * n for s, n in _SEASONS.items()}
    out += [ModelSpec(name="profile", params={"season": s}) for s in _SEASONS if fits[s]]
    if find_spec("statsforecast") is not None:
        daily = fits["1d"] and _SEASONS["1d"] // step <= 24
        params = {"season_length": "1d"} if daily else {}
        out.append(ModelSpec(engine="statsforecast", name="AutoETS", params=params))
    return out


def label(spec: ModelSpec) -> str:
    """A short name of a candidate: ``builtin/profile{season=1d}``."""
    params = ",".join(f"{k}={v}" for k, v in sorted(spec.params.items()))
    return f"{spec.engine}/{spec.name or 'default'}" + (f"{{{params}}}" if params else "")


class AutoEngine(Engine):
    """Picks per series the best of several candidate models (see the module doc).

    Args:
        candidates: ``{engine, name, params}`` models in order of preference; default
            ``default_candidates`` for the data.
        step: the grid spacing in seconds.
        holdout: the end of the training window held out: a fraction in (0, 1) or a duration.
        every: the horizon of each replayed forecast (default one hour, at least one step).
        context: the history each replayed forecast sees (default max(1h, 48 steps)).
        interval: the central band the interval score judges, in (0.5, 1); a moderate band
            (0.8) ranks more steadily than the 0.99 one used to score anomalies.
        max_windows: the most replayed forecasts (>= 1).
        tolerance: how much worse (relative) an earlier candidate may be and still win.
        factory: builds the candidates (default ``DefaultEngineFactory``).

    Attributes:
        keys_: the series identities seen by ``fit``.
        candidates_: the candidates that took part.
        scores_: ``(candidates, series)`` mean interval score on the holdout (NaN: not ranked).
        winners_: ``(series,)`` index into ``candidates_`` of each series' model.
        models_: per candidate, the model refitted on the series it won, or None.
    """

    ENGINE = "auto"
    FORMAT = 2  # 2: the envelope, candidates under their own band_floor
    keys_: tuple[str, ...]
    candidates_: list[ModelSpec]
    scores_: FloatArray
    winners_: npt.NDArray[np.intp]
    models_: list[ModelEngine | None]

    def __init__(
        self,
        candidates: Sequence[ModelSpec | Mapping[str, Any]] | None = None,
        *,
        step: int,
        holdout: float | str = 0.25,
        every: str | int | None = None,
        context: str | int | None = None,
        interval: float = 0.8,
        max_windows: int = 48,
        tolerance: float = 0.1,
        factory: EngineFactory | None = None,
    ) -> None:
        self.step = check_int("step", step, 1)
        self.candidates = None if candidates is None else [_spec(c) for c in candidates]
        if self.candidates is not None and not self.candidates:
            raise EngineError("candidates must list at least one model")
        self.holdout, self.every, self.context = holdout, every, context
        self._holdout = select.fraction_or_steps("holdout", holdout, step)
        self._every = select.steps("every", every, step, max(1, 3600 // step))
        self._context = select.steps("context", context, step, max(3600 // step, 48))
        if not isinstance(interval, float | int) or not 0.5 < interval < 1:
            raise EngineError(f"interval must be a number in (0.5, 1), got {interval!r}")
        if not isinstance(tolerance, float | int) or tolerance < 0:
            raise EngineError(f"tolerance must be a number >= 0, got {tolerance!r}")
        self.interval, self.tolerance = float(interval), float(tolerance)
        self.max_windows = check_int("max_windows", max_windows, 1)
        if factory is None:
            from openanomaly.engines import DefaultEngineFactory

            factory = DefaultEngineFactory()
        self._factory = factory

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters as ``create`` takes them."""
        cands = None if self.candidates is None else [c.model_dump() for c in self.candidates]
        return {
            "candidates": cands,
            "holdout": self.holdout,
            "every": self.every,
            "context": self.context,
            "interval": self.interval,
            "max_windows": self.max_windows,
            "tolerance": self.tolerance,
        }

    def fit(self, history: SeriesBatch) -> Self:
        """Rank the candidates on the holdout, then refit each winner; returns self."""
        check_unique(history.keys)
        total = history.timestamps.size
        held = self._holdout if self._holdout >= 1 else round(self._holdout * total)
        held = int(min(held, total - 1)) if total > 1 else 0
        ts = history.timestamps
        head = SeriesBatch(history.labels, ts[: total - held], history.values[:, : total - held])
        span = int(head.timestamps[-1] - ts[0]) + self.step if head.timestamps.size else 0
        self.candidates_ = self.candidates or default_candidates(self.step, span)
        self.scores_ = self._rank(history, head, held)
        self.winners_ = select.pick(self.scores_, self.tolerance)
        self.models_ = [self._refit(history, c) for c in range(len(self.candidates_))]
        self.keys_ = history.keys
        self._index = {k: i for i, k in enumerate(self.keys_)}
        log.info("auto picked %s", ", ".join(f"{m} for {n}" for m, n in self.summary().items()))
        return self

    def _rank(self, history: SeriesBatch, head: SeriesBatch, held: int) -> FloatArray:
        fitted = [self._fit_one(spec, head) for spec in self.candidates_]
        if held < 1 or not any(fitted):
            return np.full((len(fitted), len(history)), np.nan)
        replay = select.Replay(
            self.step, self._every, self._context, self.interval, self.max_windows
        )
        return replay.scores(fitted, history, held, self._factory.cold_start(step=self.step))

    def _fit_one(self, spec: ModelSpec, head: SeriesBatch) -> ModelEngine | None:
        """The candidate fitted on the head; None (and a warning) when it fails there."""
        try:
            model = self._factory.create(spec, step=self.step)
            present = np.flatnonzero(~np.all(np.isnan(head.values), axis=1))
            return model.fit(head.take(present)) if model.requires_fit else model
        except EngineError as exc:
            log.warning("auto: candidate %s left out: %s", label(spec), exc)
            return None

    def _refit(self, history: SeriesBatch, c: int) -> ModelEngine | None:
        rows = np.flatnonzero(self.winners_ == c)
        rows = rows[~np.all(np.isnan(history.values[rows]), axis=1)]
        if not rows.size:
            return None
        model = self._factory.create(self.candidates_[c], step=self.step)
        return model.fit(history.take(rows)) if model.requires_fit else model

    def summary(self) -> dict[str, int]:
        """How many series each winning candidate got, e.g. ``{"builtin/mad": 12}``."""
        counts = np.bincount(self.winners_, minlength=len(self.candidates_))
        return {label(s): int(k) for s, k in zip(self.candidates_, counts, strict=True) if k}

    def _rows(self, keys: Sequence[str]) -> IntArray:
        index = self.__dict__.get("_index", {})
        return np.fromiter((index.get(k, -1) for k in keys), dtype=np.int64, count=len(keys))

    def known(self, keys: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Which series were fitted and are known to the model that won them."""
        rows = self._rows(keys)
        out = np.zeros(len(keys), dtype=bool)
        for c, rows_c in self._groups(rows):
            model = self.models_[c]
            if model is not None:
                out[rows_c] = model.known([keys[i] for i in rows_c])
        return out

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """Each series forecast by the model that won it (unseen ones by the cold start)."""
        self.check_fitted("winners_")
        ts = np.asarray(timestamps, dtype=np.int64)
        rows = self._rows(context.keys)
        parts: list[tuple[npt.NDArray[np.intp], Forecast]] = []
        unseen = np.flatnonzero(rows < 0)
        cold = self._factory.cold_start(step=self.step)
        for c, rows_c in self._groups(rows):
            model = self.models_[c]
            if model is None:
                unseen = np.concatenate([unseen, rows_c])
                continue
            fc = select.with_cold(model, cold, context.take(rows_c), ts, interval)
            parts.append((rows_c, fc))
        if unseen.size:
            parts.append((unseen, cold.predict(context.take(unseen), ts, interval)))
        return Forecast.stack(parts, len(context), ts.size)

    def _groups(self, rows: IntArray) -> list[tuple[int, npt.NDArray[np.intp]]]:
        """Positions of the fitted ``rows`` (>= 0), grouped by their winning candidate."""
        if "winners_" not in self.__dict__:
            return []
        winner = np.where(rows >= 0, self.winners_[np.maximum(rows, 0)], -1)
        return [(int(c), np.flatnonzero(winner == c)) for c in np.unique(winner[winner >= 0])]

    def dumps(self) -> bytes:
        """The envelope: the scores and winners, and each winner's own artifact."""
        buf = io.BytesIO()
        np.savez(buf, scores=self.scores_, winners=self.winners_.astype(np.int64))
        members = {"arrays.npz": buf.getvalue()}
        members |= {f"model_{c}": m.dumps() for c, m in enumerate(self.models_) if m is not None}
        candidates = [c.model_dump() for c in self.candidates_]
        return self.pack(
            members, params=self.get_params(), candidates=candidates, keys=list(self.keys_)
        )


def _spec(value: ModelSpec | Mapping[str, Any]) -> ModelSpec:
    spec = value if isinstance(value, ModelSpec) else wire.model_from_json(value)
    if spec.engine == "auto":
        raise EngineError("candidates cannot use the auto engine itself")
    return spec


def create(
    name: str, params: Mapping[str, Any], *, step: int, factory: EngineFactory | None = None
) -> AutoEngine:
    """A new auto engine; ``params`` are ``AutoEngine``'s keyword arguments, ``factory`` builds
    its candidates."""
    if name != DEFAULT_MODEL:
        raise UnknownModel("auto model", name, [DEFAULT_MODEL])
    accepted = ("candidates", "holdout", "every", "context", "interval", "max_windows", "tolerance")
    unknown_params("auto engine", params, accepted)
    return AutoEngine(step=step, factory=factory, **params)


def loads(data: bytes, *, step: int, factory: EngineFactory | None = None) -> AutoEngine:
    """An engine saved by ``dumps``; each winner is loaded by its own engine."""
    head, members = AutoEngine.unpack(data, step=step)
    try:
        with np.load(io.BytesIO(members.pop("arrays.npz")), allow_pickle=False) as npz:
            scores, winners = npz["scores"], npz["winners"]
    except Exception as exc:  # np.load raises many kinds on garbage
        raise EngineError(f"not an auto model artifact: {exc}") from None
    engine = create(DEFAULT_MODEL, head["params"], step=step, factory=factory)
    engine.candidates_ = [ModelSpec.model_validate(c) for c in head["candidates"]]
    engine.keys_ = tuple(head["keys"])
    engine._index = {k: i for i, k in enumerate(engine.keys_)}
    engine.scores_, engine.winners_ = scores, winners.astype(np.intp)
    engine.models_ = [
        engine._factory.load(spec, members[f"model_{c}"], step=step)
        if f"model_{c}" in members
        else None
        for c, spec in enumerate(engine.candidates_)
    ]
    return engine


__all__ = ["DEFAULT_MODEL", "AutoEngine", "create", "default_candidates", "label", "loads"]
