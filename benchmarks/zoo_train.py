"""Training for the zoo: seeded, on uint8 arrays, normalised exactly as the model's scan config says."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nc_engine.demo import unit_tensor


def to_tensor(x: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 N x H x W (grey) or N x H x W x C -> normalised float N x C x H x W."""
    t = unit_tensor(x)
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    return ((t - m) / s).contiguous()


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
          epochs: int, seed: int, device: torch.device, lr: float = 2e-3, batch_size: int = 128) -> nn.Module:
    """Adam with a linear decay to zero; no augmentation (a flip would move a corner trigger)."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = to_tensor(x, mean, std).to(device), torch.from_numpy(y).to(device)
    model = model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(xt) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1 - k / steps)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).to(device).split(batch_size):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
             device: torch.device) -> float:
    model.eval()
    hits = 0
    for start in range(0, len(x), 2000):
        xt = to_tensor(x[start:start + 2000], mean, std).to(device)
        hits += int((model(xt).argmax(1).cpu().numpy() == y[start:start + 2000]).sum())
    return hits / max(1, len(x))
