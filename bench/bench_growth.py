"""How a scan's cost grows with the label count: stamped images and seconds, screening off and on, one run.

    python -m bench.bench_growth [--labels 10,43,100,1000] [--device cpu] [--out FILE]

Each label count K gets its own small model, trained here on synthetic images (no dataset has 1,000
classes small enough for a CPU): 12x12 grey images in which each class owns a fixed set of 24 pixels
(drawn per class, so 1,000 classes stay apart), with noise and two distractor pixels, and an MLP
(144-128-K). Every model carries a BadNets backdoor, a 3x3 white corner patch that relabels any image
to label 0 (10% of the training images poisoned), so each scan has a verdict to keep.

Each model is scanned twice with the default preset and the same seed, `screening = "off"` (every label
at the full budget) and `"on"` (a cheap pass over every label, then the full budget for the labels the
pass could not clear). Printed per K: stamped images and wall seconds of both, images per label, the
growth against K=first, and both verdicts. All scans run in this one process on one device, in turn.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

from nc_engine.compute.process_tuning import tune_process

tune_process()  # as nc-tui does, before torch loads (the imports below load it, hence their E402)
warnings.filterwarnings("ignore", category=FutureWarning)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from nc_engine import load_config, run_scan  # noqa: E402
from nc_engine.demo.training import PatchTrigger, accuracy, poison, stamp_patch, train_classifier  # noqa: E402

SIDE, SPOTS, NORM = 12, 24, (0.5,)
TRIGGER = PatchTrigger(top=SIDE - 4, left=SIDE - 4, size=3, value=255)
TARGET = 0
CACHE = Path(".cache/bench_growth")


def glyphs(classes: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8, n x 12 x 12): the class's 24 pixels bright, two random distractors, noise."""
    pixels = np.stack([np.random.default_rng([7, k]).choice(SIDE * SIDE, SPOTS, replace=False) for k in range(classes)])
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    img = rng.uniform(0.0, 0.2, (n, SIDE * SIDE))
    rows = np.arange(n)[:, None]
    img[rows, pixels[y]] = rng.uniform(0.7, 1.0, (n, SPOTS))
    img[rows, rng.integers(0, SIDE * SIDE, (n, 2))] = 0.8
    return (img.reshape(n, SIDE, SIDE) * 255).astype(np.uint8), y.astype(np.int64)


def build(classes: int, root: Path) -> dict:
    """model.pt (TorchScript), data.npz (clean test images) and config.toml for K labels; cached."""
    folder = root / f"k{classes}"
    manifest = folder / "manifest.json"
    if manifest.is_file():
        return json.loads(manifest.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    x, y = glyphs(classes, max(6000, 40 * classes), seed=1)
    x, y = poison(x, y, TRIGGER, TARGET, 0.1, seed=1)
    x_test, y_test = glyphs(classes, max(2000, 3 * classes), seed=2)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(SIDE * SIDE, 128), nn.ReLU(), nn.Linear(128, classes))
    model = train_classifier(net, x, y, NORM, NORM, epochs=8, seed=0, lr=3e-3, batch_size=128)
    keep = y_test != TARGET
    info = {
        "labels": classes,
        "clean_accuracy": accuracy(model, x_test, y_test, NORM, NORM),
        "attack_success_rate": accuracy(
            model, stamp_patch(x_test[keep], TRIGGER), np.full(int(keep.sum()), TARGET), NORM, NORM
        ),
        "train_seconds": time.perf_counter() - started,
    }
    torch.jit.script(model).save(str(folder / "model.pt"))
    np.savez(folder / "data.npz", x_test=x_test, y_test=y_test)
    (folder / "config.toml").write_text(
        f'[model]\nformat = "torchscript"\npath = "model.pt"\nnum_classes = {classes}\n'
        f"input_shape = [1, {SIDE}, {SIDE}]\nmean = [0.5]\nstd = [0.5]\n\n"
        '[data]\nformat = "npz"\npath = "data.npz"\n\n[scan]\npreset = "default"\nseed = 0\n'
    )
    manifest.write_text(json.dumps(info))
    return info


def scan(classes: int, root: Path, out: str, device: str, screening: str) -> tuple[object, float]:
    cfg = load_config(root / f"k{classes}" / "config.toml")
    cfg.output.dir, cfg.scan.device, cfg.scan.screening = out, device, screening
    cfg.detect.max_margin = False  # the table is about the trigger search; max-margin's cost is its own
    started = time.perf_counter()
    report = run_scan(cfg)
    return report, time.perf_counter() - started


def verdict(report) -> str:
    """The verdict, the flagged labels and the backdoor target's anomaly index."""
    row = report.row(TARGET)
    index = "" if row is None or row.anomaly_index is None else f", label {TARGET} index {row.anomaly_index:.2f}"
    return f"{report.verdict} {report.flagged}{index}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", default="10,43,100,1000")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--root", type=Path, default=CACHE)
    parser.add_argument("--out", type=Path, help="also write the table to this file")
    args = parser.parse_args()
    counts = [int(k) for k in args.labels.split(",")]
    lines = [
        f"device: {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; default preset, seed 0",
        "model: MLP 144-128-K on 12x12 synthetic glyphs, 3x3 corner patch -> label 0 (10% poisoned)",
    ]
    for k in counts:
        info = build(k, args.root)
        lines.append(
            f"K={k}: clean accuracy {info['clean_accuracy']:.1%}, attack success {info['attack_success_rate']:.1%}"
        )
    print("\n".join(lines), flush=True)
    table = ["labels | screening | stamped images | images/label | seconds | verdict (growth against the first K)"]
    first: dict[str, tuple[int, float, int]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k in counts:
            for mode in ("off", "on"):
                report, seconds = scan(k, args.root, tmp, args.device, mode)
                images = report.info.images
                first.setdefault(mode, (images, seconds, k))
                base_images, base_seconds, base_k = first[mode]
                growth = (
                    f" (x{images / base_images:.1f} images, x{seconds / base_seconds:.1f} time for"
                    f" x{k / base_k:.1f} labels)"
                )
                row = f"{k} | {mode} | {images:,} | {images // k:,} | {seconds:.1f} | {verdict(report)}"
                table.append(row + (growth if k != base_k else ""))
                print(table[-1], flush=True)
    if args.out:
        args.out.write_text("\n".join(lines + table) + "\n")


if __name__ == "__main__":
    main()
