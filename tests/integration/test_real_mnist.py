"""End to end on real data: a BadNets MNIST model trained here is flagged with its true target."""

import pytest

from tests.conftest import require_shared


@pytest.mark.slow
def test_badnets_mnist_is_flagged(tmp_path):
    from nc_engine import load_config, run_scan
    from tests.factory import MNIST, train_mnist

    require_shared(MNIST)
    manifest = train_mnist(tmp_path / "model", backdoor=True, seed=0)
    assert manifest["clean_accuracy"] > 0.95 and manifest["attack_success_rate"] > 0.95
    cfg = load_config(tmp_path / "model" / "config.toml")
    cfg.output.dir = str(tmp_path / "runs")
    report = run_scan(cfg)
    assert report.info.clean_accuracy > 0.95
    assert report.verdict == "backdoored" and manifest["target"] in report.flagged
    row = next(r for r in report.labels if r.label == manifest["target"])
    assert row.anomaly_index > report.threshold and row.l1_norm < 12  # the real trigger: 3x3 white, L1 9
