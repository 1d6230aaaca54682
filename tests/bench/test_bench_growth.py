"""The cost-growth benchmark's models: distinct synthetic classes, a working backdoor, and a verdict that
screening keeps."""

import numpy as np

from bench.bench_growth import SPOTS, TARGET, build, glyphs, scan


def test_every_class_owns_its_own_pixels_and_appears_as_often():
    x, y = glyphs(50, 500, seed=0)
    assert x.shape == (500, 12, 12) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [10] * 50
    bright = [frozenset(np.flatnonzero(x[i].ravel() >= 178)) for i in np.flatnonzero(y == 3)]
    shared = frozenset.intersection(*bright)  # the class's pixels are bright in all its images
    assert len(shared) == SPOTS


def test_a_small_model_is_backdoored_and_both_scans_flag_its_target(tmp_path):
    info = build(20, tmp_path)
    assert info["clean_accuracy"] > 0.95 and info["attack_success_rate"] > 0.95
    assert build(20, tmp_path) == info  # cached
    plain, _ = scan(20, tmp_path, str(tmp_path / "runs"), "cpu", "off")
    screened, _ = scan(20, tmp_path, str(tmp_path / "runs"), "cpu", "on")
    assert plain.flagged == screened.flagged == [TARGET]
    assert screened.info.images < plain.info.images  # from 16 labels, screening is meant to pay
