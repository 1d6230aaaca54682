"""How many (label, trial) searches to optimise together: from the model and the memory available."""

from __future__ import annotations

import torch
from torch import nn

MAX_GROUP = 64
CPU_IMAGES_PER_PASS = 640  # past this, a CPU pass gets no faster per image (see bench/bench_scan.py)
MEMORY_SHARE = 0.5  # of the free memory, leaving room for the rest of the process


def _available_cpu_bytes() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 * 2**30


def _cuda_bytes_per_batch(model: nn.Module, x: torch.Tensor, batch: int) -> int:
    """Peak memory of one forward/backward over a batch of stamped images, measured."""
    device = x.device
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    probe = x[:batch].clone().requires_grad_(True)
    model(probe).float().logsumexp(1).sum().backward()
    torch.cuda.synchronize(device)
    return max(1, torch.cuda.max_memory_allocated(device) - base)


def choose_group_size(model: nn.Module, x_opt: torch.Tensor, batch_size: int, jobs: int) -> int:
    """The group size G for `jobs` searches at `batch_size` images each.

    CUDA: as many as fit in half the free memory, measured with one probe pass (small models leave
    a GPU idle at batch 32, so large groups pay). CPU: enough for about CPU_IMAGES_PER_PASS images a
    pass, bounded by a rough activation estimate against the available RAM.
    """
    if jobs <= 1:
        return 1
    if x_opt.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(x_opt.device)
        per_batch = _cuda_bytes_per_batch(model, x_opt, min(batch_size, len(x_opt)))
        group = int(MEMORY_SHARE * free // per_batch)
    else:
        # Rough: activations of a conv net are a few hundred times its input; forward + backward.
        per_batch = batch_size * x_opt[0].numel() * 4 * 400
        group = min(int(MEMORY_SHARE * _available_cpu_bytes() // per_batch), max(1, CPU_IMAGES_PER_PASS // batch_size))
    return max(1, min(group, jobs, MAX_GROUP))
