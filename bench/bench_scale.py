"""One scan spread over Ray workers: the overhead on this machine, and the times on GPUs.

    python -m bench.bench_scale                # CPU: the local scan against a 2-worker Ray scan
    python -m bench.bench_scale --device cuda  # GPU: ResNet-18 (CIFAR stem) scans of 10, 43, 100 labels

CPU: the demo model (10 labels, default preset) scanned in this process and over 2 Ray CPU workers,
alternately, `--rounds` times; prints each wall time, the ratio Ray / local (with Ray already running,
and counting its start), and the largest per-label L1 difference between the two (float noise only).

CUDA: trains once (cached in .cache/bench_scale) a torchvision ResNet-18 with the CIFAR stem on CIFAR-10,
on GTSRB (43 labels) and on a 100-class set made from CIFAR-10 (each of the 10 classes in 10 fixed colour
tints: there is no 100-class set in ../shared/data); scans all labels of each on one GPU, and over every
GPU with Ray when there are several; prints wall time, stamped images/s, and the model's raw
forward+backward throughput at the scan's batch (images/s of the scan / raw = the share of the time the
GPU spends in the model). `--smoke` runs the same code on the CPU in minutes (tiny training, 2 labels,
2 steps), to check it where no GPU is lent; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bench.bench_scan import raw_throughput
from evaluation.zoo_data import CACHE, DATASETS, data_path, load_arrays
from nc_engine import load_config, run_scan
from nc_engine.config.settings import Config
from nc_engine.demo.build import make_demo
from nc_engine.demo.training import accuracy, train_classifier
from nc_engine.files import write_npz
from nc_engine.models.load import load_model

warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=UserWarning, module="torch")

FOLDER = CACHE / "bench_scale"
TINTS = np.array(
    [
        [1.0, 1.0, 1.0],
        [1.0, 0.55, 0.55],
        [0.55, 1.0, 0.55],
        [0.55, 0.55, 1.0],
        [1.0, 1.0, 0.5],
        [1.0, 0.5, 1.0],
        [0.5, 1.0, 1.0],
        [0.7, 0.7, 0.7],
        [1.0, 0.8, 0.45],
        [0.45, 0.8, 1.0],
    ]
)


def load_avg() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def configured(config: Path | str, out: Path, backend: str, workers: int = 0, **scan) -> Config:
    cfg = load_config(config)
    cfg.output.dir = str(out)
    cfg.compute.backend, cfg.compute.workers = backend, workers
    for key, value in scan.items():
        setattr(cfg.scan, key, value)
    return cfg


def timed(cfg: Config):
    start = time.perf_counter()
    report = run_scan(cfg)
    return report, time.perf_counter() - start


def l1_gap(a, b) -> float:
    """The largest relative per-label L1 difference between two reports of the same labels."""
    other = {r.label: r.l1_norm for r in b.labels}
    return max(abs(r.l1_norm - other[r.label]) / max(r.l1_norm, 1e-9) for r in a.labels)


def cpu_overhead(rounds: int, workers: int) -> None:
    import ray

    info = make_demo(FOLDER / "demo")
    print(
        f"model: the demo CNN on 28x28 glyphs, 10 labels, default preset; {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads; {load_avg()}"
    )
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    ray_start = time.perf_counter() - start
    print(f'starting a local Ray: {ray_start:.1f} s (once; a scan with address = "" pays it each time)')
    ratios, gaps = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(rounds):
            local, t_local = timed(configured(info.config, Path(tmp) / "local", "local"))
            spread, t_ray = timed(configured(info.config, Path(tmp) / "ray", "ray", workers))
            ratios.append(t_ray / t_local)
            gaps.append(l1_gap(local, spread))
            print(
                f"round {k + 1}: local {t_local:.1f} s, Ray {workers} workers {t_ray:.1f} s: ratio "
                f"{t_ray / t_local:.2f} ({(t_ray + ray_start) / t_local:.2f} counting Ray's start); "
                f"images {local.info.images} / {spread.info.images}; verdicts {local.verdict} / {spread.verdict}"
            )
    ray.shutdown()
    print(
        f"ratio Ray / local: {', '.join(f'{r:.2f}' for r in ratios)} (best {min(ratios):.2f}); "
        f"largest per-label L1 difference {max(gaps):.1e} (relative); {load_avg()}"
    )


def tinted_cifar(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """100 classes: CIFAR-10 class c in tint k is class 10 c + k (k fixed by the image's index)."""
    k = np.arange(len(x)) % len(TINTS)
    tinted = np.clip(x.astype(np.float32) * TINTS[k][:, None, None, :], 0, 255).astype(np.uint8)
    return tinted, y * len(TINTS) + k


def train_resnet(name: str, device: torch.device, epochs: int, n_train: int, n_test: int) -> Path:
    """A ResNet-18 (CIFAR stem) trained on `name`'s train split; returns its scan config (cached)."""
    folder = FOLDER / f"resnet18-{name}-e{epochs}-n{min(n_train, 10**6)}-t{min(n_test, 10**6)}-v2"
    config = folder / "config.toml"
    if config.is_file():
        return config
    import torchvision

    base = "cifar10" if name == "cifar100tint" else name
    info = DATASETS[base]
    x_train, y_train, x_test, y_test = load_arrays(base)
    rng = np.random.default_rng(0)  # the arrays are in class order: draw the subsets at random
    train, test = rng.permutation(len(x_train))[:n_train], rng.permutation(len(x_test))[:n_test]
    x_train, y_train, x_test, y_test = x_train[train], y_train[train], x_test[test], y_test[test]
    classes = info.num_classes
    if name == "cifar100tint":
        (x_train, y_train), (x_test, y_test) = tinted_cifar(x_train, y_train), tinted_cifar(x_test, y_test)
        classes = 100
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=classes)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()
    started = time.perf_counter()
    net = train_classifier(net, x_train, y_train, info.mean, info.std, epochs, 0, device, batch_size=128, decay=True)
    acc = accuracy(net, x_test, y_test, info.mean, info.std, device)
    print(
        f"trained ResNet-18 on {name} ({len(x_train)} images, {epochs} epochs) in "
        f"{time.perf_counter() - started:.0f} s: clean accuracy {acc:.1%}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.cpu().state_dict(), folder / "model.pt")
    if name == "cifar100tint":
        write_npz(folder / "data.npz", x_test=x_test, y_test=y_test)
        data = 'format = "npz"\npath = "data.npz"'
    else:
        data = f'format = "imagefolder"\npath = "{data_path(base).resolve()}"'
    config.write_text(
        f"""[model]
format = "torchvision"
architecture = "resnet18"
architecture_args = {{ cifar_stem = true }}
path = "model.pt"
num_classes = {classes}
input_shape = [3, 32, 32]
mean = {list(info.mean)}
std = {list(info.std)}

[data]
{data}
split = "test"

[scan]
labels = "all"
""",
        encoding="utf-8",
    )
    return config


def gpu_row(title: str, cfg: Config, device: torch.device) -> None:
    report, wall = timed(cfg)
    model = load_model(cfg.resolved(), device)
    batch = report.info.group_size * cfg.resolved().scan.batch_size
    raw = raw_throughput(model, cfg.model.input_shape, min(batch, 4096), device)
    rate = report.info.images / wall
    print(
        f"{title:<44}{len(report.labels):>7}{wall:>9.1f}{report.info.images:>12}{rate:>12.0f}{raw:>12.0f}"
        f"{rate / raw:>8.2f}  {report.verdict} {report.flagged}"
    )


def gpu_times(device: torch.device, epochs: int, n_train: int, smoke: bool) -> None:
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    name = torch.cuda.get_device_name(0) if gpus else "cpu (smoke run)"
    print(f"{gpus} x {name}, torch {torch.__version__}; {load_avg()}")
    budget = dict(labels=[0, 1], max_steps=2, samples=32, asr_samples=32) if smoke else {}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'scan':<44}{'labels':>7}{'wall s':>9}{'images':>12}{'images/s':>12}{'raw/s':>12}{'share':>8}")
        for name in ("cifar10", "gtsrb", "cifar100tint"):
            config = train_resnet(name, device, epochs, n_train, 500 if smoke else 10**9)
            gpu_row(
                f"ResNet-18 {name}, 1 device",
                configured(config, Path(tmp), "local", device=str(device), **budget),
                device,
            )
            if gpus > 1:
                gpu_row(
                    f"ResNet-18 {name}, Ray over {gpus} GPUs", configured(config, Path(tmp), "ray", **budget), device
                )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu: Ray's overhead here; cuda: the GPU times")
    parser.add_argument("--rounds", type=int, default=2, help="CPU: local/Ray pairs to time")
    parser.add_argument("--workers", type=int, default=2, help="CPU: Ray workers")
    parser.add_argument("--epochs", type=int, default=4, help="CUDA: training epochs of each ResNet-18")
    parser.add_argument("--smoke", action="store_true", help="run the CUDA path's code on the CPU, tiny")
    args = parser.parse_args()
    if args.smoke:
        gpu_times(torch.device("cpu"), 1, 256, smoke=True)
    elif args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            sys.exit("--device cuda: no CUDA device here")
        gpu_times(torch.device(args.device), args.epochs, 10**9, smoke=False)
    else:
        cpu_overhead(args.rounds, args.workers)


if __name__ == "__main__":
    main()
