"""The NAB scorer against hand-computed cases.

A file of 100 rows has a probationary period of 15 rows. Expected values were worked out by
hand from NAB's formulas, with S(p) = 2 / (1 + exp(5p)) - 1 and S(-1) = 0.986614298:
S(-0.5) / S(-1) = 0.848283 / 0.986614 = 0.859793; S(-0.8) / S(-1) = 0.977107;
S(-0.1) / S(-1) = 0.244919 / 0.986614 = 0.248242;
0.11 * S(2/9) = 0.11 * -0.504672 = -0.0555140.
"""

from __future__ import annotations

import numpy as np
import pytest

from openanomaly.quality.nab import (
    PROFILES,
    STANDARD,
    EventStats,
    Labels,
    best_threshold,
    detections,
    event_stats,
    normalised,
    probation_rows,
    row_weights,
    scaled_sigmoid,
    score_file,
)

N = 100
WINDOW = Labels(N, np.array([[50, 59]]))  # width 10


def flags(*rows: int, n: int = N) -> np.ndarray:
    out = np.zeros(n, dtype=bool)
    out[list(rows)] = True
    return out


def test_probation_is_15_percent_capped_at_750_rows() -> None:
    assert probation_rows(100) == 15
    assert probation_rows(4032) == 604
    assert probation_rows(22695) == 750


def test_scaled_sigmoid_hand_values() -> None:
    s = scaled_sigmoid(np.array([-1.0, 0.0, 2 / 9, 3.0, 3.01]))
    assert s == pytest.approx([0.9866143, 0.0, -0.5046724, -0.9999994, -1.0], abs=1e-6)


def test_detection_at_left_edge_scores_one_per_window() -> None:
    two = Labels(N, np.array([[30, 39], [60, 79]]))
    s = score_file(flags(30, 60), two)
    assert s.raw == pytest.approx(2.0)
    assert (s.tp, s.fn, s.fp) == (2, 0, 0)


def test_later_detection_in_a_window_is_worth_less_and_only_the_earliest_counts() -> None:
    assert score_file(flags(55), WINDOW).raw == pytest.approx(0.859793, abs=1e-6)
    assert score_file(flags(52, 55, 58), WINDOW).raw == pytest.approx(0.977107, abs=1e-6)
    assert score_file(flags(59), WINDOW).raw == pytest.approx(0.248242, abs=1e-6)


def test_no_detection_scores_the_null() -> None:
    s = score_file(flags(), WINDOW)
    assert s.raw == s.null == -1.0
    assert (s.tp, s.fn, s.fp) == (0, 1, 0)


def test_far_false_positive_costs_fp_weight() -> None:
    # No window precedes row 30: a flat -fpWeight; the window is missed as well.
    assert score_file(flags(30), WINDOW).raw == pytest.approx(-0.11 - 1.0)
    # Row 95 is (95-59)/9 = 4 window widths after the window: beyond p = 3, also -fpWeight.
    assert score_file(flags(50, 95), WINDOW).raw == pytest.approx(1.0 - 0.11)


def test_false_positive_just_after_a_window_costs_less() -> None:
    near = score_file(flags(50, 61), WINDOW).raw
    assert near == pytest.approx(1.0 - 0.0555140, abs=1e-6)
    assert 1.0 - 0.11 < near < 1.0


def test_probation_rows_are_ignored() -> None:
    quiet = Labels(N)
    assert score_file(flags(0, 7, 14), quiet).raw == 0.0
    s = score_file(flags(14, 15), quiet)
    assert (s.raw, s.fp) == pytest.approx((-0.11, 1))


def test_normalisation_is_0_at_null_and_100_at_perfect() -> None:
    files = [WINDOW, Labels(N, np.array([[20, 29], [70, 89]]))]
    null = [score_file(flags(), lb) for lb in files]
    perfect = [score_file(flags(*lb.windows[:, 0]), lb) for lb in files]
    assert normalised(null) == pytest.approx(0.0)
    assert normalised(perfect) == pytest.approx(100.0)
    # One of three windows found at its left edge: raw -1 of null -3 and perfect 3 -> 33.3.
    half = [score_file(flags(50), files[0]), null[1]]
    assert normalised(half) == pytest.approx(100 * (-1 + 3) / 6)


def test_profiles_change_the_costs() -> None:
    assert score_file(flags(30), WINDOW, PROFILES["reward_low_FP_rate"]).raw == pytest.approx(-1.22)
    assert score_file(flags(30), WINDOW, PROFILES["reward_low_FN_rate"]).raw == pytest.approx(-2.11)


def test_weights_are_tp_inside_and_fp_cost_outside() -> None:
    w = row_weights(WINDOW, STANDARD)
    assert w[50] == pytest.approx(1.0)
    assert w[40] == pytest.approx(-0.11)
    assert w[61] == pytest.approx(-0.0555140, abs=1e-6)


def test_edge_mode_counts_one_detection_per_run_row_mode_every_row() -> None:
    score = np.zeros(N)
    score[30:35] = 3.0  # a run of five rows outside the window
    score[40] = np.nan  # missing scores never detect
    assert np.flatnonzero(detections(score, mode="edge")).tolist() == [30]
    assert np.flatnonzero(detections(score)).tolist() == [30, 31, 32, 33, 34]  # NAB's rule
    assert score_file(detections(score, mode="edge"), WINDOW).raw == pytest.approx(-1.11)
    assert score_file(detections(score), WINDOW).raw == pytest.approx(-1.55)
    assert not detections(score, threshold=3.0).any()  # strictly above the threshold


def test_best_threshold_picks_the_level_that_separates() -> None:
    score = np.ones(N) * 0.5
    score[30] = 2.0  # a false positive scoring 2
    score[52] = 5.0  # the window, scoring 5
    thr, best = best_threshold([(score, WINDOW)], thresholds=np.array([0.1, 1.0, 3.0, 10.0]))
    assert thr == 3.0
    assert best == pytest.approx(100 * (0.977107 + 1) / 2, abs=1e-4)


def test_event_stats_precision_recall_and_false_alarms() -> None:
    two = Labels(N, np.array([[30, 39], [60, 79]]))
    score = np.zeros(N)
    score[[10, 11]] = 2.0  # in probation: ignored
    score[25:32] = 2.0  # starts before the first window and overlaps it: a true event
    score[45:47] = 2.0  # a false alarm
    score[90] = 2.0  # another
    stats = event_stats(score, two)
    assert stats == EventStats(events=3, true_events=1, windows=2, windows_hit=1, rows=85)
    assert stats.precision == pytest.approx(1 / 3)
    assert stats.recall == pytest.approx(0.5)
    assert stats.false_alarms_per_1000 == pytest.approx(1000 * 2 / 85)
    total = stats + EventStats(events=1, true_events=1, windows=1, windows_hit=1, rows=15)
    assert (total.precision, total.recall, total.rows) == (0.5, 2 / 3, 100)


def test_labels_from_timestamps_map_windows_to_rows() -> None:
    ts = np.arange(0, 1000, 10)
    labels = Labels.from_timestamps(ts, [(495, 590)])
    assert labels.windows.tolist() == [[50, 59]]
    with pytest.raises(ValueError, match="disjoint"):
        Labels(N, np.array([[10, 20], [20, 30]]))
