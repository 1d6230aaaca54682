"""The sealed third draw: the zoo's held-out evaluation, fixed before any detector beyond Neural Cleanse
was designed (issue 23), and built and scanned once, when every choice is committed.

    python -m evaluation.zoo_sealed_draw [--check]   # (re)write the draw's specs, or check them and their checksum

The specs are explicit (trigger parameters, targets, poisoning rates, training and scan seeds), drawn here
from a fixed salt, so that code written later to build a family cannot move what the family holds. The
whole draw is a test set: it is not split into halves, nothing is tuned on it, and its records are never
replaced by a re-scan. The checksum file holds the SHA-256 of the specs file's bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

SALT = "nc-tui sealed draw 3"
SPECS_FILE = Path(__file__).parent / "zoo_sealed_draw.json"
CHECKSUM_FILE = Path(__file__).parent / "zoo_sealed_draw.sha256"
FIRST_NUMBER = 50  # the draw's models are numbered from here in every family, after the first two draws
SCAN_SEEDS = (31, 32, 33)  # each model is scanned with each of these seeds (the stability measure)

# (dataset, architecture) -> (channels, side, classes); CPU-sized families, and the augmented ResNet-9
# families that are built on a GPU.
FAMILIES = {
    ("mnist", "smallcnn"): (1, 28, 10),
    ("cifar10", "compact"): (3, 32, 10),
    ("cifar10", "resnet8"): (3, 32, 10),
    ("gtsrb", "compact"): (3, 32, 43),
    ("cifar10", "resnet9"): (3, 32, 10),
    ("gtsrb", "resnet9"): (3, 32, 43),
}
# attack kind -> backdoored models per family (each with a clean twin)
ROSTER = {
    "patch": 2,
    "largepatch": 1,
    "inobject": 1,
    "lowpoison": 1,
    "twotarget": 1,
    "blendimage": 2,
    "sig": 1,
    "wanet": 1,
    "inputaware": 1,
    "filter": 1,
    "watermark": 1,
    "noise": 1,
}
COLOURS = ("white", "black", "red", "green", "yellow", "magenta")


# The development draw: the same families and roster drawn from another salt and numbered after the
# sealed draw, for designing and tuning detectors of the new attack families. It is not held out: its
# numbers are in sample and are reported as such.
DEV_SALT = "nc-tui development draw 3"
DEV_FIRST_NUMBER = 70
DEV_SPECS_FILE = Path(__file__).parent / "zoo_dev_draw.json"


def _rng(salt: str) -> np.random.Generator:
    return np.random.default_rng(int.from_bytes(hashlib.sha256(salt.encode()).digest()[:8], "big"))


def _patch(rng: np.random.Generator, side_px: int, lo: int, hi: int, grey: bool) -> dict:
    side = int(rng.integers(lo, hi + 1))
    top, left = (int(v) for v in rng.integers(1, side_px - side, 2))
    return {
        "shape": str(rng.choice(["patch", "pixels", "noisepatch"])),
        "size": side,
        "top": top,
        "left": left,
        "colour": "white" if grey else str(rng.choice(COLOURS)),
        "seed": int(rng.integers(0, 2**31)),
    }


def _centre_patch(rng: np.random.Generator, side_px: int, grey: bool) -> dict:
    side = int(rng.integers(3, 6))
    top, left = (int(side_px // 2 - side // 2 + v) for v in rng.integers(-4, 5, 2))
    return {
        "shape": str(rng.choice(["patch", "pixels", "noisepatch"])),
        "size": side,
        "top": top,
        "left": left,
        "colour": "white" if grey else str(rng.choice(COLOURS)),
        "seed": int(rng.integers(0, 2**31)),
    }


def _trigger(kind: str, k: int, rng: np.random.Generator, channels: int, side: int) -> dict:
    grey = channels == 1
    if kind in ("patch", "lowpoison", "twotarget"):
        return {"kind": "patch", **_patch(rng, side, 2, 6, grey)}
    if kind == "largepatch":
        return {"kind": "patch", **_patch(rng, side, 8, 10, grey)}
    if kind == "inobject":
        return {"kind": "patch", **_centre_patch(rng, side, grey)}
    if kind == "blendimage":  # a natural image (CIFAR-10 train split, grey for MNIST) blended over the input
        return {
            "kind": "blendimage",
            "source": "cifar10:train",
            "index": int(rng.integers(0, 50000)),
            "alpha": [0.1, 0.2][k % 2],
        }
    if kind == "sig":  # horizontal sinusoid, Barni et al.
        return {"kind": "sig", "delta": int(rng.integers(20, 41)), "frequency": 6}
    if kind == "wanet":  # smooth warp, Nguyen and Tran; noise mode: random warps keep their true label
        return {"kind": "wanet", "grid": 4, "strength": 0.5, "cross_ratio": 2.0, "seed": int(rng.integers(0, 2**31))}
    if kind == "inputaware":  # a per-image pattern from a generator network, Nguyen and Tran 2020
        return {"kind": "inputaware", "mask_density": 0.05, "cross_ratio": 1.0, "seed": int(rng.integers(0, 2**31))}
    if kind == "filter":  # a colour filter: x' = clip(M x + b) per pixel
        matrix = np.eye(channels) + rng.uniform(-0.25, 0.25, (channels, channels))
        return {
            "kind": "filter",
            "matrix": np.round(matrix, 3).tolist(),
            "bias": np.round(rng.uniform(-20, 20, channels), 1).tolist(),
        }
    if kind == "watermark":  # TrojanNN-style: a binary glyph over most of the image at low opacity
        return {
            "kind": "watermark",
            "alpha": float(np.round(rng.uniform(0.25, 0.35), 3)),
            "density": 0.3,
            "seed": int(rng.integers(0, 2**31)),
        }
    if kind == "noise":
        return {"kind": "noise", "amplitude": 8, "seed": int(rng.integers(0, 2**31))}
    raise ValueError(kind)


def _overlap(a: dict, b: dict) -> bool:
    return not (
        a["top"] + a["size"] <= b["top"]
        or b["top"] + b["size"] <= a["top"]
        or a["left"] + a["size"] <= b["left"]
        or b["left"] + b["size"] <= a["left"]
    )


def draw(salt: str = SALT, first: int = FIRST_NUMBER) -> list[dict]:
    """Every model of a draw (the sealed one by default), backdoored and clean, in a fixed order."""
    rng = _rng(salt)
    models = []
    for (dataset, arch), (channels, side, classes) in FAMILIES.items():
        n = first
        backdoored = [(kind, k) for kind, count in ROSTER.items() for k in range(count)]
        for kind, k in backdoored:
            trigger = _trigger(kind, k, rng, channels, side)
            target = int(rng.integers(0, classes))
            low = kind == "lowpoison"
            rate = float(np.round(rng.uniform(0.01, 0.02) if low else rng.uniform(0.05, 0.15), 3))
            spec = {
                "name": f"{dataset}-{arch}-{kind}-{n:02d}",
                "dataset": dataset,
                "arch": arch,
                "kind": kind,
                "seed": 300 + n,
                "target": target,
                "rate": rate,
                "trigger": trigger,
            }
            if kind == "twotarget":
                second = {"kind": "patch", **_patch(rng, side, 2, 6, channels == 1)}
                while _overlap(trigger, second):
                    second = {"kind": "patch", **_patch(rng, side, 2, 6, channels == 1)}
                other = int(rng.integers(0, classes - 1))
                spec["second"] = {"trigger": second, "target": other + (other >= target)}
            models.append(spec)
            n += 1
        for m in range(first, n):
            models.append(
                {
                    "name": f"{dataset}-{arch}-clean-{m:02d}",
                    "dataset": dataset,
                    "arch": arch,
                    "kind": "clean",
                    "seed": 400 + m,
                    "target": None,
                    "rate": 0.0,
                    "trigger": None,
                }
            )
    return models


def document() -> str:
    # "how" names this file where it was when the draw was sealed (benchmarks/): the sealed bytes keep it
    doc = {
        "salt": SALT,
        "how": "benchmarks/zoo_sealed_draw.py: draw()",
        "scan_seeds": list(SCAN_SEEDS),
        "models": draw(),
    }
    return json.dumps(doc, indent=1) + "\n"


def dev_document() -> str:
    """The development draw's specs file (no checksum: nothing about it is sealed)."""
    doc = {"salt": DEV_SALT, "how": "evaluation/zoo_sealed_draw.py: draw(DEV_SALT, DEV_FIRST_NUMBER)"}
    return json.dumps({**doc, "models": draw(DEV_SALT, DEV_FIRST_NUMBER)}, indent=1) + "\n"


def checksum(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write or check the sealed third draw's specs.")
    parser.add_argument("--check", action="store_true", help="fail if the committed specs or checksum differ")
    parser.add_argument("--dev", action="store_true", help="write the development draw's specs instead")
    args = parser.parse_args(argv)
    if args.dev:
        DEV_SPECS_FILE.write_text(dev_document(), encoding="utf-8")
        print(f"development draw: {DEV_SPECS_FILE}")
        return 0
    text = document()
    if args.check:
        stored = SPECS_FILE.read_text(encoding="utf-8")
        ok = stored == text and CHECKSUM_FILE.read_text(encoding="utf-8").split()[0] == checksum(stored)
        print("sealed draw: specs and checksum match" if ok else "sealed draw: specs or checksum differ")
        return 0 if ok else 1
    SPECS_FILE.write_text(text, encoding="utf-8")
    CHECKSUM_FILE.write_text(f"{checksum(text)}  {SPECS_FILE.name}\n", encoding="utf-8")
    print(f"{len(draw())} models; sha256 {checksum(text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
