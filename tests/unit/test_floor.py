"""``model.band_floor``: the profile floor is one wrapper the factory composes, visible in the
pipeline and possible to switch off; and the versioned artifact envelope refuses old layouts."""

from __future__ import annotations

import io
import json
import pickle
from typing import Any

import numpy as np
import pydantic
import pytest

from openanomaly.domain.series import Forecast
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines import DefaultEngineFactory
from openanomaly.engines.builtin import ProfileModel
from openanomaly.engines.floor import ProfileFloor
from openanomaly.errors import EngineError
from openanomaly.ports import ModelEngine
from tests.engines.test_engines import PANEL, STEP, TINY_NHITS, tiny

slow = pytest.mark.slow


def old_rule(own: Forecast, base: Forecast) -> Forecast:
    """The rule as the engines applied it before the wrapper, row by row: a row the engine
    forecast keeps its ``yhat`` and each side at least the profile's; any other row is the
    profile's forecast."""
    out = Forecast(own.yhat.copy(), own.lower.copy(), own.upper.copy())
    for i in range(own.yhat.shape[0]):
        if np.isnan(own.yhat[i]).any():
            out.yhat[i], out.lower[i], out.upper[i] = base.yhat[i], base.lower[i], base.upper[i]
            continue
        below, above = base.yhat[i] - base.lower[i], base.upper[i] - base.yhat[i]
        for j in range(own.yhat.shape[1]):
            if not np.isnan(below[j]):
                out.lower[i, j] = min(own.lower[i, j], own.yhat[i, j] - below[j])
            if not np.isnan(above[j]):
                out.upper[i, j] = max(own.upper[i, j], own.yhat[i, j] + above[j])
    return out


FLOORED = [
    pytest.param("statsforecast", "AutoETS", {"season_length": "1d"}, 86400, id="AutoETS"),
    pytest.param("mlforecast", "LightGBM", {"season": "1d"}, 86400, id="mlforecast"),
    pytest.param("pyod", "LOF", {}, "auto", id="pyod-LOF"),
    pytest.param("darts", None, {}, "auto", id="darts-default"),
    pytest.param("neuralforecast", "NHITS", TINY_NHITS, "auto", id="NHITS"),
]


@slow
@pytest.mark.parametrize(("engine", "name", "params", "season"), FLOORED)
def test_the_wrapper_gives_the_bands_of_the_old_rule(
    engine: str, name: str | None, params: dict[str, Any], season: str | int
) -> None:
    # The old rule floored at a profile fitted on the same history, at the model's season for
    # statsforecast and mlforecast, chosen from the data for the others.
    factory = DefaultEngineFactory()
    spec = ModelSpec(engine=engine, name=name, params=params)
    wrapped: Any = factory.create(spec, step=STEP).fit(PANEL.history)
    bare = factory.create(spec.model_copy(update={"band_floor": "none"}), step=STEP)
    assert not isinstance(bare, ProfileFloor)
    bare.fit(PANEL.history)
    profile = ProfileModel(step=STEP, season=season).fit(PANEL.history)
    future = PANEL.future[:1] if engine == "pyod" else PANEL.future
    for interval in (0.9, 0.999):
        got = wrapped.predict(PANEL.context, future, interval)
        own = bare.predict(PANEL.context, future, interval)
        want = old_rule(own, profile.predict(PANEL.context, future, interval))
        for field in ("yhat", "lower", "upper"):
            np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-12)


@slow
def test_chronos_floors_at_the_cold_start_profile() -> None:
    factory = DefaultEngineFactory()
    spec = ModelSpec(engine="chronos", name=tiny("bolt")())
    engine = factory.create(spec, step=STEP)
    assert isinstance(engine, ProfileFloor) and not engine.requires_fit
    own = engine.inner.predict(PANEL.context, PANEL.future, 0.999)
    cold = factory.cold_start(step=STEP).predict(PANEL.context, PANEL.future, 0.999)
    got = factory.load(spec, engine.dumps(), step=STEP).predict(PANEL.context, PANEL.future, 0.999)
    want = old_rule(own, cold)
    for field in ("yhat", "lower", "upper"):
        np.testing.assert_allclose(getattr(got, field), getattr(want, field), rtol=1e-6)


