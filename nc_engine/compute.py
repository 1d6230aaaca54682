"""Where a scan's (label, trial) searches run: in this process, or spread over Ray workers.

A backend's `search` has the signature of `search.search_triggers`, so the scan, its listeners and
the run folder see the same on_step / on_done calls whichever backend runs the searches. Ray is an
optional extra: it is imported only when `[compute].backend = "ray"`.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import torch
from torch import nn

from . import events as ev
from .config import ComputeConfig, Config
from .errors import ComputeError
from .inflight import Carry
from .schedule import SearchSettings
from .search import Job, StepStats, TrialOutcome, search_triggers


class Compute(Protocol):
    continues_searches: bool  # whether `carry` is honoured (saved running searches continue on resume)

    def search(self, model: nn.Module, x_opt: torch.Tensor, jobs: list[Job], settings: SearchSettings,
               group_size: int, stop: threading.Event, on_step: Callable[[StepStats, int], None],
               on_done: Callable[[TrialOutcome], None], carry: Carry | None = None) -> tuple[int, bool]:
        """Run every job; returns (stamped images processed, stopped early), as search_triggers does.
        `carry`: running searches saved and continued (inflight.py), where the backend can."""
        ...


class LocalCompute:
    """Today's path: every search in this process, on the scan's device."""

    continues_searches = True

    def search(self, model: nn.Module, x_opt: torch.Tensor, jobs: list[Job], settings: SearchSettings,
               group_size: int, stop: threading.Event, on_step: Callable[[StepStats, int], None],
               on_done: Callable[[TrialOutcome], None], carry: Carry | None = None) -> tuple[int, bool]:
        return search_triggers(model, x_opt, jobs, settings, group_size, stop, on_step, on_done, carry)


def check_ray(cfg: Config) -> None:
    """backend = "ray" without Ray installed is one line naming the extra to install."""
    if cfg.compute.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ComputeError(f"{cfg.source}: [compute].backend = \"ray\" needs Ray, which is not installed: "
                           "pip install \"nc-tui[ray]\" (or set backend = \"local\")")


@contextmanager
def open_compute(cfg: Config, bus: ev.EventBus) -> Iterator[Compute]:
    """The config's backend, connected before the scan writes anything (a wrong address is one line)
    and released after it (workers stopped; a Ray started for the scan shut down)."""
    check_ray(cfg)
    if cfg.compute.backend == "local":
        yield LocalCompute()
        return
    from .ray_backend import RayCompute

    compute = RayCompute.connect(cfg, bus)
    try:
        yield compute
    finally:
        compute.close()


def worker_plan(compute: ComputeConfig, scan_device: str, resources: dict[str, float], jobs: int
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
