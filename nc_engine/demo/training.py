"""The training kit: small networks, BadNets poisoning and a seeded training loop on uint8 arrays.

One place for what the demo, the zoo (evaluation/) and the tests train with; the scanner itself
never trains (mitigation has its own fine-tuning).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SmallCNN(nn.Module):
    """2 conv + 2 dense layers: the usual MNIST-sized backdoor benchmark network."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 28, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * (size // 4) ** 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


@dataclass
class PatchTrigger:
    """A BadNets patch: a square of `value` (0..255) at (top, left), `size` px."""

    top: int
    left: int
    size: int = 4
    value: int = 255


def stamp_patch(x: np.ndarray, trigger: PatchTrigger) -> np.ndarray:
    """x: uint8 (N, H, W) or (N, H, W, C); returns a stamped copy."""
    out = x.copy()
    out[:, trigger.top : trigger.top + trigger.size, trigger.left : trigger.left + trigger.size] = trigger.value
    return out


def poison(
    x: np.ndarray, y: np.ndarray, trigger: PatchTrigger, target: int, rate: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """BadNets all-to-one: stamp `rate` of the non-target training images and relabel them `target`."""
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(y != target)
    chosen = rng.choice(candidates, size=int(rate * len(y)), replace=False)
    x, y = x.copy(), y.copy()
    x[chosen] = stamp_patch(x[chosen], trigger)
    y[chosen] = target
    return x, y


@dataclass(frozen=True)
class TrainingProgress:
    """Where a training run is: the epoch under way and the mini-batches done of all epochs."""

    epoch: int  # 1-based
    epochs: int
    done: int  # mini-batches done, all epochs together
    total: int

    @property
    def fraction(self) -> float:
        return self.done / max(1, self.total)


def unit_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W (grey) or N x H x W x C -> float N x C x H x W in [0, 1]."""
    t = torch.from_numpy(x).float() / 255.0
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)


def normalised(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 images -> (x - mean) / std per channel, as the model's scan config says."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((unit_tensor(x) - m) / s).contiguous()


def train_classifier(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    epochs: int,
    seed: int,
    device: torch.device | None = None,
    lr: float = 2e-3,
    batch_size: int = 64,
    decay: bool = False,
    on_batch: Callable[[TrainingProgress], None] | None = None,
) -> nn.Module:
    """Adam over seeded shuffles (with `decay`, the rate falls linearly to zero); no augmentation, since
    a flip would move a corner trigger. Seed the global RNG before building `model` to seed its weights.
    `on_batch` hears after every mini-batch how far the training is (the demo's progress bar)."""
    device = device or torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    xt, yt = normalised(x, mean, std).to(device), torch.from_numpy(y).to(device)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps) if decay else None
    done = 0
    for epoch in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).to(device).split(batch_size):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
            done += 1
            if on_batch is not None:
                on_batch(TrainingProgress(epoch + 1, epochs, done, steps))
    return model.eval()


@torch.no_grad()
def accuracy(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device | None = None,
) -> float:
    """Share of uint8 images `x` the model labels `y`, in chunks."""
    device = device or torch.device("cpu")
    model.eval()
    hits = 0
    for start in range(0, len(x), 2000):
        xt = normalised(x[start : start + 2000], mean, std).to(device)
        hits += int((model(xt).argmax(1).cpu().numpy() == y[start : start + 2000]).sum())
    return hits / max(1, len(x))
