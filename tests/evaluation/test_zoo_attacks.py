"""The sealed draw's attacks as image transforms: every spec in the draw can be stamped, each attack does
what its paper describes (on synthetic images: nothing here builds or trains a sealed model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.zoo_attacks import cross_stamp, input_aware_triggers, stamp
from evaluation.zoo_sealed_draw import SPECS_FILE

SIDES = {"mnist": (28, 1), "cifar10": (32, 3), "gtsrb": (32, 3)}


def images(n: int, side: int, channels: int, seed: int = 0) -> np.ndarray:
    shape = (n, side, side) if channels == 1 else (n, side, side, channels)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def natural(source: str, index: int) -> np.ndarray:
    return images(1, 32, 3, seed=index)[0]  # stands in for a CIFAR-10 training image


def sealed_triggers():
    doc = json.loads(SPECS_FILE.read_text(encoding="utf-8"))
    for m in doc["models"]:
        for trigger in [m["trigger"], (m.get("second") or {}).get("trigger")]:
            if trigger:
                yield m["dataset"], trigger


def test_every_trigger_of_the_sealed_draw_stamps_deterministically():
    seen = set()
    for dataset, trigger in sealed_triggers():
        side, channels = SIDES[dataset]
        x = images(4, side, channels)
        out = stamp(trigger, x, natural)
        assert out.shape == x.shape and out.dtype == np.uint8
        assert np.array_equal(out, stamp(trigger, x, natural)), trigger
        assert not np.array_equal(out, x), trigger
        seen.add(trigger["kind"])
    assert seen == {"patch", "blendimage", "sig", "wanet", "inputaware", "filter", "watermark", "noise"}


def test_sig_adds_a_horizontal_sinusoid_of_its_amplitude():
    out = stamp({"kind": "sig", "delta": 30, "frequency": 6}, np.full((2, 32, 32, 3), 100, np.uint8))
    assert np.array_equal(out[0, 0], out[0, 17]) and np.array_equal(out[0], out[1])  # the same on every row
    assert out.max() == 130 and out.min() == 70


def test_the_warp_is_smooth_and_keeps_a_flat_image_flat():
    trigger = {"kind": "wanet", "grid": 4, "strength": 0.5, "cross_ratio": 2.0, "seed": 7}
    flat = np.full((1, 32, 32), 90, np.uint8)
    assert np.array_equal(stamp(trigger, flat), flat)
    ramp = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))[None]
    moved = stamp(trigger, ramp).astype(int) - ramp
    # a ramp of 8 levels per pixel: offsets of mean 0.5 px (`strength`), none as large as 2 px
    assert 0 < np.abs(moved).mean() <= 0.5 * 8 and np.abs(moved).max() < 2 * 8
    noisy = cross_stamp(trigger, np.repeat(ramp, 3, 0), seed=1)
    assert not np.array_equal(noisy[0], stamp(trigger, ramp)[0])  # noise mode: another warp


def test_input_aware_triggers_differ_per_image_and_cover_their_density():
    trigger = {"kind": "inputaware", "mask_density": 0.05, "cross_ratio": 1.0, "seed": 3}
    x = images(3, 32, 3)
    mask, pattern = input_aware_triggers(trigger, x)
    assert mask.shape == (3, 32, 32) and np.allclose(mask.mean(axis=(1, 2)), 0.05, atol=0.01)
    assert not np.array_equal(mask[0], mask[1]) and not np.array_equal(pattern[0], pattern[1])
    assert not np.array_equal(cross_stamp(trigger, x, seed=0), stamp(trigger, x))


def test_the_input_aware_cross_mode_never_gives_an_image_its_own_trigger():
    trigger = {"kind": "inputaware", "mask_density": 0.05, "cross_ratio": 1.0, "seed": 3}
    for seed in range(20):
        x = images(6, 16, 3, seed=seed)
        crossed = cross_stamp(trigger, x, seed=seed)
        own = stamp(trigger, x)
        assert not any(np.array_equal(crossed[i], own[i]) for i in range(6)), seed
    one = images(1, 16, 3)
    assert np.array_equal(cross_stamp(trigger, one, seed=0), one)  # nobody else's trigger to take


def test_filter_watermark_and_blend_do_what_they_say():
    x = images(2, 32, 3)
    identity = {"kind": "filter", "matrix": np.eye(3).tolist(), "bias": [0.0, 0.0, 0.0]}
    assert np.array_equal(stamp(identity, x), x)
    mark = {"kind": "watermark", "alpha": 0.3, "density": 0.3, "seed": 5}
    changed = (stamp(mark, x) != x).any(axis=(0, 3)).mean()
    assert 0.2 < changed <= 0.31 and (stamp(mark, x).astype(int) - x).max() <= 0.3 * 255 + 1
    with pytest.raises(ValueError, match="needs the source image"):
        stamp({"kind": "blendimage", "source": "cifar10:train", "index": 1, "alpha": 0.1}, x)
    blended = stamp({"kind": "blendimage", "source": "cifar10:train", "index": 1, "alpha": 0.2}, x, natural)
    assert np.abs(blended.astype(int) - x).max() <= 0.2 * 255 + 1
