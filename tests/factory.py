"""Models the product tests train, built from the engine alone (never from the lab in evaluation/ or bench/).

`train_mnist` is the zoo's BadNets MNIST SmallCNN (evaluation/zoo.py, train_mnist): the same data, seeds,
trigger, training and config file, so a model trained here has the same weights
(tests/evaluation/test_factory.py checks that). The other helpers measure a mitigation against the real
trigger, as bench/bench_mitigate.py does.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nc_engine import load_config, run_scan
from nc_engine.demo.training import PatchTrigger, SmallCNN, accuracy, poison, stamp_patch, train_classifier
from nc_engine.detectors.neural_cleanse.asr import predict
from nc_engine.mitigate import load_detector
from nc_engine.models.load import load_model

SHARED = Path(os.environ.get("NC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
MNIST = SHARED / "data" / "mnist.npz"
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
TITLE = "MNIST small CNN (2 conv + 2 dense)"


def mnist_config_text() -> str:
    """The scan config a user would write for the model (data: the shared MNIST file's test split)."""
    return f"""# {TITLE}, TorchScript
[model]
format = "torchscript"
path = "model.pt"
num_classes = 10
input_shape = [1, 28, 28]
mean = [{MNIST_MEAN}]
std = [{MNIST_STD}]

[data]
format = "npz"
path = "{MNIST.resolve()}"
split = "test"

[output]
dir = "runs"
"""


def train_mnist(
    folder: Path,
    backdoor: bool = True,
    seed: int = 0,
    epochs: int = 2,
    n_train: int = 20000,
    trigger: PatchTrigger | None = None,
    target: int | None = None,
    rate: float = 0.1,
) -> dict:
    """A small CNN on MNIST, optionally with a BadNets patch (default: 3x3 white, bottom right), saved as
    TorchScript with its config.toml and manifest.json in `folder` (reused when the manifest matches)."""
    if not MNIST.is_file():
        raise FileNotFoundError(f"{MNIST}: the shared MNIST file is missing")
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    if backdoor:
        target = int(rng.integers(0, 10)) if target is None else target
        trigger = trigger or PatchTrigger(top=24, left=24, size=3, value=255)
    request = {
        "data": "mnist",
        "backdoor": backdoor,
        "seed": seed,
        "epochs": epochs,
        "n_train": n_train,
        "trigger": trigger.__dict__ if backdoor else None,
        "target": target if backdoor else None,
        "rate": rate if backdoor else 0.0,
    }
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
    torch.manual_seed(seed)  # the network's initial weights
    model = train_classifier(SmallCNN(), x_train, y_train, (MNIST_MEAN,), (MNIST_STD,), epochs, seed)
    clean = accuracy(model, x_test, y_test, (MNIST_MEAN,), (MNIST_STD,))
    asr = None
    if backdoor:
        keep = y_test != target
        asr = accuracy(
            model, stamp_patch(x_test[keep], trigger), np.full(int(keep.sum()), target), (MNIST_MEAN,), (MNIST_STD,)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(model).save(str(folder / "model.pt"))
    (folder / "config.toml").write_text(mnist_config_text(), encoding="utf-8")
    manifest = {
        "request": request,
        "architecture": "SmallCNN (2 conv + 2 dense)",
        "data": str(MNIST),
        "backdoor": backdoor,
        "target": target,
        "trigger": request["trigger"],
        "poison_rate": request["rate"],
        "clean_accuracy": clean,
        "attack_success_rate": asr,
        "train_seconds": time.perf_counter() - started,
    }
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def scanned_mnist(folder: Path) -> tuple[dict, Path]:
    """The BadNets MNIST model and a finished default scan of it (reused when present)."""
    manifest = train_mnist(folder / "model", backdoor=True, seed=0)
    runs = sorted((folder / "runs").glob("model-*")) if (folder / "runs").is_dir() else []
    for run in runs:
        if (run / "report.json").is_file() and json.loads((run / "report.json").read_text()).get("complete"):
            return manifest, run
    cfg = load_config(folder / "model" / "config.toml")
    cfg.output.dir = str(folder / "runs")
    return manifest, Path(run_scan(cfg).run_dir)


def held_out_images(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The scan's held-out MNIST test images (uint8) and labels."""
    with np.load(run / "samples.npz") as s, np.load(MNIST) as d:
        idx = s["asr_idx"]
        return d["x_test"][idx], d["y_test"][idx].astype(np.int64)


def _tensor(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x).float().unsqueeze(1) / 255.0


def real_trigger_asr(config: str | Path, x: np.ndarray, y: np.ndarray, trigger: dict, target: int) -> float:
    """Share of held-out images not of `target` that the real patch sends to `target`."""
    model = load_model(load_config(config), torch.device("cpu"))
    keep = y != target
    stamped = _tensor(stamp_patch(x[keep], PatchTrigger(**trigger)))
    return float((predict(model, stamped) == target).float().mean())


def filtered_real_asr(
    detector: str | Path, x: np.ndarray, y: np.ndarray, trigger: dict, target: int
) -> tuple[float, float]:
    """(ASR through the filter, share of real-trigger images the filter flags)."""
    det, model, _ = load_detector(detector)
    keep = y != target
    stamped = _tensor(stamp_patch(x[keep], PatchTrigger(**trigger)))
    flagged = det.scores(stamped) > det.threshold
    hit = predict(model, stamped) == target
    return float(((~flagged) & hit).float().mean()), float(flagged.float().mean())
