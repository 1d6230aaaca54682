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

from .schedule import CostSchedule, ScheduleRules
from .trigger import initial_trigger, stamp, unit_from_raw


@dataclass(frozen=True)
class Job:
    label: int
    trial: int
    seed: int


@dataclass
class SearchSettings:
    rules: ScheduleRules
    lr: float = 0.1
    betas: tuple[float, float] = (0.5, 0.9)
    adam_eps: float = 1e-8
    batch_size: int = 32
    max_steps: int = 1000
    bf16: bool = False
    channels_last: bool = False


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


class _Group:
    """Device tensors of the running slots; row g belongs to slots[g]."""

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

    _ROWS = ("raw_mask", "raw_pattern", "m_mask", "v_mask", "m_pattern", "v_pattern", "best_mask",
             "best_pattern", "t", "cost", "target")

    def add(self, job: Job) -> None:
        raw_mask, raw_pattern = initial_trigger(job.seed, self.shape)
        raw_mask, raw_pattern = raw_mask.to(self.device), raw_pattern.to(self.device)
        row = dict(raw_mask=raw_mask, raw_pattern=raw_pattern, m_mask=torch.zeros_like(raw_mask),
                   v_mask=torch.zeros_like(raw_mask), m_pattern=torch.zeros_like(raw_pattern),
                   v_pattern=torch.zeros_like(raw_pattern), best_mask=unit_from_raw(raw_mask),
                   best_pattern=unit_from_raw(raw_pattern), t=torch.zeros((), device=self.device),
                   cost=torch.zeros((), device=self.device),
                   target=torch.tensor(job.label, device=self.device))
        for name in self._ROWS:
            setattr(self, name, torch.cat([getattr(self, name).detach(), row[name].unsqueeze(0)]))

    def keep(self, rows: list[int]) -> None:
        index = torch.tensor(rows, dtype=torch.long, device=self.device)
        for name in self._ROWS:
            setattr(self, name, getattr(self, name).detach().index_select(0, index))

    def adam_step(self, lr: float, betas: tuple[float, float], eps: float) -> None:
        """torch.optim.Adam's update, with a step count per row so each slot has fresh state."""
        b1, b2 = betas
        with torch.no_grad():
            self.t += 1
            bc1 = 1 - b1 ** self.t  # (G,)
            bc2 = 1 - b2 ** self.t
            for p, m, v in ((self.raw_mask, self.m_mask, self.v_mask),
                            (self.raw_pattern, self.m_pattern, self.v_pattern)):
                view = (-1,) + (1,) * (p.dim() - 1)
                grad = p.grad
                m.mul_(b1).add_(grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                denom = (v.sqrt() / bc2.sqrt().view(view)).add_(eps)
                p.sub_((lr / bc1).view(view) * m / denom)
                p.grad = None


def search_triggers(
    model: nn.Module,
    x_opt: torch.Tensor,
    jobs: list[Job],
    settings: SearchSettings,
    group_size: int,
    stop: threading.Event,
    on_step: Callable[[StepStats, int], None],
    on_done: Callable[[TrialOutcome], None],
) -> tuple[int, bool]:
    """Run every job; returns (stamped images processed, stopped early).

    x_opt: (N, C, H, W) optimisation samples in [0, 1] on the model's device. Jobs that are still
    running when `stop` is set are dropped (they restart from scratch on resume).
    """
    device = x_opt.device
    n, c, h, w = x_opt.shape
    bsz = settings.batch_size
    batches = max(1, n // bsz)
    rules = settings.rules
    waiting = deque(jobs)
    slots: list[tuple[Job, CostSchedule, float]] = []
    group = _Group([c, h, w], device)
    images = 0
    use_bf16 = settings.bf16 and device.type == "cuda"
    memory_format = torch.channels_last if settings.channels_last and device.type == "cuda" else None

    def fill() -> None:
        while len(slots) < group_size and waiting:
            job = waiting.popleft()
            group.add(job)
            slots.append((job, CostSchedule(rules), time.perf_counter()))

    fill()
    while slots:
        g_count = len(slots)
        # Each job's mini-batch order depends only on (its seed, its step), as in a sequential run.
        order = torch.stack([
            torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(job.seed, sched.steps)))
            [: batches * bsz] for job, sched, _ in slots]).to(device)  # (G, batches * B)
        sums = torch.zeros((g_count, 4), device=device)  # loss, ce, l1, attack acc
        group.raw_mask.requires_grad_(True)
        group.raw_pattern.requires_grad_(True)
        for k in range(batches):
            if stop.is_set():
                return images, True
            idx = order[:, k * bsz:(k + 1) * bsz]  # (G, B)
            mask = unit_from_raw(group.raw_mask)  # (G, H, W)
            pattern = unit_from_raw(group.raw_pattern)  # (G, C, H, W)
            stamped = stamp(x_opt[idx], mask[:, None, None], pattern[:, None])  # (G, B, C, H, W)
            stamped = stamped.reshape(g_count * bsz, c, h, w)
            if memory_format is not None:
                stamped = stamped.contiguous(memory_format=memory_format)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(stamped)
            logits = logits.float()
            targets = group.target.repeat_interleave(bsz)
            ce = F.cross_entropy(logits, targets, reduction="none").view(g_count, bsz).mean(1)  # (G,)
            l1 = mask.sum((1, 2))  # (G,)
            loss = ce + group.cost * l1
            loss.sum().backward()
            group.adam_step(settings.lr, settings.betas, settings.adam_eps)
            with torch.no_grad():
                acc = (logits.argmax(1) == targets).float().view(g_count, bsz).mean(1)
                sums += torch.stack([loss, ce, l1, acc], 1).detach()
            images += g_count * bsz
        group.raw_mask.requires_grad_(False)
        group.raw_pattern.requires_grad_(False)

        stats = (sums / batches).cpu().tolist()  # one device sync per step
        with torch.no_grad():
            masks = unit_from_raw(group.raw_mask)
            masks_cpu = masks.cpu().numpy()
        finished: list[tuple[int, str]] = []
        for g, (job, sched, _) in enumerate(slots):
            loss_v, ce_v, l1_v, acc_v = stats[g]
            if not math.isfinite(loss_v):
                finished.append((g, "nan"))
                continue
            improved, reason = sched.update(acc_v, l1_v)
            if improved:
                with torch.no_grad():
                    group.best_mask[g] = masks[g]
                    group.best_pattern[g] = unit_from_raw(group.raw_pattern[g])
            group.cost[g] = sched.cost
            on_step(StepStats(job, sched.steps, loss_v, ce_v, l1_v, acc_v, sched.cost,
                              sched.best_l1 if sched.best_l1 < math.inf else None, masks_cpu[g]), images)
            if reason is None and sched.steps >= settings.max_steps:
                reason = "max_steps"
            if reason is not None:
                finished.append((g, reason))
        if not finished:
            continue
        done_rows = {g for g, _ in finished}
        for g, reason in finished:
            job, sched, started = slots[g]
            converged = sched.best_l1 < math.inf
            mask_g, pattern_g = group.best_mask[g], group.best_pattern[g]
            if not converged:  # no successful step: report the last trigger, or the initial one if NaN ate it
                last_mask, last_pattern = unit_from_raw(group.raw_mask[g]), unit_from_raw(group.raw_pattern[g])
                if bool(torch.isfinite(last_mask).all() and torch.isfinite(last_pattern).all()):
                    mask_g, pattern_g = last_mask, last_pattern
            mask_np = mask_g.detach().float().cpu().numpy()
            on_done(TrialOutcome(job, mask_np, pattern_g.detach().float().cpu().numpy(),
                                 float(mask_np.sum(dtype=np.float64)), converged, sched.steps, reason,
                                 time.perf_counter() - started))
        keep = [g for g in range(g_count) if g not in done_rows]
        slots = [slots[g] for g in keep]
        group.keep(keep)
        fill()
    return images, False
