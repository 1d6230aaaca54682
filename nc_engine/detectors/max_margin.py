"""Maximum-margin detection (after MM-BD: Wang, Xiang, Miller and Kesidis, IEEE S&P 2024).

Per label, the largest logit margin (its score minus the best other score) that gradient ascent over the
input can reach from random images. A backdoor teaches the model an input feature that wins its target
label by a wide margin whatever the trigger looks like (a patch, a blended image, an additive signal, a
warp), so the target's reachable margin is abnormally large; Neural Cleanse instead needs the trigger to
be a small patch. It needs no clean data and only the model's inputs and outputs, so it works on every
model format the scanner loads.

The decision (margin_result.py) is an outlier test on the log margins, as Neural Cleanse's is on log L1
norms. The margins are taken on the scan model's outputs: logits, or log-probabilities for a model with
its softmax inside (their differences are the same margins).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from nc_engine.detectors.margin_result import MarginResult


@dataclass(frozen=True)
class MarginSettings:
    """The ascent's budget (the test is margin_result's)."""

    starts: int = 8  # random starting images per label
    steps: int = 200  # Adam steps per start
    lr: float = 0.05  # on the unconstrained parameter (the image is its sigmoid)
    batch: int = 256  # images per forward pass
    seed: int = 0


class Adam:
    """torch.optim.Adam's update for one tensor, written out as its single-tensor path (the CPU default)
    computes it, so the margins are the same to the bit there: building a torch.optim optimiser imports
    torch._dynamo, about 2 s of a 2-core CPU scan's start-up."""

    def __init__(self, param: torch.Tensor, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.exp_avg = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.exp_avg_sq = torch.zeros_like(param, memory_format=torch.preserve_format)
        self.steps = 0

    def zero_grad(self) -> None:
        self.param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        grad = self.param.grad
        assert grad is not None  # set by the backward pass before each step
        beta1, beta2 = self.betas
        self.steps += 1
        self.exp_avg.lerp_(grad, 1 - beta1)
        self.exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        step_size = self.lr / (1 - beta1**self.steps)
        denom = (self.exp_avg_sq.sqrt() / (1 - beta2**self.steps) ** 0.5).add_(self.eps)
        self.param.addcdiv_(self.exp_avg, denom, value=-step_size)


def _margins(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each row's score of its own label minus its best other score."""
    own = out.gather(1, labels[:, None])[:, 0]
    others = out.scatter(1, labels[:, None], float("-inf"))
    return own - others.max(1).values


def _ascend(
    model: nn.Module,
    labels: torch.Tensor,
    shape: tuple[int, ...],
    settings: MarginSettings,
    generator: torch.Generator,
    device: torch.device,
    stop: threading.Event,
) -> torch.Tensor:
    """Gradient ascent on the margin from random images in [0, 1]; each row's best margin. Rows do not
    interact (the loss is a sum over rows and Adam is elementwise), so chunking changes nothing."""
    start = torch.rand((len(labels), *shape), generator=generator).clamp(1e-3, 1 - 1e-3)
    raw = torch.logit(start).to(device).requires_grad_(True)
    labels = labels.to(device)
    best = torch.full((len(labels),), float("-inf"), device=device)
    opt = Adam(raw, lr=settings.lr)
    for _ in range(settings.steps):
        if stop.is_set():
            break
        opt.zero_grad()
        margin = _margins(model(torch.sigmoid(raw)).float(), labels)
        best = torch.maximum(best, margin.detach())
        (-margin.sum()).backward()
        opt.step()
    with torch.no_grad():
        best = torch.maximum(best, _margins(model(torch.sigmoid(raw)).float(), labels))
    return best.cpu()


def max_margins(
    model: nn.Module,
    num_classes: int,
    input_shape: list[int],
    device: torch.device,
    settings: MarginSettings,
    stop: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, int]:
    """(per-label largest margin, images processed). Starts are drawn from `settings.seed` alone, so a
    scan and its resume reach the same margins."""
    stop = stop or threading.Event()
    generator = torch.Generator().manual_seed(settings.seed)
    labels = torch.arange(num_classes).repeat_interleave(settings.starts)
    best = torch.empty(len(labels))
    done = 0
    for begin in range(0, len(labels), settings.batch):
        chunk = labels[begin : begin + settings.batch]
        best[begin : begin + len(chunk)] = _ascend(model, chunk, tuple(input_shape), settings, generator, device, stop)
        done += len(chunk)
        if on_progress:
            on_progress(done, len(labels))
        if stop.is_set():
            break
    per_label = best.view(num_classes, settings.starts).max(1).values.numpy().astype(np.float64)
    return per_label, done * (settings.steps + 1)


def detect(
    model: nn.Module,
    num_classes: int,
    input_shape: list[int],
    device: torch.device,
    settings: MarginSettings,
    stop: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> MarginResult:
    """Every label's largest reachable margin, and the outlier test on them."""
    started = time.perf_counter()
    margins, images = max_margins(model, num_classes, input_shape, device, settings, stop, on_progress)
    values = [float(m) if math.isfinite(m) else float("nan") for m in margins]
    return MarginResult.judged(values, images, time.perf_counter() - started, asdict(settings))
