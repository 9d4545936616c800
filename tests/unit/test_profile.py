"""The built-in profile's learning: season choice, calibrated tails per side, recent memory.

The shared engine contract runs in test_engines.py; these pin what makes the default model
usable on real metrics (NAB-like: spiky, quantized, one-sided, seasonal or not).
"""

from __future__ import annotations

import io
from statistics import NormalDist
from typing import Any

import numpy as np
import pytest

from openanomaly.adapters.memory import MemoryMetrics
from openanomaly.domain.series import SeriesBatch
from openanomaly.domain.spec import ModelSpec, Pipeline
from openanomaly.engines import DefaultEngineFactory
from openanomaly.engines.builtin import _REGIME_POINTS, MadModel, ProfileModel, loads
from openanomaly.engines.builtin.seasonal import TAIL_LEVELS, quantiles, tail_factor
from openanomaly.engines.kernels.robust import z_score
from openanomaly.errors import EngineError
from openanomaly.services.backtest import backtest
from openanomaly.synthetic import seasonal_panel

STEP = 3600
DAY, WEEK = 24, 168
T0 = 1_700_006_400 // (7 * 86400) * (7 * 86400)  # a week boundary


def batch(rows: list[np.ndarray], start: int = 0) -> SeriesBatch:
    t = rows[0].size
    labels = tuple({"i": str(i)} for i in range(len(rows)))
    return SeriesBatch(labels, T0 + (start + np.arange(t)) * STEP, np.vstack(rows))


def score(
    model: ProfileModel, history: np.ndarray, actual: float, interval: float = 0.999
) -> float:
    """The anomaly score of ``actual`` right after ``history`` (its last day as context)."""
    ctx = batch([history[-DAY:]], start=history.size - DAY)
    fc = model.predict(ctx, np.array([T0 + history.size * STEP]), interval)
    yhat, lo, hi = fc.yhat[0, 0], fc.lower[0, 0], fc.upper[0, 0]
    return float((actual - yhat) / (hi - yhat) if actual >= yhat else (yhat - actual) / (yhat - lo))


def test_auto_season_picks_what_predicts_held_out_cycles() -> None:
    rng = np.random.default_rng(0)
    k = np.arange(4 * WEEK)
    daily = 50 + 10 * np.sin(2 * np.pi * k / DAY) + rng.normal(0, 1, k.size)
    weekly = 50 + 10 * (k % WEEK >= 5 * DAY) + rng.normal(0, 1, k.size)  # weekends differ
    noise = 50 + rng.normal(0, 3, k.size)
    model = ProfileModel(step=STEP).fit(batch([daily, weekly, noise]))
    assert model.season_.tolist() == [DAY, WEEK, 1]
    assert model.level_.shape[1] == WEEK  # the daily row is tiled over the week
    # Under two weeks of data no weekly season: the weekend pattern is no daily one either.
    short = ProfileModel(step=STEP).fit(batch([daily[: 13 * DAY], weekly[: 13 * DAY]]))
    assert short.season_.tolist() == [DAY, 1]


def test_tails_learn_normal_spikes_and_flag_bigger_ones() -> None:
    rng = np.random.default_rng(1)
    spiky = np.where(rng.random(3 * WEEK) < 0.03, 10.0, 0.1)  # quantized: its MAD is 0
    model = ProfileModel(step=STEP, season=None).fit(batch([spiky]))
    calm = spiky.copy()
    calm[-DAY:] = 0.1  # no spike in the context: the memory does not help
    assert score(model, calm, 10.0) <= 1.0
    assert score(model, calm, 30.0) > 1.0


def test_each_side_has_its_own_tail() -> None:
    rng = np.random.default_rng(2)
    up_spikes = 20 + rng.normal(0, 0.5, 3 * WEEK) + 15 * (rng.random(3 * WEEK) < 0.03)
    model = ProfileModel(step=STEP, season=None).fit(batch([up_spikes]))
    upper, lower = model.tails_[0, 0, -1], model.tails_[0, 1, -1]
    assert upper > 5 * lower
    calm = up_spikes.copy()
    calm[-DAY:] = 20.0
    assert score(model, calm, 35.0) <= 1.0  # as high as the usual spikes: normal
    assert score(model, calm, 15.0) > 1.0  # as far below: never seen, anomalous


