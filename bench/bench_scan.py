"""Scan speed on a BadNets MNIST CNN (2 conv + 2 dense), all numbers measured in one run.

    python -m bench.bench_scan [--skip-reference] [--device cpu|cuda]

Prints (a) the model's raw forward+backward throughput at the batch sizes the scans use, (b) wall time
of the default scan with the sequential and the batched strategy and of the reference budget,
(c) stamped images processed and efficiency = (images / raw throughput) / wall time, (d) verdicts and
L1 norms. Ratios are taken within this run, since the machine is shared and timings drift.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

from evaluation.zoo import CACHE, train_mnist
from nc_engine import load_config, run_scan
from nc_engine.detectors.neural_cleanse.schedule import SearchSettings
from nc_engine.detectors.neural_cleanse.trigger import stamp, unit_from_raw
from nc_engine.models.load import load_model
from nc_engine.models.scan_model import resolve_device
from nc_engine.verdict.report import Report

warnings.filterwarnings("ignore", category=FutureWarning)


def raw_throughput(
    model: torch.nn.Module, shape: list[int], batch: int, device: torch.device, seconds: float = 3.0
) -> float:
    """Images/s of forward + backward to a mask and pattern, the search's own computation."""
    x = torch.rand((batch, *shape), device=device)
    raw_m = torch.zeros(shape[1:], device=device, requires_grad=True)
    raw_p = torch.zeros(shape, device=device, requires_grad=True)

    def once() -> None:
        out = model(stamp(x, unit_from_raw(raw_m), unit_from_raw(raw_p)))
        out.float().logsumexp(1).sum().backward()

    for _ in range(3):
        once()
    if device.type == "cuda":
        torch.cuda.synchronize()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        once()
        n += batch
    if device.type == "cuda":
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def timed_scan(config: Path, out: Path, **keys) -> tuple[Report, float]:
    cfg = load_config(config)
    cfg.output.dir = str(out)
    for key, value in keys.items():
        setattr(cfg.scan, key, value)
    if keys.get("preset") == "reference":
        cfg.scan.samples, cfg.scan.batch_size, cfg.scan.max_steps = 1000, 32, 1000
        cfg.scan.converge_window, cfg.scan.converge_tol = 0, 0.0
    start = time.perf_counter()
    report = run_scan(cfg)
    return report, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-reference", action="store_true", help="skip the slow reference-budget scan")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    folder = CACHE / "zoo" / "mnist_badnets_s0"
    manifest = train_mnist(folder, backdoor=True, seed=0)
    config = folder / "config.toml"
    print(
        f"model: {manifest['architecture']}, clean accuracy {manifest['clean_accuracy']:.2%}, real trigger "
        f"3x3 white -> label {manifest['target']} (ASR {manifest['attack_success_rate']:.1%})"
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")

    cfg = load_config(config)
    cfg.scan.device = args.device
    device = resolve_device(args.device)
    model = load_model(cfg, device)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        runs["sequential"] = timed_scan(config, out, strategy="sequential", device=args.device)
        runs["batched"] = timed_scan(config, out, strategy="batched", device=args.device)
        if not args.skip_reference:
            runs["reference"] = timed_scan(config, out, strategy="batched", preset="reference", device=args.device)
    shape = cfg.model.input_shape
    batch = cfg.scan.batch_size or SearchSettings.batch_size  # None: the preset's mini-batch
    sizes = sorted({batch, runs["batched"][0].info.group_size * batch})
    throughput = {b: raw_throughput(model, shape, b, device) for b in sizes + [1000]}
    print("\n(a) raw forward+backward throughput")
    for b in sorted(throughput):
        print(f"    batch {b:5d}: {throughput[b]:9.0f} images/s")

    print("\n(b, c) scans of all 10 labels")
    print(
        f"    {'run':<12}{'G':>4}{'wall s':>9}{'images':>10}{'efficiency':>12}{'verdict':>12}{'flagged':>9}"
        f"{'index':>7}{'vs sequential':>15}"
    )
    seq_wall = runs["sequential"][1]
    for name, (report, wall) in runs.items():
        g = report.info.group_size
        b = 32 if name == "reference" else batch
        tp = throughput.get(g * b) or raw_throughput(model, shape, g * b, device)
        efficiency = report.info.images / tp / wall
        target_row = next(r for r in report.labels if r.label == manifest["target"])
        print(
            f"    {name:<12}{g:>4}{wall:>9.1f}{report.info.images:>10}{efficiency:>12.2f}{report.verdict:>12}"
            f"{str(report.flagged):>9}{target_row.anomaly_index:>7.2f}{seq_wall / wall:>14.2f}x"
        )
    base = runs["batched"]
    # a peer's time is measured beside ours in one run (bench_peer.py), never held here as a constant
    if "reference" in runs:
        ref = runs["reference"]
        print(
            f"    reference budget here: {ref[0].info.images} images in {ref[1]:.1f}s; default does "
            f"{ref[0].info.images / base[0].info.images:.1f}x fewer images, {ref[1] / base[1]:.1f}x faster"
        )

    print("\n(d) L1 norms per label")
    print(f"    {'label':<12}" + "".join(f"{label:>8}" for label in range(10)))
    for name, (report, _) in runs.items():
        l1 = {r.label: r.l1_norm for r in report.labels}
        print(f"    {name:<12}" + "".join(f"{l1[label]:8.1f}" for label in range(10)))


if __name__ == "__main__":
    main()
