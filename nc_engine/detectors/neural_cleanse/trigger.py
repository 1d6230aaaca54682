"""The trigger: a mask shared by all channels and a pattern, both kept in [0, 1] by a tanh map."""

from __future__ import annotations

import torch

EPS = 1e-7


def unit_from_raw(raw: torch.Tensor) -> torch.Tensor:
    """Unconstrained parameters -> values in [0, 1]: tanh(a) / (2 - eps) + 0.5.

    In float32, eps is below the rounding step at 2, so a saturated tanh can land a few 1e-8 outside
    [0, 1]; the clamp only touches such saturated values, whose gradient is ~0 anyway."""
    return (torch.tanh(raw) / (2 - EPS) + 0.5).clamp(0.0, 1.0)


def raw_from_unit(unit: torch.Tensor) -> torch.Tensor:
    """Inverse of unit_from_raw: atanh((u - 0.5) * (2 - eps))."""
    return torch.atanh((unit - 0.5) * (2 - EPS))


def stamp(x: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """x' = (1 - m) * x + m * p, in raw pixel space; the model's normalisation comes after."""
    return (1 - mask) * x + mask * pattern


def initial_trigger(seed: int, shape: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference init: mask and pattern uniform in [0, 1], mapped to raw parameters."""
    channels, height, width = shape
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand((height, width), generator=gen, dtype=torch.float64)
    pattern = torch.rand((channels, height, width), generator=gen, dtype=torch.float64)
    return raw_from_unit(mask).float(), raw_from_unit(pattern).float()
