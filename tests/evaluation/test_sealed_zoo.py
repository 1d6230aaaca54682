"""Building the sealed draw: the poisoning plan and the checksum guard, on synthetic labels and copies of
the specs (nothing of the draw itself is built here)."""

from __future__ import annotations

import numpy as np
import pytest

import evaluation.sealed_zoo as sealed
from evaluation.zoo_sealed_draw import CHECKSUM_FILE, SPECS_FILE


def spec(kind: str, trigger: dict, rate: float = 0.1, second: dict | None = None) -> dict:
    return {
        "name": f"mnist-smallcnn-{kind}-50",
        "dataset": "mnist",
        "arch": "smallcnn",
        "kind": kind,
        "seed": 1,
        "target": 3,
        "rate": rate,
        "trigger": trigger,
        **({"second": second} if second else {}),
    }


def test_the_plan_poisons_the_rate_away_from_the_target_and_adds_cross_samples_for_warps():
    y = np.random.default_rng(0).integers(0, 10, 1000)
    warp = {"kind": "wanet", "grid": 4, "strength": 0.5, "cross_ratio": 2.0, "seed": 2}
    plan = sealed.poison_plan(spec("wanet", warp), y, np.random.default_rng(1))
    (backdoor, _, target), (cross, _, kept) = plan
    assert len(backdoor) == 100 and target == 3 and (y[backdoor] != 3).all()
    assert len(cross) == 200 and kept is None and not set(backdoor) & set(cross)


def test_two_targets_get_disjoint_images():
    patch = {"kind": "patch", "shape": "patch", "size": 3, "top": 1, "left": 1, "colour": "white", "seed": 0}
    two = spec("twotarget", patch, second={"trigger": {**patch, "top": 20}, "target": 7})
    y = np.random.default_rng(0).integers(0, 10, 500)
    (a, _, ta), (b, _, tb) = sealed.poison_plan(two, y, np.random.default_rng(1))
    assert (ta, tb) == (3, 7) and not set(a) & set(b) and (y[b] != 7).all()


def test_poisoned_copies_relabel_backdoors_and_keep_cross_labels():
    x = np.random.default_rng(0).integers(0, 256, (400, 28, 28), dtype=np.uint8)
    y = np.random.default_rng(1).integers(0, 10, 400)
    warp = {"kind": "wanet", "grid": 4, "strength": 0.5, "cross_ratio": 1.0, "seed": 2}
    px, py = sealed.poisoned(spec("wanet", warp), x, y, np.random.default_rng(5))
    changed = (px != x).any(axis=(1, 2))
    assert (py != y).sum() == 40 and changed.sum() == 80 and (py[changed & (py == y)] == y[changed & (py == y)]).all()


def test_a_changed_draw_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / SPECS_FILE.name
    copy.write_text(SPECS_FILE.read_text(encoding="utf-8").replace('"rate": 0.075', '"rate": 0.5', 1))
    monkeypatch.setattr(sealed, "SPECS_FILE", copy)
    monkeypatch.setattr(sealed, "CHECKSUM_FILE", CHECKSUM_FILE)
    with pytest.raises(SystemExit, match="the sealed draw was changed"):
        sealed.sealed_specs()
    monkeypatch.setattr(sealed, "SPECS_FILE", SPECS_FILE)
    assert len(sealed.sealed_specs()) == 168


def test_augmented_families_are_refused_until_their_training_takes_these_attacks(tmp_path):
    with pytest.raises(SystemExit, match="augmented training"):
        sealed.build({**spec("sig", {"kind": "sig", "delta": 20, "frequency": 6}), "arch": "resnet9"}, tmp_path)
