"""Model engines: one contract every engine/model passes on the same synthetic panel, then
engine-specific behaviour (the built-in profile's online update, statsforecast's no-refit path).

Statsforecast cases are marked ``slow`` (its import and JIT cost a few seconds, paid once);
``pytest -m "not slow"`` runs the rest in about a second.
"""

from __future__ import annotations

import functools
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from openanomaly.domain.series import Forecast, SeriesBatch
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines import ENGINES, DefaultEngineFactory
from openanomaly.engines.builtin import ProfileModel
from openanomaly.engines.kernels.robust import nanmedian
from openanomaly.errors import EngineError, EngineNotInstalled, UnknownModel
from openanomaly.ports import ModelEngine
from tests.engines.tiny_models import tiny_chronos

STEP = 7200  # 2h: one day is 12 steps, so the seasonal statsforecast models stay cheap
DAY = 12
HISTORY, CONTEXT, HORIZON = 14 * DAY, 4 * DAY, DAY
T0 = 1_700_006_400  # a multiple of STEP: slot 0 at midnight
SEASONAL = 8  # rows 0..7 are normal seasonal series
TREND, CONSTANT, SPARSE, SHORT = 8, 9, 10, 11
SPIKE = 40.0


@dataclass(frozen=True)
class Panel:
    history: SeriesBatch
    context: SeriesBatch
    future: np.ndarray  # timestamps to forecast
    actual: np.ndarray  # what happened there (no spikes)


def make_panel(seed: int = 7, offset: int = 5) -> Panel:
    """Seasonal series with noise, a trend, a constant, a sparse and a very short series.

    The context starts ``offset`` steps after the history ends, at another phase of the day.
    """
    rng = np.random.default_rng(seed)
    k = np.arange(HISTORY + offset + CONTEXT + HORIZON)
    rows = [
        20 + i + 5 * np.sin(2 * np.pi * (k + 2 * i) / DAY) + rng.normal(0, 0.5, k.size)
        for i in range(SEASONAL)
    ]
    rows.append(5 + 0.05 * k + rng.normal(0, 0.3, k.size))
    rows.append(np.full(k.size, 7.0))
    sparse = 30 + 4 * np.sin(2 * np.pi * k / DAY) + rng.normal(0, 0.5, k.size)
    sparse[rng.random(k.size) < 0.3] = np.nan
    rows.append(sparse)
    short = 50 + rng.normal(0, 1.0, k.size)
    short[: HISTORY - 6] = np.nan
    rows.append(short)
    values, ts = np.vstack(rows), T0 + k * STEP
    labels = tuple({"__name__": "m", "i": str(i)} for i in range(len(rows)))
    c0 = HISTORY + offset
    return Panel(
        SeriesBatch(labels, ts[:HISTORY], values[:, :HISTORY]),
        SeriesBatch(labels, ts[c0 : c0 + CONTEXT], values[:, c0 : c0 + CONTEXT]),
        ts[c0 + CONTEXT :],
        values[:, c0 + CONTEXT :],
    )


PANEL = make_panel()
slow = pytest.mark.slow
TINY_NHITS = {  # trains in ~5 s on 2 CPU cores, enough to learn the panel's daily shape
    "h": DAY,
    "max_steps": 100,
    "learning_rate": 0.01,
    "mlp_units": [[32, 32]] * 3,
    "windows_batch_size": 64,
}


def tiny(kind: str) -> Callable[[], str]:
    """A tiny random Chronos checkpoint's directory, built when the case runs (needs torch)."""
    return functools.partial(tiny_chronos, kind)


