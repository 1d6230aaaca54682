"""CUDA options of the search (bf16 autocast, channels_last) against fp32, on the BadNets MNIST CNN.

    python -m bench.bench_cuda_options

Each configuration runs twice (the first warms up kernels) and the second is timed; prints wall time,
verdict and the target's L1 and anomaly index, so a speed-up that changes the answer shows.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from pathlib import Path

from bench.bench_scan import timed_scan
from evaluation.zoo import CACHE, train_mnist

warnings.filterwarnings("ignore")

OPTIONS = [
    {},
    {"bf16": True},
    {"channels_last": True},
    {"bf16": True, "channels_last": True},
    {"strategy": "sequential"},
    {"strategy": "sequential", "bf16": True},
]


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()  # no options: --help only
    folder = CACHE / "zoo" / "mnist_badnets_s0"
    manifest = train_mnist(folder, backdoor=True, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        for keys in OPTIONS:
            for _ in range(2):
                report, wall = timed_scan(folder / "config.toml", Path(tmp), device="cuda", **keys)
            row = next(r for r in report.labels if r.label == manifest["target"])
            print(
                f"{str(keys or 'fp32, batched'):<45} {wall:6.2f}s  {report.verdict} {report.flagged}  "
                f"target L1 {row.l1_norm:.1f}, index {row.anomaly_index:.2f}, G {report.info.group_size}",
                flush=True,
            )


if __name__ == "__main__":
    main()
