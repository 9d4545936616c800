import numpy as np
import pytest

from openanomaly.domain.scoring import score
from openanomaly.domain.series import Forecast
from openanomaly.domain.spec import ScoringSpec


def fc(yhat: float, lower: float, upper: float, n: int = 1) -> Forecast:
    return Forecast(np.full(n, yhat), np.full(n, lower), np.full(n, upper))


@pytest.mark.parametrize(
    ("y", "expected"),
    [(10.0, 0.0), (12.0, 1.0), (8.0, 1.0), (14.0, 2.0), (11.0, 0.5), (6.0, 2.0)],
)
def test_contract_zero_at_yhat_one_at_edge(y: float, expected: float) -> None:
    s = score(np.array([y]), fc(10, 8, 12), ScoringSpec())
    assert s.score[0] == pytest.approx(expected)


def test_asymmetric_band_uses_the_side_of_the_deviation() -> None:
    s = score(np.array([14.0, 9.0]), fc(10, 9, 14, n=2), ScoringSpec())
    assert s.score.tolist() == pytest.approx([1.0, 1.0])


def test_direction_above_ignores_drops_and_below_ignores_rises() -> None:
    y = np.array([20.0, 0.0])
    above = score(y, fc(10, 8, 12, 2), ScoringSpec(direction="above")).score
    below = score(y, fc(10, 8, 12, 2), ScoringSpec(direction="below")).score
    assert above.tolist() == pytest.approx([5.0, 0.0])
    assert below.tolist() == pytest.approx([0.0, 5.0])


def test_min_deviation_widens_the_band_and_the_written_band_matches() -> None:
    s = score(np.array([10.5, 11.0, 12.0]), fc(10, 9.9, 10.1, 3), ScoringSpec(min_deviation=1.0))
    assert s.score.tolist() == pytest.approx([0.5, 1.0, 2.0])
    assert s.upper.tolist() == pytest.approx([11.0] * 3)
    assert s.lower.tolist() == pytest.approx([9.0] * 3)


def test_data_range_clips_the_band_and_flags_impossible_values() -> None:
    s = score(np.array([-1.0, 0.5]), fc(0.2, -0.5, 0.9, 2), ScoringSpec(data_range=(0, None)))
    assert s.lower.tolist() == [0.0, 0.0]
    assert s.score[0] > 1
    assert s.score[1] < 1


def test_nan_and_inf_inputs_give_no_score_and_no_crash() -> None:
    y = np.array([np.nan, np.inf, 10.0, 10.0])
    f = Forecast(
        np.array([10, 10, np.nan, 10.0]), np.array([8, 8, 8, 8.0]), np.array([12, 12, 12, np.inf])
    )
    s = score(y, f, ScoringSpec())
    assert np.isnan(s.score[:3]).all()
    assert np.isnan(s.score[3])


def test_zero_width_band_constant_series() -> None:
    s = score(np.array([5.0, 5.0001]), fc(5, 5, 5, 2), ScoringSpec())
    assert s.score[0] == 0
    assert s.score[1] > 1


def test_vectorized_over_a_panel() -> None:
    rng = np.random.default_rng(0)
    y = rng.normal(size=(1000, 60))
    f = Forecast(np.zeros_like(y), np.full_like(y, -3), np.full_like(y, 3))
    s = score(y, f, ScoringSpec())
    assert s.score.shape == (1000, 60)
    assert np.allclose(s.score, np.abs(y) / 3)
