"""The sealed third draw's attacks (evaluation/zoo_sealed_draw.json) as transforms of uint8 images.

Written after the draw was sealed and before any of it was built: the specs fix every parameter, this
module only carries them out. `stamp(trigger, x)` returns the triggered copy of `x` (N x H x W grey or
N x H x W x C, uint8). The attacks, as their papers describe them, with what differs said:

- patch: a BadNets square (solid colour, random pixels or random noise), zoo_triggers.Trigger.
- blendimage: a natural image blended over the input at `alpha` (Chen et al. 2017's Blended).
- sig: a horizontal sinusoid of amplitude `delta` grey levels and `frequency` periods (Barni et al. 2019).
- wanet: a fixed smooth warp: a k x k field of random offsets, normalised, upsampled bicubically to the
  image and scaled by `strength` pixels (Nguyen and Tran 2021). Its noise mode (`cross_ratio` x the
  poisoning rate of images warped with extra random offsets, keeping their labels) is `cross_stamp`.
- inputaware: a per-image pattern and mask from a generator (Nguyen and Tran 2020). Here the generator is
  a fixed, seeded random convolutional network (the paper trains it with the classifier): each image gets
  its own pattern, and the mask covers the `mask_density` share of pixels where a second output is
  largest. Its cross mode stamps an image with another image's trigger and keeps its label.
- filter: a colour filter x' = clip(M x + b) per pixel (an Instagram-style filter trigger).
- watermark: a TrojanNN-style binary glyph (smoothed noise thresholded to cover `density` of the image)
  blended in white at `alpha`.
- noise: additive uniform noise of +-`amplitude` grey levels, zoo_triggers.Trigger.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from evaluation.zoo_triggers import Trigger

SourceImage = Callable[[str, int], np.ndarray]  # ("cifar10:train", index) -> H x W x 3 uint8


def _channels_last(x: np.ndarray) -> tuple[np.ndarray, bool]:
    grey = x.ndim == 3
    return (x[..., None] if grey else x), grey


def _back(out: np.ndarray, grey: bool) -> np.ndarray:
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out[..., 0] if grey else out


def _blend(x: np.ndarray, mask: np.ndarray, pattern: np.ndarray) -> np.ndarray:
    """(1 - m) x + m p with m broadcast over images (H x W or N x H x W) and channels."""
    xs, grey = _channels_last(x)
    m = mask[..., None].astype(np.float32)
    return _back((1 - m) * xs.astype(np.float32) + m * pattern.astype(np.float32), grey)


def _resized(image: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    picture = Image.fromarray(image).convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
    arr = np.asarray(picture, dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


def _warp_field(trigger: dict, height: int, width: int) -> torch.Tensor:
    """The fixed warp's sampling grid (1 x H x W x 2, grid_sample's [-1, 1] coordinates)."""
    k = trigger["grid"]
    rng = np.random.default_rng(trigger["seed"])
    offsets = torch.from_numpy(rng.uniform(-1, 1, (1, 2, k, k)).astype(np.float32))
    offsets = offsets / offsets.abs().mean()
    field = F.interpolate(offsets, size=(height, width), mode="bicubic", align_corners=True).permute(0, 2, 3, 1)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    identity = torch.stack([xs, ys], dim=-1)[None]
    scale = torch.tensor([2.0 / width, 2.0 / height])  # `strength` is in pixels
    return (identity + field * trigger["strength"] * scale).clamp(-1, 1)


def _warp(x: np.ndarray, grid: torch.Tensor) -> np.ndarray:
    xs, grey = _channels_last(x)
    t = torch.from_numpy(xs.astype(np.float32)).permute(0, 3, 1, 2)
    out = F.grid_sample(t, grid.expand(len(t), -1, -1, -1), mode="bilinear", padding_mode="border", align_corners=True)
    return _back(out.permute(0, 2, 3, 1).numpy(), grey)


def _generator(seed: int, channels: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(channels, 16, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(16, 16, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(16, channels + 1, 3, padding=1),
    )
    return net.eval()


def input_aware_triggers(trigger: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each image's own (mask N x H x W in {0, 1}, pattern N x H x W x C uint8) from the generator."""
    xs, _ = _channels_last(x)
    channels = xs.shape[-1]
    state = torch.random.get_rng_state()
    try:
        net = _generator(trigger["seed"], channels)
    finally:
        torch.random.set_rng_state(state)  # the caller's random stream is left as it was
    with torch.no_grad():
        out = net(torch.from_numpy(xs.astype(np.float32) / 255).permute(0, 3, 1, 2))
    pattern = (torch.sigmoid(out[:, :channels] * 4) * 255).permute(0, 2, 3, 1).numpy()
    score = out[:, channels].flatten(1)
    keep = max(1, int(round(trigger["mask_density"] * score.shape[1])))
    cut = score.topk(keep, dim=1).values[:, -1:]
    mask = (score >= cut).view(len(xs), *xs.shape[1:3]).numpy()
    return mask, pattern


