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

from evaluation.zoo import CACHE, MNIST
from nc_engine.demo.mnist import filtered_real_asr, held_out_images, real_trigger_asr, scanned_mnist
from nc_engine.mitigate import METHODS, MitigationOptions, run_mitigation

warnings.filterwarnings("ignore", category=FutureWarning)


def measure(folder: Path) -> list[dict]:
    manifest, run = scanned_mnist(folder, MNIST)
    x, y = held_out_images(run, MNIST)
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
