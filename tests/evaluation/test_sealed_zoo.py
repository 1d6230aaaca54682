"""Building the sealed draw: the poisoning plan and the checksum guard, on synthetic labels and copies of
the specs (nothing of the draw itself is built here)."""

from __future__ import annotations

import json

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


def test_augmented_training_gets_relabelled_backdoors_and_cross_stamps_that_keep_labels():
    y = np.random.default_rng(0).integers(0, 10, 1000)
    warp = {"kind": "wanet", "grid": 4, "strength": 0.5, "cross_ratio": 1.0, "seed": 2}
    labels, stamps = sealed.augmented_plan({**spec("wanet", warp), "arch": "resnet9"}, y, np.random.default_rng(1))
    (backdoor, plain), (cross, noisy) = stamps
    assert (labels[backdoor] == 3).all() and (labels[cross] == y[cross]).all()
    assert (labels != y).sum() == len(backdoor) == 100 and not plain.cross and noisy.cross


def test_the_manifest_records_the_training_and_a_model_trained_otherwise_is_not_reused(tmp_path, monkeypatch):
    patch = {"kind": "patch", "shape": "patch", "size": 3, "top": 1, "left": 1, "colour": "white", "seed": 0}
    one = spec("patch", patch)
    folder = tmp_path / one["name"]
    folder.mkdir()
    (folder / "model.pt").write_bytes(b"")
    stale = {"spec": one, "training": {**sealed.training_of(one), "epochs": 1}, "name": one["name"]}
    (folder / "manifest.json").write_text(json.dumps(stale))
    trained = []

    class TrainingStarted(Exception):
        pass

    def load_arrays(name: str) -> None:
        trained.append(name)
        raise TrainingStarted

    monkeypatch.setattr(sealed, "load_arrays", load_arrays)
    with pytest.raises(TrainingStarted):
        sealed.build(one, tmp_path)
    assert trained == ["mnist"]  # the stale model was not reused: training started
    (folder / "manifest.json").write_text(json.dumps({**stale, "training": sealed.training_of(one)}))
    assert sealed.build(one, tmp_path)["name"] == one["name"] and trained == ["mnist"]


def test_the_draws_training_covers_their_families_and_the_cpu_families_train_on_every_image():
    families = {(one["dataset"], one["arch"]) for one in sealed.sealed_specs() + sealed.dev_specs()}
    assert families == set(sealed.DRAW_TRAINING)
    full = {"mnist": 60000, "cifar10": 50000, "gtsrb": 39209}  # the shared sets' training splits
    for (dataset, arch), (images, _, _) in sealed.DRAW_TRAINING.items():
        if arch not in sealed.AUGMENTED:
            assert images == full[dataset], (dataset, arch)
