"""``model.band_floor: profile``: each side of an engine's band at least the built-in profile's.

The library engines' own bands come from few held-out errors (conformal scores, detector
thresholds, a few dozen residuals) or from a normal extrapolation of learnt quantiles: neither
can tell a 0.999 quantile, and most know no time of day. The profile's tails come from the whole
training window, per season slot (AutoETS flagged 4.7 normal points per 1,000 on the NAB sample
without the floor, 0.6 with it; pyod's detector alone about 12, NHITS 93 on a noisy sine).

``ProfileFloor`` wraps any engine: ``fit`` fits it and a profile on the same history (the
profile's season is the engine's ``floor_season``); ``predict`` widens each side of the engine's
band, where narrower, to the same side of the profile's band moved to the engine's ``yhat``, and
gives a series the engine could not forecast (its row is NaN: a failed fit or forward, a context
too short) the profile's own forecast. An engine that needs no fit (Chronos, Darts' local models)
is floored at the unfitted profile of its context: the cold-start model. The factory applies it
(``DefaultEngineFactory``), never to the built-in engine itself, nor to the engines that choose
or host other engines (auto, remote: their models carry their own ``band_floor``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Self

import numpy as np

from openanomaly.domain.series import Forecast, IntArray, SeriesBatch
from openanomaly.engines import builtin
from openanomaly.engines.base import BoolArray, Engine
from openanomaly.errors import EngineError
from openanomaly.ports import ModelEngine


def floored(engine: Forecast, base: Forecast) -> Forecast:
    """``engine`` with each side at least ``base``'s (a NaN side of ``base`` floors nothing);
    its rows without a forecast (any NaN ``yhat``) are ``base``'s."""
    yhat = engine.yhat
    lower = np.fmin(engine.lower, yhat - (base.yhat - base.lower))
    upper = np.fmax(engine.upper, yhat + (base.upper - base.yhat))
    own = ~np.isnan(yhat).any(axis=1, keepdims=True)
    return Forecast(
        np.where(own, yhat, base.yhat),
        np.where(own, lower, base.lower),
        np.where(own, upper, base.upper),
    )


class ProfileFloor(Engine):
    """``inner`` with its band floored at the profile's (see the module doc).

    Attributes:
        inner: the wrapped engine.
        profile_: the profile fitted on the same history (unfitted for an engine without fit).
    """

    ENGINE = "profile-floor"
    FORMAT = 1

    def __init__(self, inner: ModelEngine, *, step: int) -> None:
        self.inner, self.step = inner, step
        self.season: str | int | None = getattr(inner, "floor_season", "auto")
        if not inner.requires_fit:
            self.profile_ = builtin.ProfileModel(step=step, season=None)

    @property
    def requires_fit(self) -> bool:
        """The engine's."""
        return self.inner.requires_fit

    @requires_fit.setter
    def requires_fit(self, value: bool) -> None:
        self.inner.requires_fit = value

    def fit(self, history: SeriesBatch) -> Self:
        """Fit the engine, then the profile on the same history; returns self."""
        self.inner.fit(history)
        self.profile_ = builtin.ProfileModel(step=self.step, season=self.season).fit(history)
        return self

    def known(self, keys: Sequence[str]) -> BoolArray:
        """The engine's known series."""
        return self.inner.known(keys)

    def predict(self, context: SeriesBatch, timestamps: IntArray, interval: float) -> Forecast:
        """The engine's forecast floored at the profile's (see the module doc)."""
        self.check_fitted("profile_")
        own = self.inner.predict(context, timestamps, interval)
        return floored(own, self.profile_.predict(context, timestamps, interval))

    def dumps(self) -> bytes:
        """The envelope around the engine's artifact and the profile's."""
        self.check_fitted("profile_", "dumps")
        members = {"inner": self.inner.dumps(), "profile": self.profile_.dumps()}
        return self.pack(members, season=self.season)

    @classmethod
    def load(cls, data: bytes, *, step: int, inner: Callable[[bytes], ModelEngine]) -> ProfileFloor:
        """A wrapper saved by ``dumps``; ``inner`` loads the engine's own artifact."""
        head, members = cls.unpack(data, step=step)
        engine = cls(inner(members["inner"]), step=step)
        profile = builtin.loads(members["profile"], step=step)
        if not isinstance(profile, builtin.ProfileModel):
            raise EngineError("not a profile-floor artifact: its floor is not a profile")
        engine.season, engine.profile_ = head.get("season", engine.season), profile
        return engine


__all__ = ["ProfileFloor", "floored"]
