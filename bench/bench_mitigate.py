"""Mitigation on a BadNets MNIST CNN: the REAL trigger's attack success rate before and after each method.

    python -m bench.bench_mitigate [--dir DIR]

Trains (cached) the zoo's BadNets MNIST SmallCNN (3x3 white patch at (24, 24)), scans it with the
default budget, then runs unlearn, prune and filter on the run folder. The real-trigger ASR is
measured on the scan's held-out MNIST test images (never used by the scan or the repair) that are not
of the target class; for the filter, "after" counts stamped images that pass the filter and still hit.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from evaluation.zoo import CACHE, MNIST, train_mnist
from nc_engine import load_config, run_scan
from nc_engine.demo.training import PatchTrigger, stamp_patch
from nc_engine.detectors.neural_cleanse.asr import predict
from nc_engine.mitigate import METHODS, MitigationOptions, load_detector, run_mitigation
from nc_engine.models.load import load_model

warnings.filterwarnings("ignore", category=FutureWarning)


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


def measure(folder: Path) -> list[dict]:
    manifest, run = scanned_mnist(folder)
    x, y = held_out_images(run)
    target, trigger = manifest["target"], manifest["trigger"]
    before = real_trigger_asr(run / "config.toml", x, y, trigger, target)
    rows = []
    for method in METHODS:
        started = time.perf_counter()
        report = run_mitigation(run, method, MitigationOptions())
        seconds = time.perf_counter() - started
        if method == "filter":
            after, caught = filtered_real_asr(report["detector"], x, y, trigger, target)
        else:
            after, caught = real_trigger_asr(report["config_path"], x, y, trigger, target), None
        rows.append(
            {
                "method": method,
                "real_asr_before": before,
                "real_asr_after": after,
                "real_trigger_flagged": caught,
                "accuracy_before": report["clean_accuracy"]["before"],
                "accuracy_after": report["clean_accuracy"]["after"],
                "reversed_asr": report["asr"][str(target)],
                "seconds": seconds,
                "extra": {k: report.get(k) for k in ("pruned_fraction", "fpr", "fnr", "threshold") if k in report},
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=str(CACHE / "bench_mitigate"), help="folder for the model and runs")
    args = parser.parse_args()
    print("| method | real-trigger ASR before | after | clean accuracy before | after | seconds |")
    print("|---|---|---|---|---|---|")
    for r in measure(Path(args.dir)):
        print(
            f"| {r['method']} | {r['real_asr_before']:.1%} | {r['real_asr_after']:.1%} | "
            f"{r['accuracy_before']:.1%} | {r['accuracy_after']:.1%} | {r['seconds']:.1f} |"
        )
        print(f"<!-- {json.dumps(r)} -->")


if __name__ == "__main__":
    main()
