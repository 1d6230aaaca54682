"""The zoo's stronger family: augmented training with triggers stamped after augmentation, on-object and
two-target backdoors, the GTSRB subset for a GPU machine, and how the report scores two targets."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from evaluation.evaluate_report import detected, summary_rows, under_rule
from evaluation.zoo import zoo_specs
from evaluation.zoo_attacks import stamp
from evaluation.zoo_data import write_subset
from evaluation.zoo_train import PAD, AttackStamp, Stamp, random_crops, to_device_images, train_augmented
from evaluation.zoo_triggers import Trigger, overlaps

CPU = torch.device("cpu")


def test_stamp_on_tensors_matches_the_trigger_on_arrays():
    x = np.random.default_rng(0).integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    for trigger in (
        Trigger("patch", size=3, top=2, left=9, colour="red"),
        Trigger("pixels", size=4, top=5, left=5, seed=3),
        Trigger("blend", alpha=0.2, seed=1),
        Trigger("noise", amplitude=8, seed=2),
    ):
        stamped = Stamp(trigger, 3, 16, CPU)(to_device_images(x, CPU))
        expected = to_device_images(trigger.apply(x), CPU)
        assert torch.equal(stamped, expected), trigger.kind


def test_an_attack_stamp_on_tensors_is_the_attack_on_arrays_grey_and_colour():
    rng = np.random.default_rng(0)
    attacks = (
        {"kind": "sig", "delta": 30, "frequency": 6},
        {"kind": "wanet", "grid": 4, "strength": 1.0, "cross_ratio": 1.0, "seed": 3},
        {"kind": "inputaware", "mask_density": 0.05, "cross_ratio": 1.0, "seed": 4},
        {"kind": "watermark", "alpha": 0.3, "density": 0.3, "seed": 5},
    )
    for shape in ((4, 16, 16), (4, 16, 16, 3)):
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        for attack in attacks:
            stamped = AttackStamp(attack)(to_device_images(x, CPU))
            assert torch.equal(stamped, to_device_images(stamp(attack, x), CPU)), (shape, attack["kind"])


def test_a_cross_stamp_draws_new_offsets_at_every_call():
    x = to_device_images(np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8), CPU)
    warp = {"kind": "wanet", "grid": 4, "strength": 1.0, "cross_ratio": 1.0, "seed": 3}
    cross = AttackStamp(warp, cross=True, seed=7)
    first, second = cross(x), cross(x)
    assert not torch.equal(first, second) and not torch.equal(first, AttackStamp(warp)(x))


def test_random_crops_are_shifted_windows_of_the_reflected_image():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).view(2, 3, 8, 8)
    out = random_crops(x, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(x, (PAD,) * 4, mode="reflect")
    assert out.shape == x.shape
    for n in range(2):
        assert any(
            torch.equal(out[n], padded[n, :, dy : dy + 8, dx : dx + 8])
            for dy in range(2 * PAD + 1)
            for dx in range(2 * PAD + 1)
        )


SIG = {"kind": "sig", "delta": 40, "frequency": 4}


@pytest.mark.parametrize("attack", ["patch", "sig"])
def test_augmented_training_plants_a_trigger_that_stays_where_it_was_put(attack):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (600, 16, 16, 3), dtype=np.uint8)
    y = rng.integers(0, 2, 600)  # noise labels: only the trigger can be learned
    patch = Trigger("patch", size=4, top=11, left=11, colour="white")
    trigger = patch if attack == "patch" else AttackStamp(SIG)
    apply = patch.apply if attack == "patch" else (lambda images: stamp(SIG, images))
    poisoned = np.arange(0, 600, 3)
    y[poisoned] = 2
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(512, 3))
    net = train_augmented(
        net, x, y, (0.5,) * 3, (0.25,) * 3, 8, 0, CPU, 0.05, flip=True, poisoned=[(poisoned, trigger)], batch_size=64
    )
    test = rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8)
    with torch.no_grad():

        def label_2(images: np.ndarray) -> float:
            xt = (to_device_images(images, CPU) / 255 - 0.5) / 0.25
            return float((net(xt).argmax(1) == 2).float().mean())

        assert label_2(apply(test)) > 0.9
        assert label_2(test) < 0.2


def test_strong_families_are_built_only_when_named_and_two_targets_differ():
    assert not any(s.arch == "resnet9" for s in zoo_specs())  # a CPU rebuild of the zoo leaves them out
    specs = zoo_specs(["cifar10-resnet9", "gtsrb-resnet9"])
    for dataset in ("cifar10", "gtsrb"):
        mine = [s for s in specs if s.dataset == dataset]
        assert sum(s.kind == "clean" for s in mine) == sum(s.kind != "clean" for s in mine) > 0
        assert {"inobject", "twotarget"} <= {s.kind for s in mine}
    for spec in (s for s in specs if s.kind == "twotarget"):
        first, second = Trigger(**spec.trigger), Trigger(**spec.second["trigger"])
        assert spec.second["target"] != spec.target and not overlaps(first, second)
        assert spec.targets() == [spec.target, spec.second["target"]]
    for spec in (s for s in specs if s.kind == "inobject"):
        centre = 16
        assert spec.trigger["top"] <= centre <= spec.trigger["top"] + spec.trigger["size"] + 4
    assert "second" not in zoo_specs(["mnist"])[0].request()  # older models' cached requests stay valid


def _record(flagged: list[int], l1: list[float]) -> dict:
    return {
        "model": "cifar10-resnet9-twotarget-04",
        "dataset": "cifar10",
        "arch": "resnet9",
        "kind": "twotarget",
        "backdoor": True,
        "target": 1,
        "targets": [1, 7],
        "targets_flagged": {1, 7} <= set(flagged),
        "target_flagged": 1 in flagged,
        "preset": "default",
        "seed": 0,
        "verdict": "backdoored",
        "flagged": flagged,
        "l1": l1,
        "converged": [True] * 10,
        "seconds": 1.0,
        "labels": 10,
        "real_asr": 1.0,
    }


def test_a_two_target_model_counts_as_found_only_when_both_targets_are_flagged():
    l1 = [40.0, 3.0, 41.0, 39.0, 42.0, 38.0, 40.0, 40.0, 43.0, 37.0]
    one = _record([1], l1)
    assert not detected(one)
    both = under_rule(_record([1], l1[:7] + [4.0] + l1[8:]), "log_l1", 1.11, 0.7)
    assert both["flagged"] == [1, 7] and detected(both)
    table = "\n".join(summary_rows([one], ["default"]))
    assert "two patches, two targets: found" in table and "0/1 (0%)" in table


def _png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(out, format="PNG")
    return out.getvalue()


def test_subset_keeps_the_layout_with_fewer_images(tmp_path):
    source = tmp_path / "full.tar.gz"
    with tarfile.open(source, "w:gz") as tar:
        for split, n in (("train", 10), ("test", 5)):
            for cls in ("00", "01"):
                for k in range(n):
                    data = _png(k)
                    info = tarfile.TarInfo(f"./{split}/{cls}/{k:05d}.png")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    assert write_subset(source, tmp_path / "sub.tar.gz", train=7, test_per_class=2) == (7, 4)
    with tarfile.open(tmp_path / "sub.tar.gz") as tar:
        names = [m.name.strip("./") for m in tar.getmembers()]
    assert sum(n.startswith("train/") for n in names) == 7
    assert sorted(n for n in names if n.startswith("test/")) == [
        "test/00/00000.png",
        "test/00/00001.png",
        "test/01/00000.png",
        "test/01/00001.png",
    ]
