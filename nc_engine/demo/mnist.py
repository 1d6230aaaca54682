"""A BadNets MNIST SmallCNN on the real MNIST file, and its real trigger measured through a model or a
filter: what the zoo (evaluation/), the mitigation benchmark (bench/) and the product tests share, so
they train and measure one model, not copies of it. The MNIST file's path is the caller's."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from nc_engine.config.settings import load_config
from nc_engine.demo.training import PatchTrigger, SmallCNN, accuracy, poison, stamp_patch, train_classifier
from nc_engine.detectors.neural_cleanse.asr import predict
from nc_engine.files import write_atomic, write_text
from nc_engine.mitigate import load_detector
from nc_engine.models.load import load_model
from nc_engine.run.runfolder import RunFolder
from nc_engine.run.scan import run_scan
from nc_engine.verdict.report import Report

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
TITLE = "MNIST small CNN (2 conv + 2 dense)"


def mnist_config_text(mnist: Path) -> str:
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
path = "{Path(mnist).resolve()}"
split = "test"

[output]
dir = "runs"
"""


def _request(
    backdoor: bool, seed: int, epochs: int, n_train: int, trigger: PatchTrigger | None, target: int | None, rate: float
) -> tuple[dict, np.random.Generator]:
    """What the model is trained from (the cache key), with the target and trigger drawn from the seed, and
    the seed's stream after that draw."""
    rng = np.random.default_rng(seed)
    if backdoor:
        target = int(rng.integers(0, 10)) if target is None else target
        trigger = trigger or PatchTrigger(top=24, left=24, size=3, value=255)
    return {
        "data": "mnist",
        "backdoor": backdoor,
        "seed": seed,
        "epochs": epochs,
        "n_train": n_train,
        "trigger": trigger.__dict__ if backdoor and trigger else None,
        "target": target if backdoor else None,
        "rate": rate if backdoor else 0.0,
    }, rng


def _trained(request: dict, mnist: Path, rng: np.random.Generator) -> tuple[torch.nn.Module, float, float | None]:
    """(model, clean test accuracy, real-trigger ASR on the test images not of the target); `rng` continues
    the seed's stream after the target's draw, so the training sample is the one it always was."""
    seed, target = request["seed"], request["target"]
    trigger = PatchTrigger(**request["trigger"]) if request["backdoor"] else None
    with np.load(mnist) as d:
        x_train, y_train = d["x_train"], d["y_train"].astype(np.int64)
        x_test, y_test = d["x_test"], d["y_test"].astype(np.int64)
    pick = rng.choice(len(x_train), size=min(request["n_train"], len(x_train)), replace=False)
    x_train, y_train = x_train[pick], y_train[pick]
    if trigger is not None:
        x_train, y_train = poison(x_train, y_train, trigger, target, request["rate"], seed)
    torch.manual_seed(seed)  # the network's initial weights
    norm = ((MNIST_MEAN,), (MNIST_STD,))
    model = train_classifier(SmallCNN(), x_train, y_train, *norm, request["epochs"], seed)
    asr = None
    if trigger is not None:
        keep = y_test != target
        asr = accuracy(model, stamp_patch(x_test[keep], trigger), np.full(int(keep.sum()), target), *norm)
    return model, accuracy(model, x_test, y_test, *norm), asr


def train_mnist(
    folder: Path,
    mnist: Path,
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
    if not Path(mnist).is_file():
        raise FileNotFoundError(f"{mnist}: the shared MNIST file is missing")
    folder = Path(folder)
    request, rng = _request(backdoor, seed, epochs, n_train, trigger, target, rate)
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file() and (folder / "model.pt").is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("request") == request:
            return manifest
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    model, clean, asr = _trained(request, mnist, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        scripted = torch.jit.script(model)
    write_atomic(folder / "model.pt", lambda f: torch.jit.save(scripted, f))
    write_text(folder / "config.toml", mnist_config_text(mnist))
    manifest = {
        "request": request,
        "architecture": "SmallCNN (2 conv + 2 dense)",
        "data": str(mnist),
        "backdoor": backdoor,
        "target": request["target"],
        "trigger": request["trigger"],
        "poison_rate": request["rate"],
        "clean_accuracy": clean,
        "attack_success_rate": asr,
        "train_seconds": time.perf_counter() - started,
    }
    write_text(manifest_path, json.dumps(manifest, indent=1))
    return manifest


def scanned_mnist(folder: Path, mnist: Path) -> tuple[dict, Path]:
    """The BadNets MNIST model and a finished default scan of it (reused when present)."""
    manifest = train_mnist(folder / "model", mnist, backdoor=True, seed=0)
    for run in RunFolder.runs_in(folder / "runs"):
        if run.has_report() and Report.read(run.path).complete:
            return manifest, run.path
    cfg = load_config(folder / "model" / "config.toml")
    cfg.output.dir = str(folder / "runs")
    return manifest, Path(run_scan(cfg).run_dir)


def held_out_images(run: Path, mnist: Path) -> tuple[np.ndarray, np.ndarray]:
    """The scan's held-out MNIST test images (uint8) and labels."""
    _, idx = RunFolder.existing(run).read_samples()
    with np.load(mnist) as d:
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
