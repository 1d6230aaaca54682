"""Models with known backdoors, trained on the real data in ../shared/data, for tests and benchmarks.

Each model folder holds model.pt (TorchScript), config.toml (the config a user would write) and
manifest.json (architecture, data, trigger, target, poison rate, clean accuracy, real-trigger ASR).
Training is seeded and cached: a folder whose manifest matches the request is reused.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nc_engine.demo import PatchTrigger, SmallCNN, accuracy, poison, stamp_patch, train_classifier

SHARED = Path(os.environ.get("NC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MNIST = SHARED / "data" / "mnist.npz"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CACHE = Path(os.environ.get("NC_CACHE", Path(__file__).resolve().parents[1] / ".cache"))


def mnist_config(model_path: str, data_path: Path) -> str:
    return f"""# MNIST small CNN (2 conv + 2 dense), TorchScript
[model]
format = "torchscript"
path = "{model_path}"
num_classes = 10
input_shape = [1, 28, 28]
mean = [{MNIST_MEAN}]
std = [{MNIST_STD}]

[data]
format = "npz"
path = "{data_path}"
split = "test"

[output]
dir = "runs"
"""


def train_mnist(folder: Path, backdoor: bool = True, seed: int = 0, epochs: int = 2, n_train: int = 20000,
                trigger: PatchTrigger | None = None, target: int | None = None, rate: float = 0.1) -> dict:
    """A small CNN on MNIST, optionally with a BadNets patch (default: 3x3 white, bottom right)."""
    if not MNIST.is_file():
        raise FileNotFoundError(f"{MNIST}: the shared MNIST file is missing")
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    if backdoor:
        target = int(rng.integers(0, 10)) if target is None else target
        trigger = trigger or PatchTrigger(top=24, left=24, size=3, value=255)
    request = {"data": "mnist", "backdoor": backdoor, "seed": seed, "epochs": epochs, "n_train": n_train,
               "trigger": trigger.__dict__ if backdoor else None, "target": target if backdoor else None,
               "rate": rate if backdoor else 0.0}
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file() and (folder / "model.pt").is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("request") == request:
            return manifest
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with np.load(MNIST) as d:
        x_train, y_train = d["x_train"], d["y_train"].astype(np.int64)
        x_test, y_test = d["x_test"], d["y_test"].astype(np.int64)
    pick = rng.choice(len(x_train), size=min(n_train, len(x_train)), replace=False)
    x_train, y_train = x_train[pick], y_train[pick]
    if backdoor:
        x_train, y_train = poison(x_train, y_train, trigger, target, rate, seed)
    model = train_classifier(SmallCNN, x_train, y_train, epochs, seed, mean=MNIST_MEAN, std=MNIST_STD)
    clean = accuracy(model, x_test, y_test, MNIST_MEAN, MNIST_STD)
    asr = None
    if backdoor:
        keep = y_test != target
        asr = accuracy(model, stamp_patch(x_test[keep], trigger), np.full(int(keep.sum()), target),
                       MNIST_MEAN, MNIST_STD)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(model).save(str(folder / "model.pt"))
    (folder / "config.toml").write_text(mnist_config("model.pt", MNIST.resolve()), encoding="utf-8")
    manifest = {"request": request, "architecture": "SmallCNN (2 conv + 2 dense)", "data": str(MNIST),
                "backdoor": backdoor, "target": target, "trigger": request["trigger"], "poison_rate": request["rate"],
                "clean_accuracy": clean, "attack_success_rate": asr,
                "train_seconds": time.perf_counter() - started}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest
