"""Batched trigger search: G (label, trial) jobs optimised in one forward/backward pass.

Each slot of the group has its own mask, pattern, Adam state, lambda schedule, best-so-far and stop
state. The loss is a sum over slots and the model is frozen in eval mode, so every slot's gradient is
exactly the gradient its own one-label search would get: batching changes the speed, not the maths.
When a job finishes at a step boundary, the next waiting job takes its slot so the batch stays full.
`group_size = 1` is the sequential (one label at a time) reference path.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nc_engine.detectors.neural_cleanse.schedule import CostSchedule, SearchSettings
from nc_engine.detectors.neural_cleanse.trigger import initial_trigger, stamp, unit_from_raw
from nc_engine.run.inflight import (
    MASK_ARRAYS,
    PATTERN_ARRAYS,
    SCHEDULE_BOOLS,
    SCHEDULE_FLOATS,
    SCHEDULE_INTS,
    Carry,
    Key,
    SlotCheckpoint,
)


@dataclass(frozen=True)
class Job:
    label: int
    trial: int
    seed: int
    stage: str = "trial"  # "screen" for the cheap first pass of a screened scan

    @property
    def key(self) -> Key:
        """What run folders, checkpoints and progress know this search by."""
        return self.label, self.trial, self.stage


@dataclass
class StepStats:
    job: Job
    step: int
    loss: float
    ce: float
    l1: float
    attack_acc: float
    cost: float
    best_l1: float | None
    mask: np.ndarray  # (H, W), the current mask


@dataclass
class TrialOutcome:
    job: Job
    mask: np.ndarray  # (H, W) best mask, or the last one when the search never succeeded
    pattern: np.ndarray  # (C, H, W)
    l1_norm: float  # sum of the kept mask
    converged: bool  # some step reached the attack success threshold
    steps: int
    stop_reason: str  # early_stop | converged | max_steps | nan
    seconds: float


def step_seed(seed: int, step: int) -> int:
    """Seed of the mini-batch order of one job's step: the same in batched and sequential runs."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


