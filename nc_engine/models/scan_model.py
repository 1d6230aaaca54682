"""The scanned model: the user's network behind its normalisation, returning logits or
log-probabilities; the device it runs on; and the checks that it is fit to scan."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from nc_engine.errors import ModelError

# Below this a probability's log gets no gradient. A confident model with its softmax inside gives the labels
# a stamped image is far from 1e-13 and less (a zoo model: every image with 30% of its pixels replaced), so
# a floor of 1e-12 froze their searches; 1e-30 keeps 1/p (the log's gradient) well inside float32.
PROB_FLOOR = 1e-30


class ScanModel(nn.Module):
    """`net` behind the model's normalisation; outputs are logits or log-probabilities."""

    if TYPE_CHECKING:  # buffers, registered in __init__ (a runtime annotation would change what TorchScript sees)
        mean: torch.Tensor
        std: torch.Tensor

    def __init__(
        self, net: nn.Module, mean: list[float], std: list[float], log_probs: bool, num_classes: int = 0
    ) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.log_probs = log_probs
        self.preprocessing: dict[str, list] = {}  # the mean, std and input_shape it was loaded with
        self.class_names: list[str] = []  # the model's own names, where its format records them

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) in [0, 1]
        out = self.net((x - self.mean) / self.std)
        if self.log_probs:
            out = torch.log(out.float().clamp_min(PROB_FLOOR))
        return out


def resolve_device(name: str) -> torch.device:
    """ "auto" -> the first CUDA device if there is one, else the CPU; a clear error for absent CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f'[scan].device = "{name}" but this machine has no CUDA device (use "cpu" or "auto")')
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ModelError(
                f'[scan].device = "{name}" but only {torch.cuda.device_count()} CUDA device(s) are present'
            )
    return torch.device(name)


def forward_is_deterministic(model: nn.Module, x: torch.Tensor, atol: float = 1e-5) -> bool:
    """Two forwards of the same batch agree: false for a model whose dropout stayed on (e.g. a TorchScript
    trace made in train mode, which .eval() cannot undo); such a model makes every scan result noise."""
    with torch.no_grad():
        first, second = model(x), model(x)
    if not (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)) or first.shape != second.shape:
        return False
    return bool(torch.allclose(first.float(), second.float(), atol=atol, rtol=1e-4, equal_nan=True))


def outputs_are_finite(model: nn.Module, x: torch.Tensor) -> bool:
    """The model's scores for `x` hold no NaN or infinity (log of a zero probability is clamped by ScanModel)."""
    with torch.no_grad():
        out = model(x)
    return isinstance(out, torch.Tensor) and bool(torch.isfinite(out).all())


def looks_like_probabilities(out: torch.Tensor) -> bool:
    out = out.float()
    return bool((out >= 0).all() and torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3))
