"""The product tests' BadNets MNIST model: nc_engine.demo.mnist's, on the shared MNIST file (the same one
the zoo and the mitigation benchmark train)."""

from __future__ import annotations

import os
from pathlib import Path

from nc_engine.demo import mnist

SHARED = Path(os.environ.get("NC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MNIST = SHARED / "data" / "mnist.npz"
real_trigger_asr, filtered_real_asr = mnist.real_trigger_asr, mnist.filtered_real_asr


def train_mnist(folder: Path, **options) -> dict:
    return mnist.train_mnist(folder, MNIST, **options)


def scanned_mnist(folder: Path) -> tuple[dict, Path]:
    return mnist.scanned_mnist(folder, MNIST)


def held_out_images(run: Path):
    return mnist.held_out_images(run, MNIST)
