"""nc-tui against a public Neural Cleanse, side by side in one run on one device: the same model, the same
images, the same CPU threads.

    python -m bench.bench_peer [--rounds 1] [--save bench/results/bench_peer_cpu.txt]

The peer is TrojanZoo's Neural Cleanse (PyPI `trojanzoo` 2.0.3, its `trojanvision` module), installed into
a virtual environment of its own under .cache/bench_peer/ (never vendored; installing is timed apart and
not counted). Why this one: ART's Neural Cleanse takes only Keras classifiers, and BackdoorBench is not on
the package registry; TrojanZoo installs from PyPI and runs on today's torch (bench/peer_trojanzoo.py,
with its one work-around said there).

Model: the BadNets MNIST CNN of bench_scan (TorchScript, 3x3 white trigger) on the shared MNIST test
split, the images nc-tui's config points at. Each round times, as a user would run them and start-up
included, `nc-tui scan CONFIG --headless` and the peer's script, and prints both verdicts, both L1
vectors, the images each pushed through the model and the ratio of wall times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from evaluation.zoo import CACHE, train_mnist
from nc_engine import load_config
from nc_engine.data.load import open_data

PEER = ["trojanzoo==2.0.3", "torch", "torchvision"]
VENV = CACHE / "bench_peer" / "venv"
RUNNER = Path(__file__).with_name("peer_trojanzoo.py")


def peer_python() -> Path:
    """The peer's interpreter, installing it the first time (timed, and not part of any measurement)."""
    python = VENV / "bin" / "python"
    if python.is_file():
        return python
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER], check=True)
    print(f"installed {' '.join(PEER)} into {VENV} in {time.perf_counter() - start:.0f}s (not timed below)")
    return python


def export_images(config: Path, out: Path) -> tuple[int, list[float], list[float]]:
    """The images the scan's config names, as x in [0, 1] and y, for the peer; (count, mean, std)."""
    cfg = load_config(config)
    source = open_data(cfg)
    index = np.arange(len(source.labels))
    x, kept = source.load(index, lambda message: None)  # the images, and which samples they are
    np.savez(out, x=x.numpy().astype(np.float32), y=source.labels[kept].astype(np.int64))
    return len(kept), list(cfg.model.mean), list(cfg.model.std)


def ours(config: Path, out: Path) -> tuple[float, dict]:
    """`nc-tui scan --headless` as a command, start-up included; its report."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "nc_tui.cli", "scan", str(config), "--headless", "--out", str(out)],
        check=True,
        capture_output=True,
    )
    seconds = time.perf_counter() - start
    run = max(out.iterdir(), key=lambda p: p.stat().st_mtime)
    return seconds, json.loads((run / "report.json").read_text())


def peer(python: Path, model: Path, data: Path, mean: list[float], std: list[float], work: Path) -> tuple[float, dict]:
    out = work / "peer.json"
    command = [str(python), str(RUNNER), "--model", str(model), "--data", str(data), "--out", str(out)]
    command += ["--mean", *map(str, mean), "--std", *map(str, std), "--work", str(work / "peer")]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    if done.returncode:
        raise SystemExit(f"the peer failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - start, json.loads(out.read_text())


def _l1(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:.1f}" for v in values) + "]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1, help="each round runs nc-tui, then the peer")
    parser.add_argument("--save", type=Path, help="also write what is printed to this file")
    args = parser.parse_args()
    lines: list[str] = []

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    folder = CACHE / "zoo" / "mnist_badnets_s0"
    manifest = train_mnist(folder, backdoor=True, seed=0)
    config, model = folder / "config.toml", folder / "model.pt"
    python = peer_python()
    asked = [str(python), "-c", "import torch; print(torch.__version__)"]
    version = subprocess.run(asked, capture_output=True, text=True)
    import torch  # noqa: PLC0415  (after the install: its threads are what both sides get)

    say(
        f"model: BadNets MNIST CNN (TorchScript), clean accuracy {manifest['clean_accuracy']:.2%}, real trigger 3x3 "
        f"white -> label {manifest['target']} (ASR {manifest['attack_success_rate']:.1%})"
    )
    say(f"device: cpu, {os.cpu_count()} cores, torch threads {torch.get_num_threads()} on both sides")
    say(f"nc-tui: torch {torch.__version__}; peer: trojanzoo 2.0.3, torch {version.stdout.strip()}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        count, mean, std = export_images(config, work / "images.npz")
        say(f"images: the config's data, {count:,} MNIST test images, the same file for both")
        for r in range(args.rounds):
            our_s, report = ours(config, work / f"ours-{r}")
            peer_s, found = peer(python, model, work / "images.npz", mean, std, work / f"peer-{r}")
            our_l1 = [row["l1_norm"] for row in sorted(report["labels"], key=lambda row: row["label"])]
            margin = report.get("detectors", {}).get("max_margin", {}).get("images", 0)
            images = report["images"] + margin  # Neural Cleanse's stamped images and max-margin's
            say(f"round {r + 1}:")
            say(
                f"  nc-tui scan --headless: {our_s:6.1f} s wall, {images:>10,} images ({report['images']:,} stamped "
                f"+ {margin:,} max-margin), verdict {report['verdict']} {report['flagged']}, L1 {_l1(our_l1)}"
            )
            say(
                f"  trojanzoo NC:           {peer_s:6.1f} s wall ({found['detect_seconds']:.1f} s in detect), "
                f"{found['images']:>10,} images, flagged {found['flagged']} (paper's rule), L1 {_l1(found['l1'])}"
            )
            say(f"  ratio: nc-tui took {peer_s / our_s:.1f}x less time, {found['images'] / images:.1f}x fewer images")
    if args.save:
        args.save.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