def test_one_spike_does_not_widen_the_band_a_recurring_one_does() -> None:
    rng = np.random.default_rng(3)
    noise = 20 + rng.normal(0, 1, 3 * WEEK)
    model = ProfileModel(step=STEP, season=None).fit(batch([noise]))
    once = noise.copy()
    once[-10] = 40.0  # one spike ten hours ago, over since
    assert score(model, noise, 40.0) > 1.0
    assert score(model, once, 40.0) > 1.0  # what was flagged is not learnt as normal
    twice = once.copy()
    twice[-20] = 40.0  # the same spike again: it recurs
    assert score(model, twice, 40.0) < 0.95  # its size plus the normal band is covered
    assert score(model, twice, 50.0) > 1.0
    forgetful = ProfileModel(step=STEP, season=None, memory=0).fit(batch([noise]))
    assert score(forgetful, twice, 40.0) > 1.0
    # Normal noise in the context leaves a moderate band (0.8) as narrow as without memory.
    ctx = batch([noise[-72:]], start=noise.size - 72)
    ahead = np.array([T0 + noise.size * STEP])
    upper = [m.predict(ctx, ahead, 0.8).upper[0, 0] for m in (model, forgetful)]
    assert upper[0] == pytest.approx(upper[1])


def test_a_spike_that_recurred_within_90_points_is_covered() -> None:
    # The memory looks back 90 points (7.5 hours at NAB's 5-minute steps; 60 flagged bursts
    # that recur every 5-7 hours at each recurrence, costing rows outside the labelled windows).
    rng = np.random.default_rng(3)
    noise = 20 + rng.normal(0, 1, 3 * WEEK)
    again = noise.copy()
    again[[-80, -10]] = 40.0  # a spike 10 points ago, and the same one 80 points ago
    ctx = batch([again[-96:]], start=again.size - 96)
    ahead = np.array([T0 + again.size * STEP])
    for memory, covered in ((90, True), (60, False)):
        model = ProfileModel(step=STEP, season=None, memory=memory).fit(batch([noise]))
        fc = model.predict(ctx, ahead, 0.999)
        assert bool((40.0 - fc.yhat[0, 0]) / (fc.upper[0, 0] - fc.yhat[0, 0]) < 1.0) is covered
    assert ProfileModel(step=STEP).memory == 90


def test_bursts_that_keep_crossing_the_band_in_the_context_widen_it() -> None:
    # A burst every 20 hours over the last 200 hours, the last 60 left out: the regime
    # crosses a band learnt on quiet weeks 7 times (3.5% of the points, 35x the 0.1% promised).
    rng = np.random.default_rng(11)
    noise = 20 + rng.normal(0, 1, 3 * WEEK)
    model = ProfileModel(step=STEP, season=None).fit(batch([noise]))
    bursty = noise.copy()
    bursty[-200:-60:20] = 26.0
    ctx = batch([bursty[-200:]], start=bursty.size - 200)
    ahead = np.array([T0 + bursty.size * STEP])
    fc = model.predict(ctx, ahead, 0.999)
    assert (26.0 - fc.yhat[0, 0]) / (fc.upper[0, 0] - fc.yhat[0, 0]) < 1.0  # covered
    quiet = batch([noise[-200:]], start=noise.size - 200)
    calm = model.predict(quiet, ahead, 0.999)
    assert (26.0 - calm.yhat[0, 0]) / (calm.upper[0, 0] - calm.yhat[0, 0]) > 1.0
    # Fewer crossings than 10x the promised share (one burst, the largest left out) do not widen.
    once = noise.copy()
    once[-150] = 26.0
    one = model.predict(batch([once[-200:]], start=once.size - 200), ahead, 0.999)
    assert one.upper[0, 0] - one.yhat[0, 0] == pytest.approx(calm.upper[0, 0] - calm.yhat[0, 0])


