import pytest

from nc_engine.outliers import MAD_CONSTANT, mad_outliers


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
