"""Evaluation on clean held-out data: clean accuracy, and the attack success rate of a trigger."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from nc_engine.detectors.neural_cleanse.trigger import stamp

EVAL_BATCH = 512


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted labels of x (N, C, H, W) in [0, 1], in chunks."""
    out = [model(x[i : i + EVAL_BATCH]).argmax(1) for i in range(0, len(x), EVAL_BATCH)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=x.device)


def clean_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y).float().mean()) if len(x) else float("nan")


@torch.no_grad()
def attack_success_rate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, mask: np.ndarray, pattern: np.ndarray, target: int
) -> float:
    """Share of held-out images not already of class `target` that the stamped trigger sends there."""
    keep = y != target
    if not bool(keep.any()):
        return float("nan")
    m = torch.as_tensor(mask, dtype=x.dtype, device=x.device)
    p = torch.as_tensor(pattern, dtype=x.dtype, device=x.device)
    hits = 0
    xs = x[keep]
    for i in range(0, len(xs), EVAL_BATCH):
        hits += int((model(stamp(xs[i : i + EVAL_BATCH], m, p)).argmax(1) == target).sum())
    return hits / len(xs)