def test_the_factory_never_floors_the_profile_nor_composite_engines() -> None:
    factory = DefaultEngineFactory()
    for spec in (
        ModelSpec(),
        ModelSpec(name="mad"),
        ModelSpec(engine="auto", params={"candidates": [{"name": "mad"}]}),
        ModelSpec(engine="remote", params={"url": "http://model-server"}),
    ):
        assert not isinstance(factory.create(spec, step=STEP), ProfileFloor), spec.engine


def test_band_floor_is_validated() -> None:
    assert ModelSpec().band_floor == "profile"
    assert ModelSpec(band_floor="none").band_floor == "none"
    with pytest.raises(pydantic.ValidationError, match="band_floor"):
        ModelSpec.model_validate({"band_floor": "widest"})


class Untrained:
    """An engine that cannot forecast the rows whose context ends in NaN (a failed forward)."""

    requires_fit = True

    def fit(self, history: Any) -> Untrained:
        return self

    def known(self, keys: Any) -> np.ndarray:
        return np.ones(len(keys), dtype=bool)

    def predict(self, context: Any, timestamps: np.ndarray, interval: float) -> Forecast:
        last = context.values[:, -1:]
        yhat = np.repeat(last, timestamps.size, axis=1)
        return Forecast(yhat, yhat - 1e-6, yhat + 1e-6)

    def dumps(self) -> bytes:
        return b"untrained"


def test_rows_without_a_forecast_get_the_profiles_and_the_rest_its_width() -> None:
    context = PANEL.context
    values = context.values.copy()
    values[0, -1] = np.nan
    context = type(context)(context.labels, context.timestamps, values)
    inner: ModelEngine = Untrained()
    engine = ProfileFloor(inner, step=STEP).fit(PANEL.history)
    got = engine.predict(context, PANEL.future, 0.999)
    base = engine.profile_.predict(context, PANEL.future, 0.999)
    np.testing.assert_array_equal(got.yhat[0], base.yhat[0])
    np.testing.assert_array_equal(got.upper[0], base.upper[0])
    np.testing.assert_array_equal(got.yhat[1], np.repeat(values[1, -1], PANEL.future.size))
    np.testing.assert_allclose((got.upper - got.yhat)[1], (base.upper - base.yhat)[1])
    again = ProfileFloor.load(engine.dumps(), step=STEP, inner=lambda blob: Untrained())
    np.testing.assert_array_equal(again.predict(context, PANEL.future, 0.999).lower, got.lower)


def legacy(kind: str) -> bytes:
    """Artifacts in the layouts of before the envelope."""
    if kind == "pickle":  # statsforecast, mlforecast, pyod, darts pickled the engine itself
        return pickle.dumps({"step": STEP})
    if kind == "npz":  # builtin format 2
        buf = io.BytesIO()
        np.savez(buf, meta=np.array(json.dumps({"format": 2, "name": "profile", "step": STEP})))
        return buf.getvalue()
    return json.dumps({"format": 1, "model": "chronos-bolt", "step": STEP}).encode()  # chronos


@pytest.mark.parametrize(
    ("engine", "kind"),
    [
        ("builtin", "npz"),
        ("statsforecast", "pickle"),
        ("mlforecast", "pickle"),
        ("pyod", "pickle"),
        ("darts", "pickle"),
        ("chronos", "json"),
    ],
)
def test_old_artifacts_are_refused_with_retrain(engine: str, kind: str) -> None:
    with pytest.raises(EngineError, match="retrain the model"):
        DefaultEngineFactory().load(ModelSpec(engine=engine), legacy(kind), step=STEP)


def test_another_engines_or_formats_artifact_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    factory = DefaultEngineFactory()
    data = factory.create(ModelSpec(name="mad"), step=STEP).dumps()
    with pytest.raises(EngineError, match="it holds a builtin model"):
        factory.load(ModelSpec(engine="auto"), data, step=STEP)
    profile = ProfileModel(step=STEP).fit(PANEL.history)
    monkeypatch.setattr(ProfileModel, "FORMAT", ProfileModel.FORMAT + 1)  # a newer layout
    with pytest.raises(EngineError, match=r"builtin artifact format \d+, not \d+: retrain"):
        factory.load(ModelSpec(), profile.dumps(), step=STEP)
