"""How many search workers a Ray scan starts and what each one asks Ray for (no Ray import here)."""

from __future__ import annotations

import math

from nc_engine.config.settings import ComputeConfig


def worker_plan(
    compute: ComputeConfig, scan_device: str, resources: dict[str, float], jobs: int
) -> tuple[int, dict[str, float], bool]:
    """(number of workers, each one's Ray resources, on GPUs): one per GPU unless the config or the scan
    asks for the CPU, else CPU workers sharing the cluster's CPUs; never more workers than jobs."""
    gpus = int(resources.get("GPU", 0))
    on_gpu = gpus > 0 and compute.devices != "cpu" and scan_device != "cpu"
    if on_gpu:
        count = max(1, min(compute.workers or gpus, jobs))
        # more workers than GPUs share them evenly (Ray packs fractions of a GPU, not across two)
        options = {"num_gpus": 1 / math.ceil(count / gpus), "num_cpus": 1}
    else:
        cpus = max(1, int(resources.get("CPU", 1)))
        count = max(1, min(compute.workers or cpus, jobs))
        # Ray takes whole CPUs above one, fractions below
        options = {"num_cpus": cpus // count if count <= cpus else cpus / count}
    return count, options, on_gpu
