"""The Ray backend: one scan's (label, trial) searches spread over Ray workers, one per GPU (or CPU).

The model and the samples go into the object store once and each worker takes them once; the jobs
are dealt out to the workers (ray_worker.py), each running search_triggers on its device. The driver
polls the workers' buffers and alone calls on_step / on_done, so the run folder, console and app work
as in a local scan. A worker that dies has its unfinished jobs run again on another one (each job's
seed fixes its result); a stop halts every worker and keeps the trials finished so far.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import GetTimeoutError, OutOfMemoryError, RayActorError, RayTaskError
from torch import nn

from nc_engine.compute.ray_parcel import pack_model
from nc_engine.compute.ray_reaper import start_watcher, stop_watcher
from nc_engine.compute.ray_worker import SearchWorker, WorkerEvent
from nc_engine.compute.request import SearchRequest
from nc_engine.compute.workers import worker_plan
from nc_engine.config.settings import ComputeConfig, Config, gpu_index
from nc_engine.detectors.neural_cleanse.schedule import SearchSettings
from nc_engine.detectors.neural_cleanse.search import Job, StepStats, TrialOutcome
from nc_engine.errors import ComputeError, first_line
from nc_engine.run import events as ev

POLL_SECONDS = 0.1  # how often the driver collects the workers' reports
START_SECONDS = 300.0  # workers still waiting for resources after this: the cluster cannot host them
HALT_SECONDS = 15.0  # after a stop, how long workers get to end their mini-batch and report
WORKER_LOST = (RayActorError, OutOfMemoryError)


@contextmanager
def _ray_start_quietly(visible_gpus: str | None) -> Iterator[None]:
    """ray.init without its console chatter (it would garble the app), without taking over SIGTERM
    (the console's handler stops the scan cleanly), and with only the chosen GPUs visible to it."""
    logger = logging.getLogger("ray")
    level, saved_env = logger.level, os.environ.get("CUDA_VISIBLE_DEVICES")
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    logger.setLevel(logging.ERROR)
    if visible_gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible_gpus
    try:
        yield
    finally:
        logger.setLevel(level)
        if visible_gpus is not None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None) if saved_env is None else os.environ.__setitem__(
                "CUDA_VISIBLE_DEVICES", saved_env
            )
        if main:
            signal.signal(signal.SIGTERM, sigterm)


def visible_gpus(devices: Any) -> str | None:
    """CUDA_VISIBLE_DEVICES for a local Ray limited to [compute].devices (indices as torch numbers them
    here), or None for "all"/"cpu"."""
    if not isinstance(devices, list):
        return None
    count = torch.cuda.device_count()
    wanted = [gpu_index(d) for d in devices]
    missing = [i for i in wanted if i >= count]
    if missing:
        raise ComputeError(
            f"[compute].devices = {devices!r} but this machine has {count} CUDA device(s) (indices 0..{count - 1})"
            if count
            else f"[compute].devices = {devices!r} but this machine has no CUDA device"
        )
    present = os.environ.get("CUDA_VISIBLE_DEVICES")
    physical = [p.strip() for p in present.split(",")] if present else [str(i) for i in range(count)]
    return ",".join(physical[i] for i in wanted)


