"""One Ray worker of a distributed scan: the model and samples once, then jobs through search_triggers.

It runs the same batched search as a local scan on its own device and buffers what the search reports;
the driver polls the buffer (a second thread of the actor: polling and halting never wait for a search).
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import numpy as np
import ray
import torch
import torch.nn.functional as F

from nc_engine.compute.process_tuning import keep_freed_memory
from nc_engine.compute.ray_parcel import unpack_model
from nc_engine.detectors.neural_cleanse.groups import choose_group_size
from nc_engine.detectors.neural_cleanse.schedule import SearchSettings
from nc_engine.detectors.neural_cleanse.search import Job, StepStats, TrialOutcome, search_triggers

MASK_SIDE = 64  # step masks larger than this are pooled down: they only feed the live view

# (kind, call, item, images): kind "step" with a StepStats, "done" with a TrialOutcome; images = the
# stamped images processed so far by that call
WorkerEvent = tuple[str, int, Any, int]


def small_mask(mask: np.ndarray | None) -> np.ndarray | None:
    """The mask itself when small, else average-pooled to at most MASK_SIDE a side."""
    if mask is None or max(mask.shape) <= MASK_SIDE:
        return mask
    step = -(-max(mask.shape) // MASK_SIDE)
    pooled = F.avg_pool2d(
        torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None, None], step, ceil_mode=True
    )
    return pooled[0, 0].numpy()


def thin_steps(events: list[WorkerEvent]) -> list[WorkerEvent]:
    """Keep every step's numbers but only each search's latest mask (pooled when large): the driver
    polls a few times a second and the screen shows the newest mask anyway."""
    seen: set[tuple[int, int, str]] = set()
    for kind, _, item, _ in reversed(events):
        if kind == "step":
            key = item.job.key
            item.mask = None if key in seen else small_mask(item.mask)
            seen.add(key)
    return events


@ray.remote(concurrency_groups={"control": 1})  # type: ignore[call-overload]  # ray's overloads omit this option
class SearchWorker:
    """A Ray actor: `run` searches in the default thread; `poll` and `halt` answer from the control one."""

    def __init__(self, parcel: bytes, threads: int, gpu: bool) -> None:
        keep_freed_memory()  # a process of its own that only searches (nc_engine/compute/process_tuning.py)
        torch.set_num_threads(threads)
        self.device = torch.device("cuda" if gpu else "cpu")
        self.model = unpack_model(parcel).to(self.device).eval()
        self.x: torch.Tensor | None = None
        self.events: list[WorkerEvent] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def where(self) -> str:
        """The device and host, for the log and the screen."""
        host = socket.gethostname()
        if self.device.type == "cuda":
            ids = ",".join(str(i) for i in ray.get_gpu_ids())
            return f"cuda:{ids} ({torch.cuda.get_device_name(self.device)}) @ {host}"
        return f"cpu ({torch.get_num_threads()} thread(s)) @ {host}"

    def set_samples(self, x: np.ndarray) -> None:
        self.x = torch.tensor(x).to(self.device)  # a copy: the object store's array is read-only

    def run(self, call: int, jobs: list[Job], settings: SearchSettings, group: int) -> tuple[int, bool]:
        """search_triggers over `jobs` (group 0: chosen for this device); its reports go to the buffer."""
        assert self.x is not None  # the driver calls set_samples first
        group = group or choose_group_size(self.model, self.x, settings.batch_size, len(jobs))

        def on_step(stats: StepStats, images: int) -> None:
            self._push(("step", call, stats, images))

        def on_done(out: TrialOutcome) -> None:
            self._push(("done", call, out, 0))

        return search_triggers(self.model, self.x, jobs, settings, group, self.stop, on_step, on_done)

    def _push(self, event: WorkerEvent) -> None:
        with self.lock:
            self.events.append(event)

    @ray.method(concurrency_group="control")
    def poll(self) -> list[WorkerEvent]:
        with self.lock:
            events, self.events = self.events, []
        return thin_steps(events)

    @ray.method(concurrency_group="control")
    def halt(self) -> None:
        """Stop at the next mini-batch, as a local scan does; finished trials stay in the buffer."""
        self.stop.set()
