import math
import statistics

import pytest

from nc_engine.verdict.outliers import (
    DEFAULT_SPREAD_FLOOR,
    DEFAULT_THRESHOLD,
    MAD_CONSTANT,
    anomaly_scores,
    mad_outliers,
)


def test_odd_count_hand_computed():
    l1 = [10.0, 50.0, 52.0, 54.0, 56.0]
    # median 52; deviations 42, 2, 0, 2, 4 -> median 2; MAD = 1.4826 * 2
    r = mad_outliers(l1, 2.0)
    assert r.median == 52.0
    assert r.mad == pytest.approx(MAD_CONSTANT * 2)
    assert r.anomaly_index[0] == pytest.approx(42 / (MAD_CONSTANT * 2))
    assert r.flagged == [True, False, False, False, False]


def test_even_count_uses_mean_of_middle_values():
    l1 = [1.0, 8.0, 10.0, 12.0, 14.0, 20.0]
    # median (10 + 12) / 2 = 11; |dev| = 10, 3, 1, 1, 3, 9 -> sorted 1,1,3,3,9,10 -> median 3
    r = mad_outliers(l1, 2.0)
    assert r.median == 11.0
    assert r.mad == pytest.approx(MAD_CONSTANT * 3)
    assert r.anomaly_index[0] == pytest.approx(10 / (MAD_CONSTANT * 3))
    assert r.flagged[0] and not any(r.flagged[1:])


def test_large_l1_is_never_flagged_even_with_large_negative_index():
    r = mad_outliers([50.0, 51.0, 52.0, 53.0, 500.0], 2.0)
    assert r.anomaly_index[-1] < -2 and not any(r.flagged)


def test_mad_zero_is_reported_not_divided_by():
    r = mad_outliers([5.0, 5.0, 5.0, 1.0], 2.0)
    assert r.mad == 0.0 and r.note and not any(r.flagged)
    assert all(a == 0.0 for a in r.anomaly_index)


def test_ineligible_labels_count_but_are_not_flagged():
    l1 = [10.0, 50.0, 52.0, 54.0, 56.0]
    r = mad_outliers(l1, 2.0, eligible=[False, True, True, True, True])
    assert r.anomaly_index[0] > 2 and not r.flagged[0]


def test_fewer_than_three_labels():
    r = mad_outliers([3.0, 40.0], 2.0)
    assert r.note and not any(r.flagged)


def test_log_statistic_is_the_mad_test_on_log_l1():
    l1 = [4.0, 20.0, 40.0, 50.0, 60.0, 80.0, 100.0]
    r = mad_outliers(l1, 3.5, statistic="log_l1")
    logs = [math.log(v) for v in l1]
    median = statistics.median(logs)
    mad = MAD_CONSTANT * statistics.median(abs(v - median) for v in logs)
    assert r.median == pytest.approx(50.0) and r.mad == pytest.approx(mad)
    assert r.anomaly_index[0] == pytest.approx((median - logs[0]) / mad)
    assert r.cutoff == pytest.approx(math.exp(median - 3.5 * mad))
    assert r.flagged == [True] + [False] * 6


def test_log_statistic_on_two_real_scans_of_the_zoo():
    """L1 norms from evaluation/campaigns/main-gpu/evaluation.jsonl. A clean CIFAR-10 model whose easiest label
    (truck) needs a trigger 2/3 the typical size: the paper's test flags it, the log test does not.
    A BadNets MNIST model (target 9) whose hard labels spread the raw MAD wide: the log test finds it."""
    clean = [50.3, 39.9, 51.3, 57.6, 56.9, 51.8, 38.2, 47.8, 49.5, 32.0]  # cifar10-compact-clean-01, seed 0
    assert mad_outliers(clean, 2.0, statistic="l1").flagged[9]
    assert not any(mad_outliers(clean, 3.5, statistic="log_l1").flagged)
    patch = [83.6, 110.2, 63.3, 43.5, 88.3, 46.0, 79.4, 69.3, 64.1, 11.4]  # mnist-smallcnn-patch-00, seed 2
    assert not any(mad_outliers(patch, 2.0, statistic="l1").flagged)
    assert mad_outliers(patch, 3.5, statistic="log_l1").flagged == [False] * 9 + [True]


def test_linear_cutoff_is_median_minus_threshold_mads():
    r = mad_outliers([10.0, 50.0, 52.0, 54.0, 56.0], 2.0)
    assert r.cutoff == pytest.approx(52.0 - 2.0 * MAD_CONSTANT * 2)


def test_spread_floor_keeps_a_tight_clean_model_clean():
    """cifar10-compact-clean-02 seed 0 (evaluation.jsonl): its labels need near-equal triggers, so the MAD of
    log L1 is 0.08 and its easiest label, 0.6 of the median, scored 6.4 MADs: a false alarm at 3.5. The
    floor divides by the scatter a clean model has anyway."""
    clean = [54.4, 33.1, 49.9, 51.9, 48.8, 50.0, 41.9, 52.0, 48.1, 30.5]
    assert mad_outliers(clean, 3.5, statistic="log_l1").flagged[9]
    floored = mad_outliers(
        clean, DEFAULT_THRESHOLD["log_l1"], statistic="log_l1", spread_floor=DEFAULT_SPREAD_FLOOR["log_l1"]
    )
    assert not any(floored.flagged)
    assert floored.spread == DEFAULT_SPREAD_FLOOR["log_l1"] > floored.mad


def test_spread_floor_flags_the_mlp_backdoor_the_old_default_missed():
    """The issue's third-party MNIST MLP: target 5 at L1 6.1, next 26.7, median 40.7; index 3.22 < 3.5."""
    l1 = [26.7, 26.9, 27.5, 40.0, 41.4, 6.1, 61.0, 62.0, 90.0, 120.0]  # its labels spread wide: MAD 0.62
    assert not any(mad_outliers(l1, 3.5, statistic="log_l1").flagged)
    r = mad_outliers(l1, DEFAULT_THRESHOLD["log_l1"], statistic="log_l1", spread_floor=DEFAULT_SPREAD_FLOOR["log_l1"])
    assert r.flagged == [False] * 5 + [True] + [False] * 4
    assert r.spread == pytest.approx(max(r.mad, DEFAULT_SPREAD_FLOOR["log_l1"]))
    assert r.cutoff == pytest.approx(math.exp(math.log(r.median) - DEFAULT_THRESHOLD["log_l1"] * r.spread))


def test_spread_floor_does_not_rescue_a_zero_mad():
    r = mad_outliers([5.0, 5.0, 5.0, 1.0], 1.0, statistic="log_l1", spread_floor=0.7)
    assert r.note and not any(r.flagged)
    assert anomaly_scores([5.0, 5.0, 5.0, 1.0], "log_l1", spread_floor=0.7) == [0.0] * 4