def test_an_excursion_alerts_for_its_onset_then_again_only_if_it_grows() -> None:
    rng = np.random.default_rng(5)
    noise = 20 + rng.normal(0, 1, 3 * WEEK)
    model = ProfileModel(step=STEP, season=None).fit(batch([noise]))
    assert model.onset == 2
    started = noise.copy()
    started[-1:] = [30.0]  # under way for one step: still its onset
    assert score(model, started, 33.0) > 1.0  # judged against the band from before it began
    two = noise.copy()
    two[-2:] = [30.0, 32.0]  # two steps flagged (an alert rule's ``for:`` of two steps): enough
    assert score(model, two, 33.0) <= 1.0  # NAB charges every further flagged row
    lasting = noise.copy()
    lasting[-8:] = [30.0, 32.0, 34.0, 33.0, 34.0, 33.0, 34.0, 33.0]  # eight steps: it lasts
    assert score(model, lasting, 33.0) <= 1.0  # not one alert per step for as long as it lasts
    assert score(model, lasting, 34.0) < 0.95  # a value repeating it is inside, not on the edge
    assert score(model, lasting, 45.0) > 1.0  # it grows beyond what it was
    eager = ProfileModel(step=STEP, season=None, onset=0).fit(batch([noise]))
    assert score(eager, started, 33.0) <= 1.0


@pytest.mark.parametrize("fitted", [True, False])
@pytest.mark.parametrize("points", [0, 2, 40])
def test_no_timestamp_to_forecast_gives_an_empty_band(fitted: bool, points: int) -> None:
    # A cycle with nothing new to score (the quick start's first minutes) asks for no
    # timestamps, on a context that may be short or empty: an empty forecast, not a crash.
    rng = np.random.default_rng(8)
    noise = 20 + rng.normal(0, 1, 3 * WEEK)
    model = ProfileModel(step=STEP, season=None)
    if fitted:
        model.fit(batch([noise]))
    ctx = SeriesBatch(({"i": "0"},), T0 + np.arange(points) * STEP, noise[None, :points])
    fc = model.predict(ctx, np.zeros(0, dtype=np.int64), 0.999)
    assert fc.yhat.shape == fc.lower.shape == fc.upper.shape == (1, 0)


def test_a_value_at_the_series_floor_is_inside_the_band_not_on_its_edge() -> None:
    # A CPU metric that idles at 0.134 and drops to its floor 0.066 a sixth of the time: the
    # tails are flat at that drop, and the edge must lie beyond it.
    rng = np.random.default_rng(7)
    idle = np.where(rng.random(3 * WEEK) < 1 / 6, 0.066, 0.134)
    model = ProfileModel(step=STEP, season=None).fit(batch([idle]))
    calm = idle.copy()
    calm[-DAY:] = 0.134
    assert 0.5 < score(model, calm, 0.066) < 0.97


def test_a_short_history_keeps_the_promised_share_of_clean_points_inside() -> None:
    # Two hours of a 24-minute season with Gaussian noise (the throughput panel), then six
    # hours scored point by point: about 0.1% of the points should score above 1 at 0.999.
    step, season = 60, 24 * 60
    end = T0 + 8 * 3600
    ts = np.arange(end - 8 * 3600 - 3600, end + 1, step)
    panel = seasonal_panel(100, ts, period=season, metric="clean", seed=0)
    pipeline = Pipeline.model_validate(
        {
            "id": "clean",
            "query": "clean",
            "step": step,
            "train": {"window": 2 * 3600},
            "infer": {"every": step, "context": 3600},
            "model": {"engine": "builtin", "params": {"season": season}},
        }
    )
    reader = MemoryMetrics({"clean": panel})
    result = backtest(pipeline, reader, DefaultEngineFactory(), start=end - 6 * 3600, end=end)
    scored = result.scored.score[np.isfinite(result.scored.score)]
    assert 0.0005 <= float(np.mean(scored > 1.0)) <= 0.002


def test_one_incident_in_the_training_window_is_not_learnt_as_normal() -> None:
    rng = np.random.default_rng(6)
    noise = 20 + rng.normal(0, 1, 3 * WEEK)
    incident = noise.copy()
    incident[DAY : DAY + 3] = [60.0, 80.0, 60.0]
    clean = ProfileModel(step=STEP, season=None).fit(batch([noise]))
    dirty = ProfileModel(step=STEP, season=None).fit(batch([incident]))
    np.testing.assert_allclose(dirty.tails_[0, 0], clean.tails_[0, 0], rtol=0.1)
    assert score(dirty, noise, 40.0) > 1.0
    # An extreme that recurs is the series' own behaviour and keeps widening the band.
    twice = incident.copy()
    twice[2 * DAY : 2 * DAY + 3] = [60.0, 80.0, 60.0]
    assert ProfileModel(step=STEP, season=None).fit(batch([twice])).tails_[0, 0, -1] > 5.0


