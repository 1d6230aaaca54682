"""What the transform search adds to a scan: the default scan (Neural Cleanse and max-margin) against the
same scan with `[detect] transforms = true`, interleaved in one run on one device, on the demo's
backdoored and clean models (nc_engine/demo/build.py; seeds 0, trained once into .cache/).

    python -m bench.bench_detectors [--rounds 2] [--preset default]

Prints, per model and round, both scans' seconds (the whole `run_scan` call, model and data loading
included; the interpreter's start and imports are not),
images (Neural Cleanse's stamped images plus every detector's), verdicts and flagged labels, then the
ratios. The issue's bound: at most 1.5x the default scan's cost.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from nc_engine import load_config, run_scan
from nc_engine.demo.build import make_demo

CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench_detectors"


def _scan(config: Path, preset: str, transforms: bool) -> dict:
    cfg = load_config(config)
    cfg.scan.preset = preset
    cfg.detect.transforms = transforms
    with tempfile.TemporaryDirectory() as out:
        cfg.output.dir = out
        started = time.perf_counter()
        report = run_scan(cfg)
        seconds = time.perf_counter() - started
    extra = sum(int(d.get("images", 0)) for d in report.detectors.values())
    return {
        "seconds": seconds,
        "images": report.info.images + extra,
        "verdict": report.verdict,
        "flagged": report.flagged,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The default scan against the default scan plus the transform search.")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--preset", default="default")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    print(f"device: cpu ({cpu}, {torch.get_num_threads()} threads), torch {torch.__version__}")
    for backdoor in (True, False):
        demo = make_demo(CACHE / ("backdoored" if backdoor else "clean"), backdoor=backdoor)
        name = f"demo {'backdoored (target ' + str(demo.target) + ')' if backdoor else 'clean'}"
        ratios = []
        for round_ in range(args.rounds):
            off = _scan(demo.config, args.preset, False)
            on = _scan(demo.config, args.preset, True)
            ratios.append((on["seconds"] / off["seconds"], on["images"] / off["images"]))
            for label, r in (("default", off), ("+ transforms", on)):
                print(
                    f"{name}, round {round_ + 1}, {label:<13} {r['seconds']:6.1f} s {r['images']:>9,} images "
                    f"{r['verdict']} {r['flagged']}",
                    flush=True,
                )
        times = ", ".join(f"{t:.2f}x" for t, _ in ratios)
        print(f"{name}: with the transform search, time {times}; images {ratios[0][1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
