"""The zoo and its evaluation (#5): triggers do what they say, and CI's two-model slice (one BadNets and
one clean MNIST model from the zoo, trained here, scanned with the default preset through their
config files) gets both verdicts right."""

import numpy as np
import pytest

from evaluation.zoo_triggers import Trigger
from tests.conftest import require_shared


def test_patch_trigger_stamps_its_square_and_nothing_else():
    x = np.full((2, 32, 32, 3), 7, np.uint8)
    t = Trigger("patch", size=3, top=2, left=5, colour="red")
    out = t.apply(x)
    assert (out[:, 2:5, 5:8] == [255, 0, 0]).all()
    out[:, 2:5, 5:8] = 7
    assert (out == x).all() and t.l1(32, 32) == 9.0


def test_blend_and_noise_triggers_are_faint():
    x = np.full((4, 28, 28), 100, np.uint8)
    blended = Trigger("blend", alpha=0.1, seed=3).apply(x).astype(int)
    assert np.abs(blended - 100).max() <= 0.1 * 155 + 1 and (blended != 100).mean() > 0.5
    noisy = Trigger("noise", amplitude=8, seed=3).apply(x).astype(int)
    assert np.abs(noisy - 100).max() <= 8 and Trigger("noise", amplitude=8).l1(28, 28) is None


def test_zoo_specs_are_fixed_and_balanced():
    from evaluation.zoo import zoo_specs

    specs = zoo_specs()
    assert [s.name for s in specs] == [s.name for s in zoo_specs()]  # same zoo on every machine
    for dataset in ("mnist", "cifar10", "gtsrb"):
        mine = [s for s in specs if s.dataset == dataset]
        assert sum(s.kind == "clean" for s in mine) == sum(s.kind != "clean" for s in mine) > 0
    assert all(0.05 <= s.rate <= 0.15 for s in specs if s.kind != "clean")
    assert all(2 <= s.trigger["size"] <= 6 for s in specs if s.kind == "patch")


@pytest.mark.parametrize("name, backdoored", [("mnist-smallcnn-patch-03", True), ("mnist-smallcnn-clean-08", False)])
def test_ci_slice_default_scan_gets_the_verdict_right(tmp_path, name, backdoored):
    from evaluation.evaluate import scan_model
    from evaluation.evaluate_report import under_rule
    from evaluation.zoo import MNIST, build_model, zoo_specs

    require_shared(MNIST)
    spec = next(s for s in zoo_specs(["mnist"]) if s.name == name)
    manifest = build_model(spec, tmp_path, "cpu")
    assert manifest["clean_accuracy"] > 0.95
    assert (manifest["attack_success_rate"] or 0) > 0.9 if backdoored else manifest["attack_success_rate"] is None
    assert "model.pt" in (tmp_path / name / "config.toml").read_text()
    record = scan_model(tmp_path / name, "default", 0, "cpu")
    if backdoored:
        assert record["flagged"] == [spec.target] and record["target_rank"] == 1
        assert record["target_index"] > record["threshold"]
    else:
        assert record["verdict"] == "clean" and record["flagged"] == []
    # The report's rule recomputation (used for the outlier-rule table) agrees with the engine.
    again = under_rule(record, record["statistic"], record["threshold"], record["spread_floor"])
    assert again["flagged"] == record["flagged"]
    assert again["index"] == pytest.approx(record["index"])
