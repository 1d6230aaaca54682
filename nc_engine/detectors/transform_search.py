"""Transform search: per label, the weakest image-wide transform of a kind that turns clean images into it.

Neural Cleanse's trigger is a mask and a pattern, so it sees a backdoor only when the trigger is a small
patch. Many attacks change the whole image a little instead: a blended picture (Blended), an additive
signal (SIG, noise), a colour filter, a smooth warp (WaNet). For each such kind of transform this search
asks, per label, how strong one transform shared by every clean image must be before the model calls
them that label. A backdoor taught with a trigger of that kind makes its target reachable at a strength
far below the other labels' (as a patch backdoor makes its target's mask small), whatever its pattern.

The strength grows geometrically over the steps while the transform's direction (its pattern, matrix or
flow) is learned by Adam at the current strength; a label's cost is the first strength at which the
attack rate on the step's images reaches `attack_rate`. It needs clean images and the model's inputs and
outputs only, so it works on every model format the scanner loads.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nc_engine.detectors.max_margin import Adam
from nc_engine.detectors.transform_result import KINDS as JUDGED
from nc_engine.detectors.transform_result import WEAKEST, TransformResult

# kind -> (weakest, strongest) strength tried: blend opacity; additive RMS in [0, 1] pixel units; the colour
# filter's distance from the identity (Frobenius, matrix and offset together); mean warp in pixels. The
# strongest is the test's (transform_result.KINDS), which counts a label never reached past it.
WEAKEST_TRIED = {"blend": 0.005, "additive": 0.002, "filter": 0.005, "warp": 0.05}
STRENGTHS = {kind: (WEAKEST_TRIED[kind], JUDGED[kind][1]) for kind in JUDGED}
assert min(WEAKEST_TRIED.values()) > WEAKEST  # a saved cost under WEAKEST reads as damage
KINDS = tuple(STRENGTHS)
WARP_GRID = 4  # the flow's control points per side (WaNet's k), upsampled to the image
# Transformed images per forward pass: a step's labels x images go through the model in chunks of labels,
# so 1,000 labels x 8 images need no 8,000-image batch. Labels do not interact (the loss is a sum over
# them and Adam is elementwise), so the chunk size changes memory, and the costs only by float rounding
# (another batch size can take another kernel).
BATCH = 512


@dataclass(frozen=True)
class TransformSettings:
    kinds: tuple[str, ...] = KINDS
    images: int = 24  # clean images per step, shared by every label, for up to `label_images` / images labels
    label_images: int = 240  # images per step over all labels: more labels share fewer images (at least 8)
    steps: int = 40
    lr: float = 0.1
    attack_rate: float = 0.9
    seed: int = 0

    def images_per_step(self, labels: int) -> int:
        """Clean images each step takes: the cost per kind is labels x this x steps."""
        return max(8, min(self.images, self.label_images // max(labels, 1)))

    def kinds_for(self, channels: int) -> tuple[str, ...]:
        """The kinds that can decide on these images: a colour filter needs colour (on grey images most
        labels are never reached by brightness and contrast alone, so the filter never decides)."""
        return tuple(k for k in self.kinds if k != "filter" or channels > 1)


def _unit(v: torch.Tensor) -> torch.Tensor:
    """Each label's row scaled to RMS 1 (the strength then sets its size)."""
    flat = v.flatten(1)
    return (flat / flat.pow(2).mean(1, keepdim=True).clamp_min(1e-12).sqrt()).view_as(v)