CASES = [
    pytest.param(("builtin", "profile", {"season": "1d"}), id="builtin-profile"),
    pytest.param(("builtin", "zscore", {}), id="builtin-zscore"),
    pytest.param(("builtin", "mad", {}), id="builtin-mad"),
    pytest.param(("statsforecast", "AutoETS", {"season_length": "1d"}), id="AutoETS", marks=slow),
    pytest.param(
        ("statsforecast", "SeasonalNaive", {"season_length": DAY}), id="SNaive", marks=slow
    ),
    pytest.param(
        ("statsforecast", "AutoARIMA", {"season_length": DAY, "approximation": True}),
        id="AutoARIMA",
        marks=slow,
    ),
    pytest.param(
        ("statsforecast", "AutoTheta", {"season_length": DAY}), id="AutoTheta", marks=slow
    ),
    pytest.param(("statsforecast", "MSTL", {"season_length": [DAY]}), id="MSTL", marks=slow),
    pytest.param(("mlforecast", "LightGBM", {"season": "1d"}), id="mlforecast", marks=slow),
    pytest.param(("pyod", "IForest", {}), id="pyod-IForest", marks=slow),
    pytest.param(("pyod", "LOF", {}), id="pyod-LOF", marks=slow),
    pytest.param(
        ("auto", "holdout", {"candidates": [{"name": "mad"}, {"name": "profile"}]}), id="auto"
    ),
    pytest.param(("auto", "holdout", {}), id="auto-default", marks=slow),
    pytest.param(("chronos", tiny("bolt"), {"batch_size": 5}), id="chronos-bolt-tiny", marks=slow),
    pytest.param(("chronos", tiny("chronos2"), {}), id="chronos2-tiny", marks=slow),
    pytest.param(("neuralforecast", "NHITS", TINY_NHITS), id="neuralforecast-NHITS", marks=slow),
    pytest.param(
        ("darts", "ExponentialSmoothing", {"seasonal_periods": "1d"}), id="darts-ETS", marks=slow
    ),
    pytest.param(("darts", "NaiveSeasonal", {"K": "1d"}), id="darts-SNaive", marks=slow),
    pytest.param(("darts", "LinearRegressionModel", {"lags": 24}), id="darts-linear", marks=slow),
    pytest.param(("darts", None, {}), id="darts-default", marks=slow),
]


@dataclass(frozen=True)
class Fitted:
    spec: ModelSpec
    engine: ModelEngine  # after fit -> dumps -> load
    original: ModelEngine  # the engine that was fitted
    forecast: Forecast  # known rows from the engine, the rest from the cold-start model


def predict_like_inferencer(engine: ModelEngine, panel: Panel, interval: float) -> Forecast:
    factory, known = DefaultEngineFactory(), engine.known(panel.context.keys)
    parts = []
    if known.any():
        rows = np.flatnonzero(known)
        parts.append((rows, engine.predict(panel.context.take(rows), panel.future, interval)))
    if (~known).any():
        rows = np.flatnonzero(~known)
        cold = factory.cold_start(step=STEP)
        parts.append((rows, cold.predict(panel.context.take(rows), panel.future, interval)))
    return Forecast.stack(parts, len(panel.context), panel.future.size)


@pytest.fixture(scope="module", params=CASES)
def fitted(request: pytest.FixtureRequest) -> Fitted:
    engine_name, name, params = request.param
    name = name() if callable(name) else name  # a model built at run time (tiny checkpoint)
    spec = ModelSpec(engine=engine_name, name=name, params=params)
    factory = DefaultEngineFactory()
    original = factory.create(spec, step=STEP)
    if original.requires_fit:
        original.fit(PANEL.history)
    engine = factory.load(spec, original.dumps(), step=STEP)
    return Fitted(spec, engine, original, predict_like_inferencer(engine, PANEL, 0.999))