def _glyph(trigger: dict, height: int, width: int) -> np.ndarray:
    """A binary glyph covering `density` of the image: smoothed seeded noise above its quantile."""
    rng = np.random.default_rng(trigger["seed"])
    noise = torch.from_numpy(rng.normal(size=(1, 1, height // 4 + 1, width // 4 + 1)).astype(np.float32))
    smooth = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0, 0].numpy()
    return (smooth >= np.quantile(smooth, 1 - trigger["density"])).astype(np.float32)


def stamp(trigger: dict, x: np.ndarray, source: SourceImage | None = None) -> np.ndarray:
    """The triggered copy of uint8 images `x`; `source` gives blendimage its natural image."""
    kind = trigger["kind"]
    xs, grey = _channels_last(x)
    _, height, width, channels = xs.shape
    if kind == "patch":
        fields = {k: trigger[k] for k in ("size", "top", "left", "colour", "seed")}
        return Trigger(kind=trigger["shape"], **fields).apply(x)
    if kind == "noise":
        return Trigger("noise", amplitude=trigger["amplitude"], seed=trigger["seed"]).apply(x)
    if kind == "blendimage":
        if source is None:
            raise ValueError("blendimage needs the source image (a `source` callable)")
        pattern = _resized(source(trigger["source"], trigger["index"]), height, width, channels)
        return _blend(x, np.full((height, width), trigger["alpha"], np.float32), pattern)
    if kind == "sig":
        wave = trigger["delta"] * np.sin(2 * np.pi * np.arange(width) * trigger["frequency"] / width)
        return _back(xs.astype(np.float32) + wave[None, None, :, None], grey)
    if kind == "wanet":
        return _warp(x, _warp_field(trigger, height, width))
    if kind == "inputaware":
        mask, pattern = input_aware_triggers(trigger, x)
        return _blend(x, mask, pattern)
    if kind == "filter":
        matrix, bias = np.asarray(trigger["matrix"], np.float32), np.asarray(trigger["bias"], np.float32)
        return _back(xs.astype(np.float32) @ matrix.T + bias, grey)
    if kind == "watermark":
        glyph = _glyph(trigger, height, width) * trigger["alpha"]
        return _blend(x, glyph, np.full((height, width, channels), 255, np.uint8))
    raise ValueError(f"unknown attack kind {kind!r}")


def cross_stamp(trigger: dict, x: np.ndarray, seed: int) -> np.ndarray:
    """The noise / cross mode of wanet and inputaware: images that keep their labels while carrying a
    trigger-like change, so the model learns the exact trigger and not any change of its kind."""
    xs, _ = _channels_last(x)
    _, height, width, _ = xs.shape
    if trigger["kind"] == "wanet":
        rng = torch.Generator().manual_seed(seed)
        grid = _warp_field(trigger, height, width)
        jitter = (torch.rand((len(x), height, width, 2), generator=rng) * 2 - 1) * torch.tensor([2 / width, 2 / height])
        grid = (grid + jitter).clamp(-1, 1)
        xs_t = torch.from_numpy(_channels_last(x)[0].astype(np.float32)).permute(0, 3, 1, 2)
        out = F.grid_sample(xs_t, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return _back(out.permute(0, 2, 3, 1).numpy(), x.ndim == 3)
    if trigger["kind"] == "inputaware":
        if len(x) < 2:  # no other image to take a trigger from: its own would contradict its label
            return x.copy()
        mask, pattern = input_aware_triggers(trigger, x)
        # another image's trigger: a cyclic shift by 1..n-1 leaves no image with its own (a permutation would
        # leave about one per call, and augmented training calls this once a batch)
        other = (np.arange(len(x)) + np.random.default_rng(seed).integers(1, len(x))) % len(x)
        return _blend(x, mask[other], pattern[other])
    raise ValueError(f"{trigger['kind']!r} has no cross mode")