def init_ray(compute: ComputeConfig) -> bool:
    """Connect to the cluster the config names, or start a local Ray; True when this call started it
    (and so shuts it down after the scan). An already connected Ray (a test, a notebook) is used as is."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    if compute.address:
        kwargs["address"] = compute.address
    try:
        with _ray_start_quietly(visible_gpus(compute.devices)):
            ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        where = (
            f"[compute].address = {compute.address!r}: cannot connect to a Ray cluster"
            if compute.address
            else "cannot start a local Ray"
        )
        raise ComputeError(f"{where} ({first_line(exc)})") from None
    if not compute.address:
        start_watcher()  # its processes end with this one, even when this one is killed
    return True


def shutdown_ray() -> None:
    """Shut down the Ray this process started, and whatever of it is left."""
    ray.shutdown()
    stop_watcher()


@dataclass
class _Worker:
    index: int
    handle: Any
    where: str = ""
    alive: bool = True

    def describe(self) -> str:
        return f"w{self.index} {self.where}".strip()


@dataclass
class _Call:
    worker: _Worker
    jobs: list[Job]
    ident: int


class RayCompute:
    """The workers of one scan, started at its first search with the model, kept for its later ones
    (a screened scan searches twice), stopped at its end."""

    continues_searches = False  # searches running on workers at a stop restart on resume (no carry)

    def __init__(self, cfg: Config, bus: ev.EventBus, started: bool) -> None:
        self.cfg, self.bus, self.started = cfg, bus, started
        self.workers: list[_Worker] = []
        self.spares = 0  # replacements allowed when every worker has died
        self.call_ids = itertools.count()
        self.token = uuid.uuid4().hex[:8]
        self.options: dict[str, float] = {}
        self.on_gpu = False
        self.model_ref: Any = None
        self.x_ref: Any = None

    @classmethod
    def connect(cls, cfg: Config, bus: ev.EventBus) -> RayCompute:
        return cls(cfg, bus, init_ray(cfg.compute))

    def alive(self) -> list[_Worker]:
        return [w for w in self.workers if w.alive]

    def search(self, request: SearchRequest) -> tuple[int, bool]:
        """search_triggers' contract, over the workers. `group_size` is the driver's choice: workers
        choose their own for their device unless the config fixed it (group_size or sequential).
        `carry` is not used: searches running on workers when a scan stops start again on resume."""
        jobs, stop = request.jobs, request.stop
        if not jobs:
            return 0, False
        if not self.workers and not self._start(request.model, len(jobs), stop):
            return 0, True
        self.x_ref = ray.put(request.x_opt.detach().cpu().numpy())
        for worker in self.alive():
            self._load_samples(worker)
        s = self.cfg.scan
        group = 1 if s.strategy == "sequential" else s.group_size
        return _Dispatch(self, jobs, request.settings, group, stop, request.on_step, request.on_done).run()

    def _load_samples(self, worker: _Worker) -> None:
        try:
            ray.get(worker.handle.set_samples.remote(self.x_ref))
        except WORKER_LOST as exc:
            self.lose(worker, exc, [])

    def _start(self, model: nn.Module, jobs: int, stop: threading.Event) -> bool:
        """Start the workers with the model; False when stopped while they start."""
        count, self.options, self.on_gpu = worker_plan(
            self.cfg.compute, self.cfg.scan.device, ray.cluster_resources(), jobs
        )
        self.model_ref = ray.put(pack_model(model))
        self.spares = count
        self.workers = [self._spawn(i) for i in range(count)]
        pending = {w.handle.where.remote(): w for w in self.workers}
        waited = 0.0
        while pending and not stop.is_set():
            ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_SECONDS)
            for ref in ready:
                worker = pending.pop(ref)
                try:
                    worker.where = ray.get(ref)
                except (RayActorError, RayTaskError) as exc:
                    raise ComputeError(f"a Ray worker could not start: {first_line(exc)}") from None
            waited += POLL_SECONDS
            if pending and waited > START_SECONDS:
                raise ComputeError(
                    f"only {count - len(pending)} of {count} Ray workers started within "
                    f"{START_SECONDS:.0f} s; the cluster has {ray.cluster_resources()} "
                    "([compute].workers sets fewer)"
                )
        return not pending

    def _spawn(self, index: int) -> _Worker:
        threads = max(1, int(self.options.get("num_cpus", 1)))
        # mypy keeps a decorated class's own type; @ray.remote made SearchWorker an ActorClass
        handle = SearchWorker.options(  # type: ignore[attr-defined]
            name=f"nc-tui-{self.token}-w{index}", **self.options
        ).remote(self.model_ref, threads, self.on_gpu)
        return _Worker(index, handle)

    def replacement(self) -> _Worker:
        """A new worker when none is left, up to as many as were started; then the scan gives up."""
        if self.spares <= 0:
            raise ComputeError(
                "every Ray worker died, and so did their replacements; the finished trials "
                "are kept: resume the run once the cluster is healthy"
            )
        self.spares -= 1
        worker = self._spawn(len(self.workers))
        self.workers.append(worker)
        try:
            worker.where = ray.get(worker.handle.where.remote(), timeout=START_SECONDS)
            ray.get(worker.handle.set_samples.remote(self.x_ref), timeout=START_SECONDS)
        except (*WORKER_LOST, RayTaskError, GetTimeoutError) as exc:
            raise ComputeError(f"a replacement Ray worker could not start: {first_line(exc)}") from None
        return worker

    def lose(self, worker: _Worker, exc: BaseException, orphans: list[Job]) -> None:
        """A worker died: say so, and (by the caller) deal its unfinished jobs to the others."""
        worker.alive = False
        try:
            ray.kill(worker.handle, no_restart=True)
        except Exception:  # noqa: BLE001 - it is gone already
            pass
        message = f"Ray worker {worker.describe()} died ({type(exc).__name__})"
        if orphans:
            labels = ", ".join(str(j.label) for j in orphans)
            message += f"; its {len(orphans)} unfinished search(es) (label(s) {labels}) run again on another worker"
        self.bus.warn(message)

    def close(self) -> None:
        """Stop every worker (cancelling what they still run); shut down a Ray this scan started."""
        for worker in self.workers:
            try:
                ray.kill(worker.handle, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead or the cluster is gone
                pass
        self.workers, self.model_ref, self.x_ref = [], None, None
        if self.started and ray.is_initialized():
            shutdown_ray()


@dataclass
class _Dispatch:
    """One search_triggers call over the workers: deal, poll, re-deal after a death, halt on stop."""

    compute: RayCompute
    jobs: list[Job]
    settings: SearchSettings
    group: int
    stop: threading.Event
    on_step: Callable[[StepStats, int], None]
    on_done: Callable[[TrialOutcome], None]
    finished: set[tuple[int, int, str]] = field(default_factory=set)
    calls: dict[Any, _Call] = field(default_factory=dict)
    polls: dict[int, Any] = field(default_factory=dict)  # worker index -> its outstanding poll
    images: dict[int, int] = field(default_factory=dict)  # call -> stamped images it processed

    def run(self) -> tuple[int, bool]:
        self._deal(self.jobs)
        while self.calls:
            if self.stop.is_set():
                self._halt()
                return sum(self.images.values()), True
            self._round()
        return sum(self.images.values()), False

    def _deal(self, jobs: list[Job]) -> None:
        """Round-robin over the live workers (a replacement when none is left)."""
        workers = self.compute.alive() or [self.compute.replacement()]
        for k, worker in enumerate(workers):
            mine = jobs[k :: len(workers)]
            if mine:
                ident = next(self.compute.call_ids)
                ref = worker.handle.run.remote(ident, mine, self.settings, self.group)
                self.calls[ref] = _Call(worker, mine, ident)
                for job in mine:
                    self.compute.bus.emit(
                        ev.JobPlaced(label=job.label, trial=job.trial, stage=job.stage, worker=worker.describe())
                    )

    def _round(self) -> None:
        """Wait a poll interval (less if everything finishes), then take what the workers reported."""
        busy = {c.worker.index: c.worker for c in self.calls.values()}
        for index, worker in busy.items():
            if index not in self.polls:
                self.polls[index] = worker.handle.poll.remote()
        refs = list(self.polls.values()) + list(self.calls)
        ready = set(ray.wait(refs, num_returns=len(refs), timeout=POLL_SECONDS)[0])
        for index, ref in list(self.polls.items()):
            if ref in ready and index in busy:
                del self.polls[index]
                self._take(busy[index], ref)
        for ref, call in list(self.calls.items()):
            if ref in ready and call.worker.alive:
                self._finish(ref, call)

    def _take(self, worker: _Worker, ref: Any, timeout: float | None = None) -> bool:
        """Deliver one poll's reports; False (and its jobs dealt again) when the worker is gone."""
        try:
            events: list[WorkerEvent] = ray.get(ref, timeout=timeout)
        except WORKER_LOST as exc:
            self._lost(worker, exc)
            return False
        # a poll carries each search's latest mask only (ray_worker.thin_steps): its earlier steps show it too
        latest = {item.job.key: item.mask for kind, _, item, _ in events if kind == "step" and item.mask is not None}
        for kind, call, item, images in events:
            key = item.job.key
            if key in self.finished:
                continue
            if kind == "done":
                self.finished.add(key)
                item.mask, item.pattern = np.array(item.mask), np.array(item.pattern)  # writable, not the store's
                self.on_done(item)
                continue
            self.images[call] = max(self.images.get(call, 0), images)
            item.mask = item.mask if item.mask is not None else latest.get(key)
            self.on_step(item, sum(self.images.values()))
        return True

    def _finish(self, ref: Any, call: _Call) -> None:
        """A worker's search call returned: take its last reports, then its result."""
        worker = call.worker
        if worker.index in self.polls and not self._take(worker, self.polls.pop(worker.index)):
            return
        if not self._take(worker, worker.handle.poll.remote()):
            return
        try:
            ray.get(ref)
        except WORKER_LOST as exc:
            self._lost(worker, exc)
            return
        except RayTaskError as exc:
            raise exc.as_instanceof_cause() from None
        del self.calls[ref]

    def _lost(self, worker: _Worker, exc: BaseException) -> None:
        if not worker.alive:
            return
        mine = [ref for ref, call in self.calls.items() if call.worker is worker]
        orphans = [job for ref in mine for job in self.calls[ref].jobs if job.key not in self.finished]
        for ref in mine:
            del self.calls[ref]
        self.polls.pop(worker.index, None)
        if self.stop.is_set():  # halting: they run again on resume
            orphans = []
        self.compute.lose(worker, exc, orphans)
        if orphans:
            self._deal(orphans)

    def _halt(self) -> None:
        """Stop every worker at its next mini-batch and keep the trials they finished before it."""
        busy = {c.worker.index: c.worker for c in self.calls.values() if c.worker.alive}
        for worker in busy.values():
            worker.handle.halt.remote()
        if self.calls:
            ray.wait(list(self.calls), num_returns=len(self.calls), timeout=HALT_SECONDS)
        for index, worker in busy.items():
            try:
                if index in self.polls:
                    self._take(worker, self.polls.pop(index), HALT_SECONDS)
                self._take(worker, worker.handle.poll.remote(), HALT_SECONDS)
            except GetTimeoutError:
                continue  # unresponsive: its unreported trials run again on resume
        self.calls.clear()
