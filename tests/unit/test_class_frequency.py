"""The class-frequency correction: a frequent class's small trigger is expected, not anomalous; balanced
data is left alone; a line cannot explain away the one frequent class it rests on."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nc_engine.verdict.class_frequency import aligned, corrected, frequency_factors, frequency_slope
from nc_engine.verdict.outliers import DEFAULT_SPREAD_FLOOR, DEFAULT_THRESHOLD, mad_outliers
from tests.conftest import ROOT, require_shared

THRESHOLD, FLOOR = DEFAULT_THRESHOLD["log_l1"], DEFAULT_SPREAD_FLOOR["log_l1"]


def imbalanced(k: int = 43, slope: float = -0.8, seed: int = 0) -> tuple[list[float], list[float]]:
    """Shares spread 12x like GTSRB's, and clean-model norms that fall with frequency (and some noise)."""
    rng = np.random.default_rng(seed)
    share = np.geomspace(1, 12, k)
    rng.shuffle(share)
    share = share / share.sum()
    l1 = 50 * np.exp(slope * (np.log(share) - np.median(np.log(share))) + rng.normal(0, 0.15, k))
    return l1.tolist(), share.tolist()


def flagged(l1: list[float]) -> list[int]:
    result = mad_outliers(l1, THRESHOLD, statistic="log_l1", spread_floor=FLOOR)
    return [k for k, f in enumerate(result.flagged) if f]


def test_frequent_classes_of_a_clean_model_are_flagged_plainly_and_not_once_corrected():
    l1, share = imbalanced()
    commonest = int(np.argmax(share))
    assert commonest in flagged(l1)  # the false alarm the correction is for
    values, slope = corrected(l1, share)
    assert flagged(values) == [] and -1.0 < slope < -0.6


def test_a_backdoor_target_stays_flagged_whether_its_class_is_frequent_or_rare():
    l1, share = imbalanced(seed=1)
    for target in (int(np.argmax(share)), int(np.argmin(share))):
        planted = list(l1)
        planted[target] = l1[target] / 8
        assert flagged(corrected(planted, share)[0]) == [target]


def test_balanced_or_nearly_balanced_data_is_left_alone():
    l1, _ = imbalanced(k=10)
    assert corrected(l1, [0.1] * 10) == (l1, 0.0)  # CIFAR-10's test split: exactly balanced
    near = [0.098, 0.1135, 0.1032, 0.101, 0.0982, 0.0892, 0.0958, 0.1028, 0.0974, 0.1009]  # MNIST's test split
    assert corrected(l1, near) == (l1, 0.0)


def test_real_mnist_test_split_shares_leave_the_norms_alone():
    with np.load(require_shared(ROOT.parent / "shared" / "data" / "mnist.npz")) as d:
        counts = np.bincount(d["y_test"], minlength=10)
    share = (counts / counts.sum()).tolist()
    l1, _ = imbalanced(k=10)
    assert corrected(l1, share) == (l1, 0.0)


def test_no_shares_wrong_length_too_few_labels_or_a_rising_line_change_nothing():
    l1, share = imbalanced()
    assert corrected(l1, []) == (l1, 0.0)  # a report from before shares were recorded
    assert corrected(l1, share[:-1]) == (l1, 0.0)
    assert corrected(l1[:4], [0.05, 0.1, 0.4, 0.45]) == (l1[:4], 0.0)
    rising = [v * s * 100 for v, s in zip(l1, share, strict=True)]  # frequent -> larger: no known cause
    assert frequency_slope(rising, share) == 0.0 and corrected(rising, share) == (rising, 0.0)


def test_one_frequent_class_cannot_explain_its_own_backdoor_away():
    """Nine equal classes and one with 4x their share: every pair spanning a frequency gap involves that
    class, so a line through all labels is drawn by its own small trigger; fitted without it there is no
    line, and its norm is judged as it is."""
    share = [0.3] + [0.7 / 9] * 9
    l1 = [8.0, 40.0, 44.0, 38.0, 50.0, 47.0, 41.0, 43.0, 39.0, 52.0]
    assert frequency_slope(l1, share) < -1  # the whole-data line is the target's own
    assert frequency_factors(l1, share)[0] == 1.0 and flagged(corrected(l1, share)[0]) == [0]


def test_absent_classes_keep_their_norms_and_shares_are_read_by_label():
    l1, share = imbalanced()
    share[5] = 0.0
    values, slope = corrected(l1, share)
    assert slope < 0 and values[5] == l1[5]
    assert aligned([2, 0, 7], [0.5, 0.2, 0.3]) == [0.3, 0.5, 0.0]  # label 7 unknown: absent
    assert aligned([0, 1], []) == []


@pytest.mark.parametrize("bad", [math.nan, math.inf, 0.0])
def test_a_broken_norm_is_left_out_of_the_line_and_left_as_it_is(bad):
    l1, share = imbalanced()
    l1[3] = bad
    values, slope = corrected(l1, share)
    assert slope < 0 and (values[3] == bad or (math.isnan(bad) and math.isnan(values[3])))


def refit_without_each(l1: list[float], share: list[float]) -> list[float]:
    """The definition, fitted afresh without each label: what the engine's one-sort shortcut must equal."""
    present = [k for k, s in enumerate(share) if s > 0]
    x, y = np.log([share[k] for k in present]), np.log([l1[k] for k in present])
    factors = [1.0] * len(l1)
    for n, k in enumerate(present):
        xs, ys = np.delete(x, n), np.delete(y, n)
        i, j = np.triu_indices(len(xs), 1)
        apart = xs[i] != xs[j]
        slope = 0.0
        if xs.max() - xs.min() >= math.log(2) and len(xs) >= 5:
            slope = min(float(np.median((ys[j] - ys[i])[apart] / (xs[j] - xs[i])[apart])), 0.0)
        factors[k] = math.exp(slope * (x[n] - np.median(x)))
    return factors


@pytest.mark.parametrize("seed", range(12))
def test_the_leave_one_out_slopes_equal_a_refit_without_each_label(seed):
    """Tied shares (GTSRB's test split has many classes of 60, 90, 150 images), odd and even pair counts,
    one dominant class, an absent class: the shortcut gives exactly the medians a refit gives."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(6, 50))
    share = rng.choice([60.0, 90.0, 150.0, 450.0, 750.0], k) if seed % 4 else np.array([300.0] + [70.0] * (k - 1))
    share[-1] = 0.0 if seed % 3 == 0 else share[-1]
    share = (share / share.sum()).tolist()
    l1 = (50 * np.exp(-0.5 * np.log(np.maximum(share, 1e-3)) + rng.normal(0, 0.3, k))).tolist()
    if frequency_slope(l1, share) == 0.0:
        assert frequency_factors(l1, share) == [1.0] * k
    else:
        assert frequency_factors(l1, share) == pytest.approx(refit_without_each(l1, share), rel=1e-12)
