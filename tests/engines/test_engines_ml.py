"""Engine-specific behaviour of the optional ML engines (mlforecast, pyod); the shared contract
lives in test_engines.py. Marked ``slow``: importing lightgbm / scikit-learn takes seconds."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pytest

from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines import DefaultEngineFactory
from openanomaly.errors import EngineError, EngineNotInstalled, UnknownModel
from tests.engines.test_engines import PANEL, SEASONAL, STEP, make_panel, ratio

pytestmark = pytest.mark.slow


def build(engine: str, name: str, params: dict[str, Any], *, step: int = STEP) -> Any:
    return DefaultEngineFactory().create(
        ModelSpec(engine=engine, name=name, params=params), step=step
    )


@pytest.fixture(scope="module")
def lgbm() -> Any:
    return build("mlforecast", "LightGBM", {"season": "1d"}).fit(PANEL.history)


@pytest.fixture(scope="module")
def lof() -> Any:
    return build("pyod", "LOF", {}).fit(PANEL.history)


@pytest.mark.parametrize(
    ("engine", "modules"),
    [
        ("mlforecast", ["mlforecast", "mlforecast.lag_transforms", "lightgbm"]),
        ("pyod", ["pyod", "pyod.models", "pyod.models.iforest"]),
    ],
)
def test_missing_library_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, engine: str, modules: list[str]
) -> None:
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(EngineNotInstalled, match=rf"openanomaly\[{engine}\]"):
        DefaultEngineFactory().create(ModelSpec(engine=engine), step=60)


@pytest.mark.parametrize(
    ("engine", "name", "params", "message"),
    [
        ("mlforecast", "LightGBM", {"lag": [1]}, "no parameter 'lag'; accepted: season, lags"),
        ("mlforecast", "LightGBM", {"lags": [0, 1]}, r"lags must be a list of integers >= 1"),
        ("mlforecast", "LightGBM", {"lags": 3}, r"lags must be a list of integers >= 1"),
        ("mlforecast", "LightGBM", {"rolling": [1]}, r"rolling must be a list of integers >= 2"),
        ("mlforecast", "LightGBM", {"season": "90m"}, r"season \(90m\) must be a whole number"),
        ("mlforecast", "LightGBM", {"n_windows": 1}, "n_windows must be an integer >= 2"),
        ("mlforecast", "LightGBM", {"learning_rate": 0}, r"learning_rate must be .* \(0, 1\]"),
        ("mlforecast", "LightGBM", {"n_estimators": 10**6}, r"n_estimators .* in \[1, 10000\]"),
        ("mlforecast", "LightGBM", {"calendar": "yes"}, "calendar must be true or false"),
        ("pyod", "IForest", {"window": 1}, "window must be an integer >= 2"),
        ("pyod", "IForest", {"contamination": 0.6}, r"contamination must be .* \(0, 0.5\]"),
        ("pyod", "IForest", {"grid": 4}, "grid must be an integer >= 8"),
        ("pyod", "IForest", {"span": 0}, "span must be a number > 0"),
        ("pyod", "IForest", {"n_estimator": 9}, "IForest has no parameter 'n_estimator'; acc"),
        ("pyod", "LOF", {"n_neighbors": "many"}, "LOF failed to fit .* 'n_neighbors'"),
    ],
)
def test_bad_params_name_the_param(
    engine: str, name: str, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(EngineError, match=message):
        build(engine, name, params, step=3600).fit(PANEL.history)


def test_unknown_models_list_the_choices() -> None:
    with pytest.raises(UnknownModel, match="LightGBM"):
        build("mlforecast", "XGBoost", {})
    with pytest.raises(UnknownModel, match="IForest, INNE, KDE"):
        build("pyod", "DeepSVDD", {})


def test_load_refuses_another_step_and_garbage(lgbm: Any, lof: Any) -> None:
    factory = DefaultEngineFactory()
    for engine, fitted in (("mlforecast", lgbm), ("pyod", lof)):
        spec = ModelSpec(engine=engine)
        with pytest.raises(EngineError, match="step"):
            factory.load(spec, fitted.dumps(), step=60)
        with pytest.raises(EngineError, match=r"model artifact of format .*retrain"):
            factory.load(spec, b"\x80garbage", step=STEP)


class TestMLForecast:
    def test_applied_without_refit_at_any_phase(self, lgbm: Any) -> None:
        booster = lgbm.inner.model_.models_["lgb"]
        for offset in (0, 5, 11, 40):
            panel = make_panel(offset=offset)
            fc = lgbm.predict(panel.context, panel.future, 0.99)
            assert np.abs(panel.actual - fc.yhat)[:SEASONAL].mean() < 0.6, offset
        assert lgbm.inner.model_.models_["lgb"] is booster

    def test_band_grows_with_the_horizon_and_the_interval(self, lgbm: Any) -> None:
        assert (np.diff(lgbm.inner.horizon_scale_) >= 0).all()
        narrow = lgbm.predict(PANEL.context, PANEL.future, 0.9)
        wide = lgbm.predict(PANEL.context, PANEL.future, 0.999)
        half = (wide.upper - wide.lower)[:SEASONAL]
        assert (half > (narrow.upper - narrow.lower)[:SEASONAL]).all()
        assert (half[:, -1] >= half[:, 0]).all()

    def test_missing_latest_points_shift_the_horizon(self, lgbm: Any) -> None:
        values = PANEL.context.values.copy()
        values[:, -2:] = np.nan  # the last two points have not arrived
        context = SeriesBatch(PANEL.context.labels, PANEL.context.timestamps, values)
        fc = lgbm.predict(context, PANEL.future, 0.999)
        assert np.isfinite(fc.lower).all()
        assert (ratio(fc, PANEL.actual)[:SEASONAL] <= 1).mean() >= 0.98

    def test_short_history_is_a_clear_error(self) -> None:
        short = PANEL.history.between(0, int(PANEL.history.timestamps[40]))
        with pytest.raises(EngineError, match=r"n_windows \* h"):
            build("mlforecast", "LightGBM", {"season": "1d"}).fit(short)


class TestPyOD:
    def test_score_above_one_exactly_when_the_detector_flags(self, lof: Any) -> None:
        fc = lof.predict(PANEL.context, PANEL.future[:1], 0.999)
        detector = lof.inner
        center, scale = detector.center_[:SEASONAL, None], detector.scale_[:SEASONAL, None]
        base = (PANEL.context.values[:SEASONAL, -7:] - center) / scale
        lower, upper, yhat = fc.lower[:SEASONAL, 0], fc.upper[:SEASONAL, 0], fc.yhat[:SEASONAL, 0]
        width = upper - lower
        y = lower[:, None] + width[:, None] * np.linspace(-0.5, 1.5, 81)[None, :]
        near_edge = (np.abs(y - lower[:, None]) < 0.02 * width[:, None]) | (
            np.abs(y - upper[:, None]) < 0.02 * width[:, None]
        )
        from openanomaly.engines.pyod.windowband import window_features

        ys = (y - center) / scale
        flagged = detector.detectors_[0].decision_function(window_features(base, ys, diffs=True))
        threshold = detector._threshold(np.arange(SEASONAL), 0.999)[:, None]
        flagged = flagged.reshape(y.shape) > threshold
        # The band is at least the profile's on each side: a flag counts beyond that width.
        prof = lof.profile_.predict(PANEL.context, PANEL.future[:1], 0.999)
        above, below = (prof.upper - prof.yhat)[:SEASONAL], (prof.yhat - prof.lower)[:SEASONAL]
        beyond = (y - yhat[:, None] > above) | (yhat[:, None] - y > below)
        score = np.where(y >= yhat[:, None], (y - yhat[:, None]) / (upper - yhat)[:, None], 0)
        score = np.where(y < yhat[:, None], (yhat[:, None] - y) / (yhat - lower)[:, None], score)
        agree = (score > 1) == (flagged & beyond)
        assert agree[~near_edge].mean() >= 0.99
        # The detector's own edges are exercised somewhere, not only the profile's.
        assert (((upper - yhat) > above[:, 0] + 1e-9) | ((yhat - lower) > below[:, 0] + 1e-9)).any()

    def test_per_series_detectors_and_other_pyod_models(self) -> None:
        for name, params in (("IForest", {"pooled": False}), ("KNN", {"n_neighbors": 10})):
            engine = build("pyod", name, params).fit(PANEL.history)
            assert engine.known(PANEL.context.keys)[:SEASONAL].all()
            fc = engine.predict(PANEL.context, PANEL.future, 0.999)
            assert np.isfinite(fc.lower).all()
            assert (fc.lower <= fc.yhat).all()
            assert (fc.yhat <= fc.upper).all()

    def test_an_anomaly_in_the_context_does_not_flag_what_follows(self, lof: Any) -> None:
        values = PANEL.context.values.copy()
        values[:SEASONAL, -3] += 40  # two steps ago: still inside the next window
        context = SeriesBatch(PANEL.context.labels, PANEL.context.timestamps, values)
        fc = lof.predict(context, PANEL.future[:1], 0.999)
        assert (ratio(fc, PANEL.actual[:, :1])[:SEASONAL] <= 1).mean() >= 0.75