class _Transform:
    """One kind's per-label parameters and how a strength applies them to images."""

    def __init__(self, kind: str, labels: int, shape: tuple[int, int, int], generator: torch.Generator):
        c, h, w = shape
        self.kind, self.shape = kind, shape
        size = {
            "blend": (labels, c, h, w),
            "additive": (labels, c, h, w),
            "filter": (labels, c * c + c),
            "warp": (labels, 2, WARP_GRID, WARP_GRID),
        }[kind]
        self.raw = (torch.randn(size, generator=generator) * (1.0 if kind != "blend" else 0.5)).requires_grad_(True)
        if kind == "warp":
            ys, xs = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
            self.identity = torch.stack([xs, ys], dim=-1)[None]
            self.pixel = torch.tensor([2.0 / max(w - 1, 1), 2.0 / max(h - 1, 1)])

    def to(self, device: torch.device) -> _Transform:
        self.raw = self.raw.detach().to(device).requires_grad_(True)
        for name in ("identity", "pixel"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name).to(device))
        return self

    def apply(self, x: torch.Tensor, strength: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] -> (labels, B, C, H, W): each label's transform at `strength` (one
        per label in `rows`)."""
        raw = self.raw[rows]
        k, (c, h, w) = len(raw), self.shape
        s = strength.view(k, 1, 1, 1, 1)
        if self.kind == "blend":
            pattern = torch.sigmoid(raw)[:, None]
            return (1 - s) * x[None] + s * pattern
        if self.kind == "additive":
            return (x[None] + s * _unit(raw)[:, None]).clamp(0, 1)
        if self.kind == "filter":
            v = _unit(raw) * strength[:, None] / math.sqrt(raw.shape[1])  # Frobenius norm = strength
            matrix = torch.eye(c, device=x.device) + v[:, : c * c].view(k, c, c)
            out = torch.einsum("kij,bjhw->kbihw", matrix, x) + v[:, c * c :].view(k, 1, c, 1, 1)
            return out.clamp(0, 1)
        flow = F.interpolate(_unit(raw), size=(h, w), mode="bicubic", align_corners=True)
        flow = flow.permute(0, 2, 3, 1) * strength.view(k, 1, 1, 1) * self.pixel  # mean size ~ strength pixels
        grid = (self.identity + flow).clamp(-1, 1)  # (labels, H, W, 2)
        b = len(x)
        grid = grid[:, None].expand(k, b, h, w, 2).reshape(k * b, h, w, 2)
        xs = x[None].expand(k, b, c, h, w).reshape(k * b, c, h, w)
        out = F.grid_sample(xs, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.view(k, b, c, h, w)


def _search(
    model: nn.Module,
    kind: str,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    settings: TransformSettings,
    generator: torch.Generator,
    stop: threading.Event,
) -> tuple[np.ndarray, int]:
    """(per-label cost: the first strength reaching the attack rate, NaN where none did; images)."""
    device = x.device
    lo, hi = STRENGTHS[kind]
    c, h, w = x.shape[1:]
    transform = _Transform(kind, num_classes, (c, h, w), generator).to(device)
    opt = Adam(transform.raw, lr=settings.lr)
    labels = torch.arange(num_classes, device=device)
    cost = torch.full((num_classes,), float("nan"))
    images = 0
    for step in range(settings.steps):
        if stop.is_set():
            break
        strength = lo * (hi / lo) ** (step / max(settings.steps - 1, 1))
        pick = torch.randperm(len(x), generator=generator)[: settings.images_per_step(num_classes)].to(device)
        xb, yb = x[pick], y[pick]
        per_pass = max(1, BATCH // len(xb))
        opt.zero_grad()
        for begin in range(0, num_classes, per_pass):
            rows = slice(begin, min(begin + per_pass, num_classes))
            k = rows.stop - rows.start
            out = transform.apply(xb, torch.full((k,), strength, device=device), rows)
            logits = model(out.flatten(0, 1)).float().view(k, len(xb), -1)
            target = labels[rows, None].expand(k, len(xb))
            others = yb[None, :] != labels[rows, None]  # a label's own images say nothing about its attack
            loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target)
            with torch.no_grad():
                hit = ((logits.argmax(-1) == target) & others).sum(1).float() / others.sum(1).clamp_min(1)
                chunk = cost[rows]  # a view: the chunk's labels' costs
                chunk[(hit.cpu() >= settings.attack_rate) & torch.isnan(chunk)] = strength
            (loss * others).sum().backward()
        opt.step()
        images += num_classes * len(xb)
    return cost.numpy().astype(np.float64), images


def search(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    settings: TransformSettings,
    stop: threading.Event | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> TransformResult:
    """Each kind's per-label cost on clean images `x` (N, C, H, W in [0, 1]) with labels `y`."""
    stop = stop or threading.Event()
    started = time.perf_counter()
    generator = torch.Generator().manual_seed(settings.seed)
    costs: dict[str, list[float | None]] = {}
    images = 0
    kinds = settings.kinds_for(x.shape[1])
    for done, kind in enumerate(kinds):
        values, n = _search(model, kind, x, y, num_classes, settings, generator, stop)
        costs[kind] = [float(v) if math.isfinite(v) else None for v in values]
        images += n
        if on_progress:
            on_progress(done + 1, len(kinds))
        if stop.is_set():
            break
    return TransformResult.judged(costs, images, time.perf_counter() - started, asdict(settings))