def ratio(fc: Forecast, actual: np.ndarray) -> np.ndarray:
    """|y - yhat| / half-width: the anomaly score, > 1 outside the band."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(actual - fc.yhat) / ((fc.upper - fc.lower) / 2)


ONE_STEP = {"pyod"}
"""Engines whose band holds for the next point only: a window detector's band is the set of
values it would accept after the context's last window, so a 12-step seasonal horizon is beyond
it. The seasonal test scores them one point at a time, each from the context just before it (as
the Inferencer does with ``infer.every == step``); every other test keeps the whole horizon."""


def one_step_ratios(engine: ModelEngine, panel: Panel, interval: float) -> np.ndarray:
    """The score of each future point, forecast from the context that ends right before it."""
    values = np.concatenate([panel.context.values, panel.actual], axis=1)
    ts = np.concatenate([panel.context.timestamps, panel.future])
    n, out = panel.context.timestamps.size, []
    for k in range(panel.future.size):
        context = SeriesBatch(panel.context.labels, ts[k : n + k], values[:, k : n + k])
        one = Panel(panel.history, context, panel.future[k : k + 1], panel.actual[:, k : k + 1])
        out.append(ratio(predict_like_inferencer(engine, one, interval), one.actual)[:, 0])
    return np.stack(out, axis=1)


RANDOM_WEIGHTS = {"chronos"}
"""Zero-shot engines tested with randomly initialised weights: no checkpoint can be downloaded
here or in CI, so their forecasts are noise and the two accuracy tests (seasonal coverage, spike
detection) are skipped for them; every other test of the contract holds as for any engine."""


class TestContract:
    def test_finite_ordered_band_for_every_series(self, fitted: Fitted) -> None:
        fc = fitted.forecast
        assert fc.yhat.shape == (len(PANEL.context), HORIZON)
        for arr in (fc.yhat, fc.lower, fc.upper):
            assert np.isfinite(arr).all()
        assert (fc.lower <= fc.yhat).all()
        assert (fc.yhat <= fc.upper).all()
        assert (fc.upper > fc.lower).all()

    def test_round_trip_and_rerun_are_identical(self, fitted: Fitted) -> None:
        again = predict_like_inferencer(fitted.engine, PANEL, 0.999)
        before = predict_like_inferencer(fitted.original, PANEL, 0.999)
        for a, b, c in zip(
            (fitted.forecast.yhat, fitted.forecast.lower, fitted.forecast.upper),
            (again.yhat, again.lower, again.upper),
            (before.yhat, before.lower, before.upper),
            strict=True,
        ):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)

    def test_seasonal_series_stay_inside_a_0999_band(self, fitted: Fitted) -> None:
        if fitted.spec.engine in RANDOM_WEIGHTS:
            pytest.skip("random weights: no accuracy to test (RANDOM_WEIGHTS)")
        if fitted.spec.engine in ONE_STEP:
            r = one_step_ratios(fitted.engine, PANEL, 0.999)[:SEASONAL]
        else:
            r = ratio(fitted.forecast, PANEL.actual)[:SEASONAL]
        assert (r <= 1).mean() >= 0.98, np.round(r.max(axis=1), 2)

    @pytest.mark.parametrize("row", [0, 3, TREND, CONSTANT, SPARSE, SHORT])
    def test_spike_in_the_actual_is_outside_the_band(self, fitted: Fitted, row: int) -> None:
        if fitted.spec.engine in RANDOM_WEIGHTS:
            pytest.skip("random weights: no accuracy to test (RANDOM_WEIGHTS)")
        actual = PANEL.actual.copy()
        actual[row, 7] = np.nanmax(PANEL.context.values[row]) + SPIKE
        assert ratio(fitted.forecast, actual)[row, 7] > 2

    def test_known(self, fitted: Fitted) -> None:
        known = fitted.engine.known((*PANEL.context.keys, 'm{i="new"}'))
        assert known.dtype == bool
        assert known[: SPARSE + 1].all()
        if fitted.engine.requires_fit:
            assert not known[-1]
        else:
            assert known.all()


def test_statsforecast_is_imported_lazily() -> None:
    code = (
        "import sys, openanomaly.engines as e\n"
        "from openanomaly.domain.spec import ModelSpec\n"
        "e.DefaultEngineFactory().create(ModelSpec(), step=60)\n"
        "e.DefaultEngineFactory().cold_start(step=60)\n"
        "assert 'statsforecast' not in sys.modules, 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_unknown_engine_and_model_list_the_choices() -> None:
    factory = DefaultEngineFactory()
    with pytest.raises(UnknownModel) as exc:
        factory.create(ModelSpec(engine="prophet"), step=60)
    assert exc.value.known == list(ENGINES)
    assert "builtin" in str(exc.value) and "statsforecast" in str(exc.value)
    with pytest.raises(UnknownModel, match="mad, profile, zscore"):
        factory.create(ModelSpec(name="lstm"), step=60)
    with pytest.raises(UnknownModel, match="AutoARIMA, AutoETS, AutoTheta, MSTL, SeasonalNaive"):
        factory.create(ModelSpec(engine="statsforecast", name="Prophet"), step=60)


@slow
@pytest.mark.parametrize(
    ("engine_name", "name", "params"),
    [
        pytest.param("statsforecast", "AutoETS", {"season_length": "1d"}, id="AutoETS"),
        pytest.param("mlforecast", "LightGBM", {"season": "1d"}, id="mlforecast"),
        pytest.param("pyod", "LOF", {}, id="pyod-LOF"),
        pytest.param("darts", None, {}, id="darts-default"),
        pytest.param(
            "neuralforecast",
            "NHITS",
            {"h": 12, "max_steps": 5, "mlp_units": [[8, 8]] * 3, "windows_batch_size": 16},
            id="NHITS",
        ),
    ],
)
def test_band_is_never_narrower_than_the_profiles(
    engine_name: str, name: str | None, params: dict[str, Any]
) -> None:
    # Their own bands come from few held-out errors (conformal, detector thresholds, residuals)
    # or a normal extrapolation of learnt quantiles, which cannot tell a 0.999 quantile: each
    # side is floored at the profile's, fitted on the same history. The centre stays the model's.
    spec = ModelSpec(engine=engine_name, name=name, params=params)
    engine: Any = DefaultEngineFactory().create(spec, step=STEP).fit(PANEL.history)
    future = PANEL.future[:1]  # pyod's band holds for the next point only
    fc = engine.predict(PANEL.context, future, 0.999)
    base = engine.profile_.predict(PANEL.context, future, 0.999)
    rows = slice(0, SEASONAL)
    assert ((fc.upper - fc.yhat)[rows] >= (base.upper - base.yhat)[rows] - 1e-9).all()
    assert ((fc.yhat - fc.lower)[rows] >= (base.yhat - base.lower)[rows] - 1e-9).all()
    assert not np.allclose(fc.yhat[rows], base.yhat[rows])


class TestBuiltin:
    def test_nanmedian_matches_numpy_without_warnings(self) -> None:
        rng = np.random.default_rng(0)
        a = rng.normal(size=(50, 17))
        a[rng.random(a.shape) < 0.4] = np.nan
        a[3] = np.nan
        got = nanmedian(a)
        assert np.isnan(got[3])
        rows = np.arange(50) != 3
        np.testing.assert_allclose(got[rows], [np.nanmedian(r) for r in a[rows]])
        assert nanmedian(np.empty((4, 0))).shape == (4,)

    def test_profile_is_phase_correct_and_follows_level_through_the_context(self) -> None:
        model = ProfileModel(step=STEP, season="1d").fit(PANEL.history)
        for offset in (0, 5, 11, 40):
            panel = make_panel(offset=offset)
            fc = model.predict(panel.context, panel.future, 0.99)
            err = np.abs(panel.actual - fc.yhat)[:SEASONAL]
            assert err.mean() < 0.6, offset  # noise sd 0.5: mean |error| 0.4 if right
        shifted = SeriesBatch(
            PANEL.context.labels, PANEL.context.timestamps, PANEL.context.values + 100
        )
        fc = model.predict(shifted, PANEL.future, 0.99)
        assert np.abs(PANEL.actual + 100 - fc.yhat)[:SEASONAL].mean() < 0.6

    def test_all_nan_context_still_gets_the_profile(self) -> None:
        model = ProfileModel(step=STEP, season="1d").fit(PANEL.history)
        empty = SeriesBatch(
            PANEL.context.labels, PANEL.context.timestamps, np.full((12, CONTEXT), np.nan)
        )
        fc = model.predict(empty, PANEL.future, 0.99)
        assert np.isfinite(fc.lower[:SEASONAL]).all()
        assert np.abs(PANEL.actual - fc.yhat)[:SEASONAL].mean() < 1.0

    def test_cold_start_uses_the_context_only(self) -> None:
        cold = DefaultEngineFactory().cold_start(step=STEP)
        assert not cold.known(PANEL.context.keys).any()
        values = np.full((3, 6), np.nan)
        values[0] = [1, 2, 3, 2, 1, 2]
        values[1, -2:] = [5, 6]  # two points: a centre but no scale
        batch = SeriesBatch(({"a": "0"}, {"a": "1"}, {"a": "2"}), T0 + np.arange(6) * STEP, values)
        fc = cold.predict(batch, T0 + np.arange(6, 9) * STEP, 0.99)
        assert (fc.yhat[0] == 2).all()
        assert np.isfinite(fc.lower[0]).all()
        assert (fc.yhat[1] == 5.5).all()
        assert np.isnan(fc.lower[1:]).all()
        assert np.isnan(fc.yhat[2]).all()

    def test_predict_is_vectorized(self) -> None:
        rng = np.random.default_rng(1)
        n, t = 10_000, HISTORY
        labels = tuple({"i": str(i)} for i in range(n))
        ts = T0 + np.arange(t + 60) * STEP
        values = 10 + np.sin(np.arange(t + 60) * 2 * np.pi / DAY) + rng.normal(0, 0.1, (n, t + 60))
        model = ProfileModel(step=STEP, season="1d").fit(SeriesBatch(labels, ts[:t], values[:, :t]))
        context = SeriesBatch(labels, ts[t:], values[:, t:])
        began = time.process_time()  # this process's CPU: the other processes' load is left out
        model.predict(context, ts[-1] + STEP * np.arange(1, 3), 0.99)
        assert time.process_time() - began < 1.0  # ~20 ms; a loop per series takes seconds

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"season": "1x"}, "season"),
            ({"season": "90m"}, "whole number of steps"),
            ({"adapt": 0}, "adapt must be an integer >= 1"),
            ({"smooth": -1}, "smooth must be an integer >= 0"),
            ({"spread_floor": 2}, r"spread_floor must be a number in \[0, 1\)"),
            ({"seasn": "1d"}, "no parameter 'seasn'; accepted: season, smooth"),
        ],
    )
    def test_bad_params_name_the_param(self, params: dict[str, Any], message: str) -> None:
        with pytest.raises(EngineError, match=message):
            DefaultEngineFactory().create(ModelSpec(params=params), step=3600)

    def test_load_refuses_another_step_and_garbage(self) -> None:
        factory, spec = DefaultEngineFactory(), ModelSpec()
        data = factory.create(spec, step=3600).fit(PANEL.history).dumps()
        assert factory.load(spec, data, step=3600).known(PANEL.history.keys).any()
        with pytest.raises(EngineError, match="step"):
            factory.load(spec, data, step=60)
        with pytest.raises(EngineError, match="not a builtin model artifact"):
            factory.load(spec, b"\x80pickle?", step=3600)


@slow
class TestStatsForecast:
    def test_bad_params_name_the_param(self) -> None:
        factory = DefaultEngineFactory()
        cases = [
            ("AutoETS", {"season_lenght": 12}, "no parameter 'season_lenght'; accepted: season"),
            ("AutoETS", {"season_length": 0}, "season_length must be an integer >= 1"),
            ("AutoETS", {"season_length": "1d"}, "season_length must be <= 24"),
            ("SeasonalNaive", {}, "needs parameter 'season_length'"),
            ("AutoETS", {"season_length": [12, 24]}, "must be one value"),
            ("AutoETS", {"n_jobs": 0}, "n_jobs must be an integer >= 1"),
        ]
        for name, params, message in cases:
            spec = ModelSpec(engine="statsforecast", name=name, params=params)
            with pytest.raises(EngineError, match=message):
                factory.create(spec, step=60)

    def test_forward_is_phase_correct_without_refitting(self) -> None:
        spec = ModelSpec(engine="statsforecast", name="AutoETS", params={"season_length": DAY})
        engine = DefaultEngineFactory().create(spec, step=STEP).fit(PANEL.history)
        for offset in (0, 5, 11, 40):
            panel = make_panel(offset=offset)
            fc = engine.predict(panel.context, panel.future, 0.99)
            assert np.abs(panel.actual - fc.yhat)[:SEASONAL].mean() < 0.6, offset

    def test_too_little_data_is_unknown_and_fit_failures_fall_back(self) -> None:
        from statsforecast.models import AutoETS

        class FailsOnConstant:  # a model that cannot fit a constant series
            def new(self) -> FailsOnConstant:
                return self

            def fit(self, y: np.ndarray) -> Any:
                if np.all(y == y[0]):
                    raise ValueError("constant")
                return AutoETS(season_length=DAY).fit(y)

        spec = ModelSpec(engine="statsforecast", name="AutoETS", params={"season_length": DAY})
        engine: Any = DefaultEngineFactory().create(spec, step=STEP)
        engine.inner._proto = FailsOnConstant()
        engine.fit(PANEL.history)
        assert list(engine.known(PANEL.history.keys)) == [True] * SHORT + [False]
        assert engine.inner.fallbacks_ == {PANEL.history.keys[CONSTANT]: "SeasonalNaive"}
        fc = engine.predict(PANEL.context, PANEL.future, 0.99)
        assert np.isfinite(fc.lower).all()

    def test_a_model_failing_everywhere_is_an_error(self) -> None:
        spec = ModelSpec(engine="statsforecast", name="AutoETS", params={"model": "XYZ"})
        engine = DefaultEngineFactory().create(spec, step=STEP)
        with pytest.raises(EngineError, match=r"AutoETS\{'model': 'XYZ'\} failed on every"):
            engine.fit(PANEL.history)  # the constant series fits (ETS short-cuts it): no matter

    def test_parallel_fit_matches_serial(self) -> None:
        params = {"season_length": DAY}
        factory = DefaultEngineFactory()
        serial = factory.create(
            ModelSpec(engine="statsforecast", name="AutoETS", params=params), step=STEP
        )
        parallel = factory.create(
            ModelSpec(engine="statsforecast", name="AutoETS", params={**params, "n_jobs": 2}),
            step=STEP,
        )
        a = serial.fit(PANEL.history).predict(PANEL.context, PANEL.future, 0.99)
        b = parallel.fit(PANEL.history).predict(PANEL.context, PANEL.future, 0.99)
        np.testing.assert_allclose(a.yhat, b.yhat)
        np.testing.assert_allclose(a.upper, b.upper)

    def test_missing_library_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "statsforecast", None)
        monkeypatch.setitem(sys.modules, "statsforecast.models", None)
        with pytest.raises(EngineNotInstalled, match=r"openanomaly\[statsforecast\]"):
            spec = ModelSpec(engine="statsforecast", name="AutoETS")
            DefaultEngineFactory().create(spec, step=60)
