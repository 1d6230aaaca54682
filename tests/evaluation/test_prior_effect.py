"""The class-frequency analysis of the zoo's tuning half (evaluation/prior_effect.py)."""

import json

import numpy as np
import pytest

from evaluation.evaluate import in_half
from evaluation.prior_effect import (
    adjusted_index,
    engine_outcomes,
    rows_for,
    summary,
    tuning_records,
)

RNG = np.random.default_rng(0)
LOG_FREQ = np.log(np.linspace(1, 10, 43) / np.linspace(1, 10, 43).sum())


def frequency_driven_l1(target: int | None = None) -> list[float]:
    """Clean labels whose log L1 falls with log frequency (slope -0.4), plus noise; a target 4x smaller."""
    log_l1 = 3.5 - 0.4 * (LOG_FREQ - LOG_FREQ.mean()) + RNG.normal(0, 0.05, len(LOG_FREQ))
    if target is not None:
        log_l1[target] -= np.log(4)
    return list(np.exp(log_l1))


def test_removing_the_frequency_trend_lowers_clean_labels_and_keeps_the_target():
    clean = {"model": "c", "seed": 0, "target": None, "l1": frequency_driven_l1()}
    row = rows_for([clean], LOG_FREQ, 0.7)[0]
    assert row["slope"] < -0.3 and row["rho"] > 0.5
    assert row["adjusted_other"] < 0.5 * row["plain_other"]  # the frequent classes no longer stand out
    backdoored = {"model": "b", "seed": 0, "target": 3, "l1": frequency_driven_l1(target=3)}
    bad = rows_for([backdoored], LOG_FREQ, 0.7)[0]  # a rare class: the trend hid it, the adjustment does not
    assert bad["adjusted_target"] > 1.11 and bad["adjusted_target"] > bad["adjusted_other"]
    index, _ = adjusted_index(backdoored["l1"], LOG_FREQ, 0.7)
    assert int(np.argmax(index)) == 3
    line = summary([bad, rows_for([clean], LOG_FREQ, 0.7)[0]])
    assert f"adjusted: lowest target {bad['adjusted_target']:.2f}" in line


def test_only_tuning_half_scans_are_read(tmp_path):
    tuning, test = in_half("tuning", "both"), in_half("test", "both")
    names = ["gtsrb-compact-clean-00", "gtsrb-compact-clean-01", "gtsrb-resnet8-clean-03"]
    assert tuning(names[0]) and test(names[1]) and test(names[2])
    path = tmp_path / "scans.jsonl"
    path.write_text(
        "".join(
            json.dumps(
                {"model": n, "dataset": "gtsrb", "preset": "default", "seed": 0, "target": None, "l1": [1.0, 2.0, 3.0]}
            )
            + "\n"
            for n in names
        )
    )
    assert [r["model"] for r in tuning_records([path, tmp_path / "missing.jsonl"], "gtsrb")] == [names[0]]


def test_the_engine_outcomes_compare_the_same_norms_plain_and_corrected():
    rng = np.random.default_rng(1)
    share = np.geomspace(1, 12, 43)
    share /= share.sum()

    def l1(target: int | None = None) -> list[float]:  # frequent classes stand out plainly (like GTSRB's)
        v = 50 * np.exp(-0.8 * (np.log(share) - np.median(np.log(share))) + rng.normal(0, 0.15, 43))
        if target is not None:
            v[target] /= 8
        return v.tolist()

    clean = [
        {
            "model": f"c{i}",
            "seed": 0,
            "kind": "clean",
            "backdoor": False,
            "target": None,
            "l1": l1(),
            "frequency_correction": True,
            "label_share": share.tolist(),
        }
        for i in range(4)
    ]
    patch = [
        {
            "model": f"p{t}",
            "seed": 0,
            "kind": "patch",
            "backdoor": True,
            "target": t,
            "real_asr": 1.0,
            "l1": l1(target=t),
        }
        for t in (3, 40)
    ]
    out = engine_outcomes(clean + patch, share.tolist(), 0.7, 1.11)
    assert out["plain"]["clean"] == (4, 4)  # the frequent classes' false alarms (a stored flag is ignored)
    assert out["corrected"]["clean"] == (0, 4) and out["corrected"]["patch"] == (2, 2)
    assert out["corrected"]["auc"] == 1.0


def test_the_committed_scan_shares_are_the_test_splits_class_shares():
    """evaluation/scan_shares.json stands in for the shares old records lack: MNIST's is checked
    against the real data here; all are distributions of the right length, and only GTSRB's spread 2x."""
    from evaluation.zoo_data import DATASETS, SHARES_FILE
    from tests.conftest import ROOT, require_shared

    known = json.loads(SHARES_FILE.read_text())
    with np.load(require_shared(ROOT.parent / "shared" / "data" / "mnist.npz")) as d:
        counts = np.bincount(d["y_test"], minlength=10)
    assert known["mnist"] == pytest.approx((counts / counts.sum()).tolist())
    for name, info in DATASETS.items():
        assert len(known[name]) == info.num_classes and sum(known[name]) == pytest.approx(1.0)
        assert (max(known[name]) / min(known[name]) >= 2) is (name == "gtsrb")
