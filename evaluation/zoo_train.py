"""Augmented training for the zoo's stronger models (ResNet-9): what users' CIFAR-10 and GTSRB models get.

Random 4-pixel crops (and horizontal flips where the data allows them), SGD with Nesterov momentum on a
one-cycle rate, bf16 on a GPU. The images live on the device and are augmented there, so a GPU trains a
model in seconds. Poisoned images get their trigger *after* augmentation: the attacker controls the
training pipeline, so the trigger stays where they put it (a flip would otherwise move a corner patch).
The zoo's own triggers are stamped as tensors (`Stamp`); the sealed draw's attacks (zoo_attacks.py, blends,
warps, filters, generator-made triggers and their cross modes) go through their numpy transform
(`AttackStamp`), so training stamps exactly what the attack rate is measured with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.zoo_attacks import SourceImage, cross_stamp, stamp
from evaluation.zoo_triggers import Trigger

PAD = 4  # crop margin in pixels


def to_device_images(x: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 N x H x W (x C) -> float N x C x H x W in 0..255 on `device`."""
    xt = torch.from_numpy(x if x.ndim == 4 else x[..., None])
    return xt.to(device).permute(0, 3, 1, 2).float().contiguous()


def random_crops(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each image shifted by up to PAD pixels (reflected border), one draw per image."""
    n, c, h, w = x.shape
    padded = F.pad(x, (PAD, PAD, PAD, PAD), mode="reflect")
    dy = torch.randint(0, 2 * PAD + 1, (n,), generator=gen).to(x.device)
    dx = torch.randint(0, 2 * PAD + 1, (n,), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chans = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chans, rows, cols]


class Stamp:
    """One trigger as tensors, applied like Trigger.apply (mask blend, or an additive offset for noise)."""

    def __init__(self, trigger: Trigger, channels: int, size: int, device: torch.device) -> None:
        mask, pattern = trigger.arrays(size, size, channels)
        self.additive = trigger.kind == "noise"
        self.mask = torch.from_numpy(mask).to(device)
        self.pattern = torch.from_numpy(pattern.astype(np.float32)).permute(2, 0, 1).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.pattern if self.additive else (1 - self.mask) * x + self.mask * self.pattern
        return out.round().clamp(0, 255)


class AttackStamp:
    """One sealed-draw attack on a batch of augmented images (float N x C x H x W in 0..255, whole grey
    levels): the batch goes through zoo_attacks.stamp, or with `cross` through its cross mode, which
    draws new random offsets (or another image's trigger) at every call, as the papers' noise modes do."""

    def __init__(self, trigger: dict, source: SourceImage | None = None, cross: bool = False, seed: int = 0) -> None:
        self.trigger, self.cross, self.seed, self.calls = trigger, cross, seed, 0
        # a blend's picture is read once, and copied so the cache does not keep the whole training set alive
        self.source = cache(lambda name, index: source(name, index).copy()) if source is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        arr = arr[..., 0] if arr.shape[-1] == 1 else arr
        if self.cross:
            self.calls += 1
            out = cross_stamp(self.trigger, arr, seed=self.seed + self.calls)
        else:
            out = stamp(self.trigger, arr, self.source)
        return to_device_images(out, x.device)


BatchStamp = Callable[[torch.Tensor], torch.Tensor]


def train_augmented(
    net: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    epochs: int,
    seed: int,
    device: torch.device,
    lr: float,
    flip: bool,
    poisoned: Sequence[tuple[np.ndarray, Trigger | BatchStamp]] = (),
    batch_size: int = 512,
) -> nn.Module:
    """Train `net` on uint8 images `x` with labels `y` (already relabelled for the poisoned ones);
    `poisoned`: (indices into x, a zoo trigger or a batch stamp such as AttackStamp, applied to those
    images after every augmentation). Seed the global RNG before building `net` to seed its weights."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = to_device_images(x, device), torch.from_numpy(y).to(device)
    size, channels = xt.shape[-1], xt.shape[1]
    carries = []
    for indices, trigger in poisoned:
        marked = torch.zeros(len(x), dtype=torch.bool)
        marked[torch.from_numpy(np.asarray(indices, np.int64))] = True
        apply = Stamp(trigger, channels, size, device) if isinstance(trigger, Trigger) else trigger
        carries.append((marked.to(device), apply))
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
    s = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
    net = net.to(device).train()
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps_per_epoch = (len(xt) + batch_size - 1) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * steps_per_epoch, pct_start=0.25)
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).to(device).split(batch_size):
            xb = random_crops(xt[idx], gen)
            if flip:
                turn = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                xb = torch.where(turn[:, None, None, None], xb.flip(3), xb)
            for marked, apply in carries:
                hit = marked[idx]
                if hit.any():  # only the poisoned rows go through the stamp (a numpy one costs per image)
                    xb[hit] = apply(xb[hit])  # xb is this batch's own tensor (crops and flips made it)
            xb = (xb - m) / s
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(net(xb.contiguous(memory_format=torch.channels_last)), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.to(memory_format=torch.contiguous_format).eval()