def test_a_level_shift_in_the_training_window_is_one_incident() -> None:
    # A shift of twelve steps right before a fit (the demo trains on its injected shift): its
    # errors are one incident, not normal ones, and the same shift afterwards still alerts.
    rng = np.random.default_rng(9)
    noise = 20 + rng.normal(0, 1, 2 * WEEK)
    shifted = noise.copy()
    shifted[-30:-18] += 8.0
    clean = ProfileModel(step=STEP, season=None).fit(batch([noise]))
    dirty = ProfileModel(step=STEP, season=None).fit(batch([shifted]))
    np.testing.assert_allclose(dirty.tails_[0], clean.tails_[0], rtol=0.15)
    assert score(dirty, noise, 28.0) > 1.0


def _regime_context(dense: int, mark: int, rng: np.random.Generator) -> np.ndarray:
    """Two windows of quiet noise (below the 95% quantile) with ``dense`` values of 22.5 spread
    over the last ``_REGIME_POINTS - 1`` points."""
    quiet = np.minimum(20 + rng.normal(0, 1, 2 * _REGIME_POINTS - 1), 21.0)
    quiet[-(_REGIME_POINTS - 1) :: max(1, (_REGIME_POINTS - 1) // max(dense, 1))][:dense] = 22.5
    assert int(np.sum(quiet > 21.0)) == dense and dense < mark + 1
    return quiet


def test_a_regime_busier_than_any_training_window_alerts_once() -> None:
    # 22.5 is 2.5 standard deviations out: inside the band, above the training 95% quantile.
    # More such values in the last 48 points than any 48 training points held (by 2): the
    # value that brings the count to that mark alerts; the next ones do not.
    rng = np.random.default_rng(21)
    model = ProfileModel(step=STEP, season=None).fit(batch([20 + rng.normal(0, 1, 3 * WEEK)]))
    quantile, mark = model.regime_[0, 0]
    assert 21.3 < quantile < 22.0 and 4 <= mark <= 12

    def score_of(dense: int, value: float = 22.5) -> float:
        ctx = _regime_context(dense, int(mark), np.random.default_rng(22))
        n = ctx.size
        fc = model.predict(
            batch([ctx], start=3 * WEEK), np.array([T0 + (3 * WEEK + n) * STEP]), 0.999
        )
        return float((value - fc.yhat[0, 0]) / (fc.upper[0, 0] - fc.yhat[0, 0]))

    assert score_of(0) < 1.0  # quiet: 22.5 is normal
    assert score_of(int(mark) - 2) < 1.0  # busier, not yet beyond any training window
    assert score_of(int(mark) - 1) > 1.0  # this value reaches the mark: a new regime
    assert score_of(int(mark)) < 1.0  # the count was there a step ago: alerted once already
    assert score_of(int(mark) - 1, value=21.0) < 1.0  # a value below the quantile is normal


def test_an_artifact_saved_before_the_regime_check_still_scores() -> None:
    rng = np.random.default_rng(23)
    noise = 20 + rng.normal(0, 1, 3 * WEEK)
    model = ProfileModel(step=STEP, season=None).fit(batch([noise]))
    arrays: dict[str, Any] = {k: v for k, v in model._arrays().items() if k != "regime"}
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old = loads(
        model.pack({"arrays.npz": buf.getvalue()}, name="profile", params=model.get_params()),
        step=STEP,
    )
    assert isinstance(old, ProfileModel) and np.all(np.isnan(old.regime_))
    assert 0.0 < score(old, noise, 22.0) < 1.0
    assert score(old, noise, 40.0) > 1.0


def test_an_artifact_of_an_older_format_is_refused() -> None:
    rng = np.random.default_rng(10)
    model = ProfileModel(step=STEP, season=None).fit(batch([20 + rng.normal(0, 1, WEEK)]))
    old = model.pack({"arrays.npz": b""}, name="profile", params=model.get_params())
    old = old.replace(f'"format": {model.FORMAT}'.encode(), b'"format": 4')
    with pytest.raises(EngineError, match=r"builtin artifact format 4, not \d+: retrain"):
        loads(old, step=STEP)


def test_round_trip_keeps_seasons_and_tails() -> None:
    rng = np.random.default_rng(4)
    k = np.arange(3 * WEEK)
    model = ProfileModel(step=STEP).fit(batch([30 + np.sin(k) + rng.normal(0, 1, k.size)]))
    again = loads(model.dumps(), step=STEP)
    assert isinstance(again, ProfileModel)
    np.testing.assert_array_equal(again.tails_, model.tails_)
    np.testing.assert_array_equal(again.season_, model.season_)
    np.testing.assert_array_equal(again.regime_, model.regime_)


def test_quantiles_and_tail_extrapolation() -> None:
    a = np.arange(1001, dtype=float)[None, :]
    a[0, :3] = np.nan
    got = quantiles(a, TAIL_LEVELS)
    np.testing.assert_allclose(got[0], [np.quantile(np.arange(3, 1001), q) for q in TAIL_LEVELS])
    tails = np.array([[1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0]])  # levels 0.75 .. 0.999
    assert tail_factor(tails, 0.999)[0] == pytest.approx(7.0)
    assert tail_factor(tails, 0.9995)[0] == pytest.approx(7.0 + 2.0 / np.log10(5) * np.log10(2))
    # A tail flat at its top (an atom: a floor, a cap) is extrapolated no thinner than a normal
    # one through its highest quantile: the edge lies beyond the atom, not on it.
    flat = np.array([[1.0, 2.0, 3.0, 3.0, 3.0, 3.0, 3.0]])
    normal = z_score(0.999) / NormalDist().inv_cdf(0.999)
    assert tail_factor(flat, 0.9995)[0] == pytest.approx(3.0 * normal)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"memory": -1}, "memory must be an integer >= 0"),
        ({"season": "weekly"}, "season"),
    ],
)
def test_bad_params_name_the_param(params: dict[str, object], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        DefaultEngineFactory().create(ModelSpec(params=params), step=STEP)


def test_mad_of_quantized_data_still_has_a_spread() -> None:
    # A 0/1 metric that is mostly 0: its MAD is 0, its mean absolute deviation is not.
    values = np.zeros(DAY)
    values[::6] = 1.0
    ctx = batch([values])
    fc = MadModel(step=STEP).predict(ctx, np.array([T0 + DAY * STEP]), 0.999)
    half = fc.upper[0, 0] - fc.yhat[0, 0]
    assert fc.yhat[0, 0] == 0.0
    # z times the scaled mean absolute deviation of the last 30 points (five 1s), not ~0.
    assert half == pytest.approx(z_score(0.999) * 1.2533 * 5 / 30)


def test_the_demos_anomalies_stand_out_and_its_normal_series_do_not() -> None:
    # scripts/demo's panel (seed 7, fixed phase, 15 s steps, a 1 h season): the service fits
    # on the 5 h up to now, the injected spike and level shift included, then scores the last
    # 20 minutes point by point from an hour of context.
    from openanomaly.synthetic import inject

    step, now = 15, 1_800_000_000 // 15 * 15
    ts = np.arange(now - 6 * 3600, now + 1, step)
    n = ts.size
    shape = seasonal_panel(8, ts - now + 300, period=3600, metric="demo_requests", seed=7)
    panel = SeriesBatch(shape.labels, ts, shape.values)
    spike, shift = (2, n - 1 - 360 // step), (5, n - 1 - 600 // step, n - 1 - 240 // step)
    panel, _ = inject(panel, spikes=[spike], shifts=[shift])
    model = ProfileModel(step=step, season=3600).fit(panel.between(now - 5 * 3600, now))
    peaks = np.zeros(8)
    for j in range(n - 80, n):
        ctx = SeriesBatch(panel.labels, ts[j - 240 : j], panel.values[:, j - 240 : j])
        fc = model.predict(ctx, ts[j : j + 1], 0.999)
        y, yhat = panel.values[:, j], fc.yhat[:, 0]
        up, dn = fc.upper[:, 0] - yhat, yhat - fc.lower[:, 0]
        peaks = np.fmax(peaks, np.where(y >= yhat, (y - yhat) / up, (yhat - y) / dn))
    assert peaks[2] > 2.0 and peaks[5] > 2.0
    assert np.all(np.delete(peaks, [2, 5]) < 1.0)
