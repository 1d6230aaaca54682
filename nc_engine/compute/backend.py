"""Where a scan's (label, trial) searches run: in this process, or spread over Ray workers.

A backend's `search` takes one SearchRequest (request.py) and keeps `search.search_triggers`' contract, so
the scan, its listeners and the run folder see the same on_step / on_done calls whichever backend runs
the searches. Ray is an
optional extra: it is imported only when `[compute].backend = "ray"`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from nc_engine.compute.request import SearchRequest
from nc_engine.config.settings import Config
from nc_engine.detectors.neural_cleanse.search import search_triggers
from nc_engine.errors import ComputeError
from nc_engine.run import events as ev


class Compute(Protocol):
    continues_searches: bool  # whether `carry` is honoured (saved running searches continue on resume)

    def search(self, request: SearchRequest) -> tuple[int, bool]:
        """Run every job; returns (stamped images processed, stopped early), as search_triggers does.
        `request.carry`: running searches saved and continued (inflight.py), where the backend can."""
        ...


class LocalCompute:
    """Today's path: every search in this process, on the scan's device."""

    continues_searches = True

    def search(self, request: SearchRequest) -> tuple[int, bool]:
        r = request
        return search_triggers(
            r.model, r.x_opt, r.jobs, r.settings, r.group_size, r.stop, r.on_step, r.on_done, r.carry
        )


def check_ray(cfg: Config) -> None:
    """backend = "ray" without Ray installed is one line naming the extra to install."""
    if cfg.compute.backend == "ray" and importlib.util.find_spec("ray") is None:
        raise ComputeError(
            f'{cfg.source}: [compute].backend = "ray" needs Ray, which is not installed: '
            'pip install "nc-tui[ray]" (or set backend = "local")'
        )


@contextmanager
def open_compute(cfg: Config, bus: ev.EventBus) -> Iterator[Compute]:
    """The config's backend, connected before the scan writes anything (a wrong address is one line)
    and released after it (workers stopped; a Ray started for the scan shut down)."""
    check_ray(cfg)
    if cfg.compute.backend == "local":
        yield LocalCompute()
        return
    from nc_engine.compute.ray_backend import RayCompute

    compute = RayCompute.connect(cfg, bus)
    try:
        yield compute
    finally:
        compute.close()