class _SlotState:
    """Per-slot optimiser state on the device (mask, pattern, Adam moments, best, cost); row g is slots[g]."""

    def __init__(self, shape: list[int], device: torch.device) -> None:
        c, h, w = shape
        self.shape = shape
        self.device = device
        z = lambda *s: torch.zeros(s, device=device)  # noqa: E731
        self.raw_mask, self.raw_pattern = z(0, h, w), z(0, c, h, w)
        self.m_mask, self.v_mask = z(0, h, w), z(0, h, w)
        self.m_pattern, self.v_pattern = z(0, c, h, w), z(0, c, h, w)
        self.best_mask, self.best_pattern = z(0, h, w), z(0, c, h, w)
        self.t = z(0)
        self.cost = z(0)
        self.target = torch.zeros(0, dtype=torch.long, device=device)

    _ROWS = (
        "raw_mask",
        "raw_pattern",
        "m_mask",
        "v_mask",
        "m_pattern",
        "v_pattern",
        "best_mask",
        "best_pattern",
        "t",
        "cost",
        "target",
    )
    _STEPPED = ("raw_mask", "raw_pattern", "m_mask", "v_mask", "m_pattern", "v_pattern", "t")  # what a step changes

    def add(self, job: Job, saved: SlotCheckpoint | None = None, cost: float = 0.0) -> None:
        """A new row: the job's initial trigger, or the state a stopped run saved for it."""
        if saved is None:
            raw_mask, raw_pattern = (a.to(self.device) for a in initial_trigger(job.seed, self.shape))
            row = dict(
                raw_mask=raw_mask,
                raw_pattern=raw_pattern,
                m_mask=torch.zeros_like(raw_mask),
                v_mask=torch.zeros_like(raw_mask),
                m_pattern=torch.zeros_like(raw_pattern),
                v_pattern=torch.zeros_like(raw_pattern),
                best_mask=unit_from_raw(raw_mask),
                best_pattern=unit_from_raw(raw_pattern),
                t=torch.zeros(()),
            )
        else:
            row = {k: torch.from_numpy(v.copy()) for k, v in saved.arrays.items()}
            row["t"] = torch.tensor(saved.adam_t)
        row["cost"] = torch.tensor(cost)  # float32, as the schedule's cost is stored after every step
        row["target"] = torch.tensor(job.label)
        for name in self._ROWS:
            setattr(self, name, torch.cat([getattr(self, name).detach(), row[name].to(self.device).unsqueeze(0)]))

    def snapshot(self) -> list[torch.Tensor]:
        """Copies of what a step changes, to go back to the step's start if it is stopped midway."""
        return [getattr(self, name).detach().clone() for name in self._STEPPED]

    def restore(self, saved: list[torch.Tensor]) -> None:
        for name, value in zip(self._STEPPED, saved, strict=True):
            setattr(self, name, value)

    def row_arrays(self, g: int) -> dict[str, np.ndarray]:
        # a copy: on the CPU .numpy() shares the tensor's memory, which the next steps change in place
        return {
            name: getattr(self, name)[g].detach().float().cpu().numpy().copy() for name in MASK_ARRAYS + PATTERN_ARRAYS
        }

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for name in self._ROWS:
            setattr(self, name, getattr(self, name).detach().index_select(0, index))

    def adam_step(self, lr: float, betas: tuple[float, float], eps: float) -> None:
        """torch.optim.Adam's update, with a step count per row so each slot has fresh state."""
        b1, b2 = betas
        with torch.no_grad():
            self.t += 1
            bc1 = 1 - b1**self.t  # (G,)
            bc2 = 1 - b2**self.t
            for p, m, v in (
                (self.raw_mask, self.m_mask, self.v_mask),
                (self.raw_pattern, self.m_pattern, self.v_pattern),
            ):
                view = (-1,) + (1,) * (p.dim() - 1)
                grad = p.grad
                assert grad is not None  # set by the backward pass before each step
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = (v.sqrt() / bc2.sqrt().view(view)).add_(eps)
                p.sub_((lr / bc1).view(view) * m / denom)
                p.grad = None


@dataclass
class _Slot:
    job: Job
    sched: CostSchedule
    started: float
    before: float = 0.0  # search seconds spent by an earlier, stopped run of this job


def search_triggers(
    model: nn.Module,
    x_opt: torch.Tensor,
    jobs: list[Job],
    settings: SearchSettings,
    group_size: int,
    stop: threading.Event,
    on_step: Callable[[StepStats, int], None],
    on_done: Callable[[TrialOutcome], None],
    carry: Carry | None = None,
) -> tuple[int, bool]:
    """Run every job; returns (stamped images processed, stopped early).

    x_opt: (N, C, H, W) optimisation samples in [0, 1] on the model's device. Without `carry`, jobs still
    running when `stop` is set are dropped. With it, a job it holds a checkpoint for continues from that
    checkpoint, and the running jobs are handed to `carry.save` at the step boundary before the stop (and
    every `carry.every` seconds): a step stopped midway is undone, so the resume repeats it whole.
    """
    run = _GroupSearch(model, x_opt, settings, group_size, on_step, on_done, carry)
    waiting = deque(jobs)
    run.fill(waiting)
    saved_at = time.monotonic()
    while run.slots:
        sums = run.one_step(stop)
        if sums is None:
            if carry is not None:
                carry.save(run.checkpoints(), True)
            return run.images, True
        finished = run.update_schedules(sums)
        if finished:
            run.finish(finished)
            run.fill(waiting)
        if carry is not None and carry.every and run.slots and time.monotonic() - saved_at >= carry.every:
            carry.save(run.checkpoints(), False)
            saved_at = time.monotonic()
    return run.images, False


