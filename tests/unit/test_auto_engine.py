"""The ``auto`` engine: per-series choice by a holdout backtest (the shared contract runs in
test_engines.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import ModelSpec
from openanomaly.engines import DefaultEngineFactory
from openanomaly.engines.auto import AutoEngine, default_candidates, loads
from openanomaly.engines.auto.select import holdout_windows, interval_score, noise_scale, pick
from openanomaly.errors import EngineError

STEP, DAY = 3600, 24
T = 14 * DAY
T0 = 1_700_002_800  # a multiple of STEP
BUILTIN: list[dict[str, Any]] = [
    {"engine": "builtin", "name": "mad"},
    {"engine": "builtin", "name": "profile", "params": {"season": None}},
    {"engine": "builtin", "name": "profile", "params": {"season": "1d"}},
]
SEASONAL_MODEL = 2


def mixed_panel(seed: int, amplitude: float = 10.0) -> SeriesBatch:
    """Rows 0-3 daily seasonal, 4-7 noise only, 8-11 noise with three random level shifts."""
    rng = np.random.default_rng(seed)
    k = np.arange(T)
    rows = [
        50 + amplitude * np.sin(2 * np.pi * (k + 3 * i) / DAY) + rng.normal(0, 1, T)
        for i in range(4)
    ]
    rows += [20 + rng.normal(0, 2, T) for _ in range(4)]
    for _ in range(4):
        row = 10 + rng.normal(0, 1, T)
        for at in rng.choice(np.arange(DAY, T), 3, replace=False):
            row[at:] += rng.choice([-1, 1]) * rng.uniform(5, 15)
        rows.append(row)
    labels = tuple({"__name__": "m", "i": str(i)} for i in range(len(rows)))
    return SeriesBatch(labels, T0 + k * STEP, np.vstack(rows))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("amplitude", [10.0, 2.0])
def test_seasonal_series_get_a_seasonal_model_the_others_not(seed: int, amplitude: float) -> None:
    engine = AutoEngine(BUILTIN, step=STEP).fit(mixed_panel(seed, amplitude))
    assert (engine.winners_[:4] == SEASONAL_MODEL).all(), engine.scores_
    assert (engine.winners_[4:] != SEASONAL_MODEL).all(), engine.scores_
    summary = engine.summary()
    assert summary["builtin/profile{season=1d}"] == 4
    assert sum(summary.values()) == 12


def test_round_trip_keeps_winners_and_forecasts() -> None:
    panel = mixed_panel(0)
    engine = AutoEngine(BUILTIN, step=STEP).fit(panel)
    again = loads(engine.dumps(), step=STEP)
    assert again.winners_.tolist() == engine.winners_.tolist()
    assert again.summary() == engine.summary()
    context = SeriesBatch(panel.labels, panel.timestamps[-48:], panel.values[:, -48:])
    future = panel.timestamps[-1] + STEP * np.arange(1, 4)
    a, b = engine.predict(context, future, 0.99), again.predict(context, future, 0.99)
    np.testing.assert_array_equal(a.yhat, b.yhat)
    np.testing.assert_array_equal(a.upper, b.upper)
    assert again.known((*panel.keys, 'm{i="new"}')).tolist() == [True] * 12 + [False]


def test_default_candidates_follow_what_the_data_allows() -> None:
    names = [(c.name, c.params.get("season")) for c in default_candidates(STEP, 10 * 86400)]
    assert names[:2] == [("profile", None), ("profile", "1d")]
    assert ("profile", "1w") not in names  # ten days do not hold two weeks
    short = default_candidates(STEP, 86400)
    assert [c.params.get("season") for c in short if c.name == "profile"] == [None]
    assert default_candidates(STEP, 86400)[0].engine == "builtin"


def test_a_too_short_history_gives_every_series_the_first_candidate() -> None:
    panel = mixed_panel(1)
    tiny = SeriesBatch(panel.labels, panel.timestamps[:1], panel.values[:, :1])
    engine = AutoEngine(BUILTIN, step=STEP).fit(tiny)
    assert (engine.winners_ == 0).all()
    assert np.isnan(engine.scores_).all()


def test_a_failing_candidate_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    bad = {"engine": "builtin", "name": "profile", "params": {"season": "1d"}}
    factory = DefaultEngineFactory()

    class Failing(DefaultEngineFactory):
        def create(self, spec: ModelSpec, *, step: int) -> Any:
            if spec.params.get("season") == "1d":
                raise EngineError("boom")
            return factory.create(spec, step=step)

    engine = AutoEngine([*BUILTIN[:2], bad], step=STEP, factory=Failing())
    engine.fit(mixed_panel(2))
    assert (engine.winners_ != 2).all()
    assert np.isinf(engine.scores_[2]).all()
    assert "left out: boom" in caplog.text


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"holdout": 1.5}, "holdout must be a fraction"),
        ({"holdout": "90m"}, "whole number of steps"),
        ({"every": "1x"}, "every"),
        ({"interval": 0.3}, r"interval must be a number in \(0.5, 1\)"),
        ({"tolerance": -1}, "tolerance must be a number >= 0"),
        ({"max_windows": 0}, "max_windows must be an integer >= 1"),
        ({"candidates": []}, "at least one model"),
        ({"candidates": [{"engine": "auto"}]}, "auto engine itself"),
        ({"candidates": [{"engin": "builtin"}]}, "model.engin"),
        ({"holdot": 0.2}, "no parameter 'holdot'; accepted: candidates"),
    ],
)
def test_bad_params_name_the_param(params: dict[str, Any], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        DefaultEngineFactory().create(ModelSpec(engine="auto", params=params), step=STEP)


def test_load_refuses_another_step_and_garbage() -> None:
    data = AutoEngine(BUILTIN[:1], step=STEP).fit(mixed_panel(0)).dumps()
    with pytest.raises(EngineError, match="step"):
        loads(data, step=60)
    with pytest.raises(EngineError, match="not an auto model artifact"):
        loads(b"garbage", step=STEP)


class TestKernels:
    def test_interval_score(self) -> None:
        y = np.array([[0.0, 2.0, -3.0, np.nan]])
        lower, upper = np.full((1, 4), -1.0), np.full((1, 4), 1.0)
        got = interval_score(y, lower, upper, 0.8, np.array([1.5]))
        # width 2, penalty 2 / 0.2 = 10 per unit outside, a miss counts at most 1.5
        np.testing.assert_allclose(got[0, :3], [2.0, 12.0, 17.0])
        assert np.isnan(got[0, 3])

    def test_noise_scale_ignores_a_level_shift(self) -> None:
        rng = np.random.default_rng(0)
        x = rng.normal(0, 1, (1, 2000))
        x[0, 1000:] += 50
        assert 0.9 < noise_scale(x)[0] < 1.1

    def test_pick_prefers_earlier_candidates_within_tolerance(self) -> None:
        scores = np.array([[10.0, 10.0, np.nan], [9.5, 5.0, np.nan]])
        assert pick(scores, 0.1).tolist() == [0, 1, 0]
        assert pick(scores, 0.0).tolist() == [1, 1, 0]

    def test_holdout_windows_tile_then_thin(self) -> None:
        assert holdout_windows(10, 4, 3, 10) == [(6, 9), (9, 10)]
        thinned = holdout_windows(100, 50, 1, 5)
        assert len(thinned) == 5
        assert thinned[0] == (50, 51) and thinned[-1] == (99, 100)
