"""The torch-based engines beyond the shared contract (``test_engines.py``): Chronos (zero-shot,
tiny random checkpoints), NeuralForecast and Darts. All ``slow``: importing torch, transformers
and Lightning alone takes ~15 s on 2 cores, paid once per test run.

Chronos' plumbing (horizon indexing, batching, NaN rows, band extrapolation) is checked against
a fake pipeline with known quantiles, since a random model's forecasts are noise.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines import DefaultEngineFactory
from openanomaly.engines.floor import ProfileFloor
from openanomaly.errors import EngineError, EngineNotInstalled, UnknownModel
from openanomaly.ports import ModelEngine
from tests.engines.test_engines import DAY, PANEL, STEP, T0
from tests.engines.tiny_models import tiny_chronos


def unwrapped(engine: ModelEngine) -> Any:
    """The library engine inside the factory's profile floor."""
    assert isinstance(engine, ProfileFloor)
    return engine.inner


pytestmark = pytest.mark.slow


def test_no_torch_library_is_imported_by_the_engines_package() -> None:
    code = (
        "import sys, openanomaly.engines as e\n"
        "from openanomaly.domain.spec import ModelSpec\n"
        "e.DefaultEngineFactory().create(ModelSpec(), step=60)\n"
        "e.DefaultEngineFactory().create(ModelSpec(engine='chronos'), step=60)\n"
        "heavy = {'torch', 'chronos', 'transformers', 'neuralforecast', 'darts'}\n"
        "assert not heavy & set(sys.modules), heavy & set(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def spec(engine: str, name: str | None = None, **params: Any) -> ModelSpec:
    return ModelSpec(engine=engine, name=name, params=params)


# --- Chronos ------------------------------------------------------------------------------------


class FakePipeline:
    """Quantile ``q`` at step ``k`` (1-based) of a series whose last value is ``y``:
    ``y + k + 10 * (q - 0.5)``: a Chronos-Bolt-like pipeline with levels 0.1..0.9."""

    model_prediction_length = 64

    def __init__(self) -> None:
        self.quantiles = [q / 10 for q in range(1, 10)]
        self.batches: list[np.ndarray] = []

    def predict_quantiles(
        self, context: Any, prediction_length: int, quantile_levels: list[float]
    ) -> tuple[Any, Any]:
        import torch

        self.batches.append(context.numpy().copy())
        last = torch.stack([row[~torch.isnan(row)][-1] for row in context])
        k = torch.arange(1, prediction_length + 1, dtype=torch.float32)
        levels = torch.tensor(quantile_levels, dtype=torch.float32)
        q = last[:, None, None] + k[None, :, None] + 10 * (levels - 0.5)[None, None, :]
        return q, q[..., len(quantile_levels) // 2]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakePipeline:
    from openanomaly.engines import chronos

    pipeline = FakePipeline()
    monkeypatch.setitem(chronos._PIPELINES, ("fake", "cpu", "float32"), pipeline)
    return pipeline


class TestChronos:
    def test_horizon_batches_nan_rows_and_bands_against_known_quantiles(
        self, fake: FakePipeline
    ) -> None:
        from openanomaly.engines.chronos import create

        values = np.arange(4 * 6, dtype=np.float64).reshape(4, 6)
        values[1, -2:] = np.nan  # a missing tail: the horizon still counts from the grid's end
        values[2] = np.nan  # no sample: no forecast
        batch = SeriesBatch(
            tuple({"i": str(i)} for i in range(4)), T0 + STEP * np.arange(6), values
        )
        future = T0 + STEP * np.array([7, 10])  # 2 and 5 steps after the context
        engine = create("fake", {"batch_size": 2}, step=STEP)
        fc = engine.predict(batch, future, 0.5)
        assert [b.shape for b in fake.batches] == [(2, 6), (1, 6)]  # rows 0, 1 | 3; not row 2
        assert np.isnan(fake.batches[0][1, -2:]).all()  # NaN reaches the model as NaN
        last = np.array([5.0, 9.0, np.nan, 23.0])  # the last sample of each row
        np.testing.assert_allclose(fc.yhat, last[:, None] + [2, 5], rtol=1e-6)
        assert np.isnan(fc.yhat[2]).all() and np.isnan(fc.lower[2]).all()
        ok = [0, 1, 3]
        np.testing.assert_allclose((fc.upper - fc.yhat)[ok], 2.5, rtol=1e-5)  # q(0.75) read off
        wide = engine.predict(batch, future, 0.99)  # beyond 0.9: 0.1/0.9 scaled by z ratio
        z = NormalDist().inv_cdf(0.995) / NormalDist().inv_cdf(0.9)
        np.testing.assert_allclose((wide.yhat - wide.lower)[ok], 4 * z, rtol=1e-5)
        np.testing.assert_allclose((wide.upper - wide.yhat)[ok], 4 * z, rtol=1e-5)

    def test_timestamps_must_follow_the_context(self, fake: FakePipeline) -> None:
        from openanomaly.engines.chronos import create

        with pytest.raises(EngineError, match="after the context"):
            create("fake", {}, step=STEP).predict(PANEL.context, PANEL.context.timestamps[-2:], 0.9)

    @pytest.mark.parametrize("kind", ["bolt", "chronos2"])
    def test_tiny_checkpoint_batches_and_loads_once(self, kind: str) -> None:
        from openanomaly.engines.chronos import create

        path = tiny_chronos(kind)
        one = create(path, {"batch_size": 5}, step=STEP)
        all_at_once = create(path, {}, step=STEP)
        assert one.pipeline() is all_at_once.pipeline()  # the per-process cache
        a = one.predict(PANEL.context, PANEL.future, 0.99)
        b = all_at_once.predict(PANEL.context, PANEL.future, 0.99)
        np.testing.assert_allclose(a.yhat, b.yhat, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(a.upper, b.upper, rtol=1e-4, atol=1e-4)
        assert (
            np.isfinite(a.lower).all() and (a.lower <= a.yhat).all() and (a.yhat <= a.upper).all()
        )
        long = one.predict(
            PANEL.context, PANEL.context.timestamps[-1] + STEP * np.arange(1, 41), 0.9
        )
        assert long.yhat.shape == (len(PANEL.context), 40) and np.isfinite(long.yhat).all()

    @pytest.mark.parametrize("model", ["amazon/chronos-bolt-small", "/nonexistent/chronos"])
    def test_a_model_that_cannot_be_loaded_names_it(self, model: str) -> None:
        engine = DefaultEngineFactory().create(spec("chronos", model), step=STEP)
        with pytest.raises(EngineError, match=f"cannot load model '{model}'.*local directory"):
            engine.predict(PANEL.context, PANEL.future, 0.99)

    def test_default_model_and_aliases(self) -> None:
        from openanomaly.engines.chronos import ChronosEngine

        engine: Any = unwrapped(DefaultEngineFactory().create(spec("chronos"), step=STEP))
        assert engine.model_id == "amazon/chronos-bolt-small"
        assert not engine.requires_fit and engine.known(["a", "b"]).all()
        assert ChronosEngine.unpack(engine.dumps(), step=STEP)[0]["model"] == "chronos-bolt"
        engine = unwrapped(DefaultEngineFactory().create(spec("chronos", "chronos-2"), step=STEP))
        assert engine.model_id == "amazon/chronos-2"

    @pytest.mark.parametrize(
        ("params", "message"),
        [
            ({"device": "tpu"}, "device must be one of cpu, cuda"),
            ({"batch_size": 0}, "batch_size must be an integer >= 1"),
            ({"torch_dtype": "float16"}, "torch_dtype must be one of float32, bfloat16"),
            ({"contxt": 3}, "no parameter 'contxt'; accepted: model, device"),
        ],
    )
    def test_bad_params_name_the_param(self, params: dict[str, Any], message: str) -> None:
        with pytest.raises(EngineError, match=message):
            DefaultEngineFactory().create(spec("chronos", **params), step=STEP)

    def test_load_refuses_another_step_and_garbage(self) -> None:
        factory, s = DefaultEngineFactory(), spec("chronos")
        data = factory.create(s, step=STEP).dumps()
        assert factory.load(s, data, step=STEP).requires_fit is False
        with pytest.raises(EngineError, match="step"):
            factory.load(s, data, step=60)
        with pytest.raises(EngineError, match=r"model artifact of format .*retrain"):
            factory.load(s, b"\x80pickle?", step=STEP)

    def test_missing_library_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "chronos", None)
        engine = DefaultEngineFactory().create(spec("chronos", "not-cached"), step=STEP)
        with pytest.raises(EngineNotInstalled, match=r"openanomaly\[chronos\]"):
            engine.predict(PANEL.context, PANEL.future, 0.99)


# --- NeuralForecast -----------------------------------------------------------------------------

QUICK_NHITS = {"h": DAY, "max_steps": 5, "mlp_units": [[8, 8]] * 3, "windows_batch_size": 16}


class TestNeuralForecast:
    def test_trains_quietly_writes_nothing_and_saves_no_pickle(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        factory, s = DefaultEngineFactory(), spec("neuralforecast", "NHITS", **QUICK_NHITS)
        far = PANEL.context.timestamps[-1] + STEP * np.arange(1, 2 * DAY + 1)  # > h: recursive
        with warnings.catch_warnings(record=True) as shown:
            warnings.simplefilter("always")
            engine = factory.create(s, step=STEP).fit(PANEL.history)
            fc = engine.predict(PANEL.context, far, 0.99)
        assert not [w for w in shown if "LeafSpec" in str(w.message)]  # Lightning's internals
        assert np.isfinite(fc.yhat[:11]).all() and (fc.lower <= fc.upper)[:11].all()
        data = engine.dumps()
        with tarfile.open(fileobj=io.BytesIO(unwrapped(engine).dumps())) as tar:
            names = tar.getnames()
        assert "header.json" in names
        assert not [n for n in names if n.endswith((".pkl", ".ckpt"))]
        assert any(n.endswith(".safetensors") for n in names)
        again = factory.load(s, data, step=STEP).predict(PANEL.context, far, 0.99)
        np.testing.assert_array_equal(fc.upper, again.upper)
        assert list(tmp_path.iterdir()) == []  # no lightning_logs, checkpoints...

    @pytest.mark.parametrize(
        ("name", "params", "error", "message"),
        [
            ("NHiTS", {}, UnknownModel, "NBEATSx, NHITS"),
            ("NHITS", {"max_stpes": 5}, EngineError, "no parameter 'max_stpes'; accepted: h,"),
            ("NHITS", {"levels": [80, 100]}, EngineError, r"levels must be .* in \(0, 100\)"),
            ("NHITS", {"h": 0}, EngineError, "h must be an integer >= 1"),
            ("NHITS", {"input_size": "90m"}, EngineError, "whole number of steps"),
        ],
    )
    def test_bad_params_name_the_param(
        self, name: str, params: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=message):
            DefaultEngineFactory().create(spec("neuralforecast", name, **params), step=STEP)

    def test_load_refuses_another_step_and_garbage(self) -> None:
        factory, s = DefaultEngineFactory(), spec("neuralforecast", "NHITS", **QUICK_NHITS)
        data = factory.create(s, step=STEP).fit(PANEL.history).dumps()
        with pytest.raises(EngineError, match="step"):
            factory.load(s, data, step=60)
        with pytest.raises(EngineError, match=r"model artifact of format .*retrain"):
            factory.load(s, b"garbage", step=STEP)
        from openanomaly.engines.floor import ProfileFloor
        from openanomaly.engines.neuralforecast import NeuralForecastEngine, loads

        inner = ProfileFloor.unpack(data, step=STEP)[1]["inner"]
        head, files = NeuralForecastEngine.unpack(inner, step=STEP)
        old = io.BytesIO()  # format 2 (today's before the envelope): meta.json and profile.npz
        with tarfile.open(fileobj=old, mode="w") as dst:
            for name, body in {"meta.json": json.dumps({**head, "format": 2}).encode()}.items():
                info = tarfile.TarInfo(name)
                info.size = len(body)
                dst.addfile(info, io.BytesIO(body))
        with pytest.raises(EngineError, match="retrain the model"):
            loads(old.getvalue(), step=STEP)
        with pytest.raises(EngineError, match="retrain the model"):
            factory.load(s, old.getvalue(), step=STEP)
        assert files

    def test_missing_library_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "neuralforecast", None)
        with pytest.raises(EngineNotInstalled, match=r"openanomaly\[neuralforecast\]"):
            DefaultEngineFactory().create(spec("neuralforecast"), step=STEP)


# --- Darts --------------------------------------------------------------------------------------

TINY_NBEATS = {
    "input_chunk_length": 2 * DAY,
    "output_chunk_length": DAY,
    "num_stacks": 2,
    "num_blocks": 1,
    "num_layers": 2,
    "layer_widths": 16,
    "n_epochs": 1,
    "batch_size": 256,
    "random_state": 0,
}


class TestDarts:
    def test_torch_model_round_trips_with_its_weights_and_writes_nothing(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.chdir(tmp_path)
        factory, s = DefaultEngineFactory(), spec("darts", "NBEATSModel", **TINY_NBEATS)
        engine = factory.create(s, step=STEP)
        assert engine.requires_fit
        fc = engine.fit(PANEL.history).predict(PANEL.context, PANEL.future, 0.99)
        assert np.isfinite(fc.yhat).all() and (fc.upper > fc.lower).all()
        again = factory.load(s, engine.dumps(), step=STEP).predict(
            PANEL.context, PANEL.future, 0.99
        )
        np.testing.assert_array_equal(fc.yhat, again.yhat)  # a pickled darts net loses them
        assert list(tmp_path.iterdir()) == []

    def test_probabilistic_local_model_is_seeded_and_refit_on_each_context(self) -> None:
        engine: Any = DefaultEngineFactory().create(
            spec("darts", "ExponentialSmoothing", seasonal_periods=DAY, num_samples=50), step=STEP
        )
        assert engine.inner.probabilistic and not engine.requires_fit
        rows = PANEL.context.take([0, 1])
        a = engine.predict(rows, PANEL.future, 0.9)
        b = engine.predict(rows, PANEL.future, 0.9)
        np.testing.assert_array_equal(a.lower, b.lower)
        shifted = SeriesBatch(rows.labels, rows.timestamps, rows.values + 100)
        c = engine.predict(shifted, PANEL.future, 0.9)
        np.testing.assert_allclose(c.yhat, a.yhat + 100, rtol=1e-3)

    def test_default_is_a_global_linear_model_on_an_hour_of_lags(self) -> None:
        # Its band's floor: test_engines.test_band_is_never_narrower_than_the_profiles
        engine: Any = unwrapped(DefaultEngineFactory().create(spec("darts"), step=STEP))
        assert (engine.name, engine.requires_fit) == ("LinearRegressionModel", True)
        assert engine._kwargs["lags"] == max(2, 3600 // STEP)  # an hour, no lags given
        linear: Any = unwrapped(DefaultEngineFactory().create(spec("darts", lags=3), step=STEP))
        assert linear._kwargs["lags"] == 3  # lags given are kept

    @pytest.mark.parametrize(
        ("name", "params", "error", "message"),
        [
            ("Prophet", {}, UnknownModel, "ExponentialSmoothing"),
            ("NaiveSeasonal", {"k": 12}, EngineError, "no parameter 'k'; accepted: K"),
            ("NaiveSeasonal", {"K": "90m"}, EngineError, "whole number of steps"),
            ("NaiveSeasonal", {"num_samples": 0}, EngineError, "num_samples must be an integer"),
            ("LinearRegressionModel", {"lags": 0}, EngineError, "bad parameters"),
        ],
    )
    def test_bad_params_name_the_param(
        self, name: str, params: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        with pytest.raises(error, match=message):
            DefaultEngineFactory().create(spec("darts", name, **params), step=STEP)

    def test_missing_library_names_the_extra(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setitem(sys.modules, "darts", None)
        monkeypatch.setitem(sys.modules, "darts.models", None)
        with pytest.raises(EngineNotInstalled, match=r"openanomaly\[darts\]"):
            DefaultEngineFactory().create(spec("darts"), step=STEP)