class _GroupSearch:
    """The running slots of a batched search and the step that advances them all together."""

    def __init__(
        self,
        model: nn.Module,
        x_opt: torch.Tensor,
        settings: SearchSettings,
        group_size: int,
        on_step: Callable[[StepStats, int], None],
        on_done: Callable[[TrialOutcome], None],
        carry: Carry | None = None,
    ) -> None:
        self.model, self.x_opt, self.settings, self.group_size = model, x_opt, settings, group_size
        self.on_step, self.on_done, self.carry = on_step, on_done, carry
        self.device = x_opt.device
        n, c, h, w = x_opt.shape
        self.batches = max(1, n // settings.batch_size)
        self.slots: list[_Slot] = []
        self.state = _SlotState([c, h, w], self.device)
        self.images = 0
        self.use_bf16 = settings.bf16 and self.device.type == "cuda"
        self.memory_format = torch.channels_last if settings.channels_last and self.device.type == "cuda" else None

    def fill(self, waiting: deque[Job]) -> None:
        while len(self.slots) < self.group_size and waiting:
            job = waiting.popleft()
            saved = self._saved(job)
            sched = CostSchedule(self.settings.rules)
            if saved is not None:
                sched = CostSchedule(self.settings.rules, **saved.schedule, best_history=saved.best_history.tolist())
            self.state.add(job, saved, sched.cost)
            self.slots.append(_Slot(job, sched, time.perf_counter(), saved.seconds if saved else 0.0))

    def _saved(self, job: Job) -> SlotCheckpoint | None:
        """The checkpoint a stopped run left for this job, if it fits this search (else said, and dropped)."""
        if self.carry is None:
            return None
        saved = self.carry.restored.pop(job.key, None)
        if saved is None:
            return None
        problem = saved.misfit(job.seed, len(self.x_opt), self.settings.batch_size, self.settings.max_steps)
        if problem is not None:
            self.carry.warn(f"{self.carry.where(saved.key)}: {problem}; that search starts again")
            return None
        return saved

    def checkpoints(self) -> list[SlotCheckpoint]:
        """Every running slot's state at this step boundary."""
        out = []
        for g, slot in enumerate(self.slots):
            sched, job = slot.sched, slot.job
            schedule = {k: getattr(sched, k) for k in SCHEDULE_INTS + SCHEDULE_BOOLS + SCHEDULE_FLOATS}
            out.append(
                SlotCheckpoint(
                    job.label,
                    job.trial,
                    job.seed,
                    job.stage,
                    g,
                    self.group_size,
                    len(self.x_opt),
                    self.settings.batch_size,
                    self.settings.max_steps,
                    float(self.state.t[g]),
                    slot.before + time.perf_counter() - slot.started,
                    schedule,
                    np.asarray(sched.best_history, np.float64),
                    self.state.row_arrays(g),
                )
            )
        return out

    def _order(self) -> torch.Tensor:
        """(G, batches * B): each job's mini-batch order depends only on (its seed, its step), as in a
        sequential run."""
        n, bsz = len(self.x_opt), self.settings.batch_size
        return torch.stack(
            [
                torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(s.job.seed, s.sched.steps)))[
                    : self.batches * bsz
                ]
                for s in self.slots
            ]
        ).to(self.device)

    def one_step(self, stop: threading.Event) -> torch.Tensor | None:
        """One pass over the optimisation samples for every slot: (G, 4) mean loss, ce, l1, attack
        accuracy; None when stopped midway."""
        g_count, bsz, st = len(self.slots), self.settings.batch_size, self.state
        order = self._order()
        sums = torch.zeros((g_count, 4), device=self.device)
        start = st.snapshot() if self.carry is not None else None  # a few small copies; the step is far larger
        st.raw_mask.requires_grad_(True)
        st.raw_pattern.requires_grad_(True)
        for k in range(self.batches):
            if stop.is_set():
                if start is not None and k:
                    st.restore(start)
                return None
            sums += self._mini_batch(order[:, k * bsz : (k + 1) * bsz])
            self.images += g_count * bsz
        st.raw_mask.requires_grad_(False)
        st.raw_pattern.requires_grad_(False)
        return sums / self.batches

    def _mini_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Forward, backward and an Adam step on (G, B) sample indices; returns (G, 4) statistics."""
        st, (g_count, bsz) = self.state, idx.shape
        c, h, w = self.x_opt.shape[1:]
        mask = unit_from_raw(st.raw_mask)  # (G, H, W)
        pattern = unit_from_raw(st.raw_pattern)  # (G, C, H, W)
        stamped = stamp(self.x_opt[idx], mask[:, None, None], pattern[:, None])  # (G, B, C, H, W)
        stamped = stamped.reshape(g_count * bsz, c, h, w)
        if self.memory_format is not None:
            stamped = stamped.contiguous(memory_format=self.memory_format)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.use_bf16):
            logits = self.model(stamped)
        logits = logits.float()
        targets = st.target.repeat_interleave(bsz)
        ce = F.cross_entropy(logits, targets, reduction="none").view(g_count, bsz).mean(1)  # (G,)
        l1 = mask.sum((1, 2))  # (G,)
        loss = ce + st.cost * l1
        loss.sum().backward()
        st.adam_step(self.settings.lr, self.settings.betas, self.settings.adam_eps)
        with torch.no_grad():
            acc = (logits.argmax(1) == targets).float().view(g_count, bsz).mean(1)
            return torch.stack([loss, ce, l1, acc], 1).detach()

    def update_schedules(self, means: torch.Tensor) -> list[tuple[int, str]]:
        """Feed each slot's step to its schedule, keep new bests, report progress; the slots that stop."""
        st = self.state
        stats = means.cpu().tolist()  # one device sync per step
        with torch.no_grad():
            masks = unit_from_raw(st.raw_mask)
            masks_cpu = masks.cpu().numpy()
        finished: list[tuple[int, str]] = []
        for g, slot in enumerate(self.slots):
            loss_v, ce_v, l1_v, acc_v = stats[g]
            if not math.isfinite(loss_v):
                finished.append((g, "nan"))
                continue
            sched = slot.sched
            improved, reason = sched.update(acc_v, l1_v)
            if improved:
                with torch.no_grad():
                    st.best_mask[g] = masks[g]
                    st.best_pattern[g] = unit_from_raw(st.raw_pattern[g])
            st.cost[g] = sched.cost
            self.on_step(
                StepStats(
                    slot.job,
                    sched.steps,
                    loss_v,
                    ce_v,
                    l1_v,
                    acc_v,
                    sched.cost,
                    sched.best_l1 if sched.best_l1 < math.inf else None,
                    masks_cpu[g],
                ),
                self.images,
            )
            if reason is None and sched.steps >= self.settings.max_steps:
                reason = "max_steps"
            if reason is not None:
                finished.append((g, reason))
        return finished

    def finish(self, finished: list[tuple[int, str]]) -> None:
        """Hand each stopped slot's trigger to on_done and free its row."""
        st = self.state
        for g, reason in finished:
            slot = self.slots[g]
            converged = slot.sched.best_l1 < math.inf
            mask_g, pattern_g = st.best_mask[g], st.best_pattern[g]
            if not converged:  # no successful step: report the last trigger, or the initial one if NaN ate it
                last_mask, last_pattern = unit_from_raw(st.raw_mask[g]), unit_from_raw(st.raw_pattern[g])
                if bool(torch.isfinite(last_mask).all() and torch.isfinite(last_pattern).all()):
                    mask_g, pattern_g = last_mask, last_pattern
            mask_np = mask_g.detach().float().cpu().numpy()
            self.on_done(
                TrialOutcome(
                    slot.job,
                    mask_np,
                    pattern_g.detach().float().cpu().numpy(),
                    float(mask_np.sum(dtype=np.float64)),
                    converged,
                    slot.sched.steps,
                    reason,
                    slot.before + time.perf_counter() - slot.started,
                )
            )
        done_rows = {g for g, _ in finished}
        keep = [g for g in range(len(self.slots)) if g not in done_rows]
        self.slots = [self.slots[g] for g in keep]
        st.keep(keep)
