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
    opt = torch.optim.Adam([raw], lr=settings.lr)
    for _ in range(settings.steps):
        if stop.is_set():
            break
        opt.zero_grad(set_to_none=True)
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
