"""What every data format gives a scan (DataSource), and the image helpers the formats share:
conversion to the model's input shape, decoding and stacking."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from nc_engine.errors import DataError
from nc_engine.files import regular_file_problem

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}


_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@dataclass
class DataSource:
    """Labels of every sample, class names, and a loader for selected samples."""

    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    load: Callable[[np.ndarray, Callable[[str], None]], tuple[torch.Tensor, np.ndarray]]
    description: str


def to_input_shape(x: torch.Tensor, shape: list[int], resize: str = "bilinear") -> torch.Tensor:
    """(N, C', H', W') float [0, 1] -> (N, C, H, W): grey <-> RGB, resize ([data].resize; antialiased
    when shrinking with bilinear/bicubic, as PIL does)."""
    channels, height, width = shape
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = (x * _GREY).sum(1, keepdim=True)
        elif x.shape[1] == 4 and channels == 3:
            x = x[:, :3]
        else:
            raise DataError(
                f"cannot convert {x.shape[1]}-channel images to the {channels} channels of [model].input_shape"
            )
    if tuple(x.shape[2:]) != (height, width):
        if resize == "nearest":
            x = F.interpolate(x, size=(height, width), mode="nearest-exact")
        else:
            x = F.interpolate(x, size=(height, width), mode=resize, antialias=True, align_corners=False)
    return x.clamp(0, 1).contiguous()


def check_regular_file(path: Path, key: str, expected: str) -> None:
    """A regular data file, or one DataError line naming the file and the key."""
    problem = regular_file_problem(path, expected)
    if problem:
        raise DataError(f"{path}: {problem} ({key})")


MAX_IMAGE_BYTES = 64 << 20  # one image file; a larger member of an archive is skipped unread
MAX_PIXELS = 8192 * 8192  # one decoded image (PIL's own bomb check allows 179M pixels, 2 GB as floats)


def fit_image(t: torch.Tensor, shape: list[int], resize: str) -> torch.Tensor:
    """One decoded (C', H', W') image brought to the input shape at once, so that a large image is never
    kept at full size beside the others (the same maths as resizing them together)."""
    return to_input_shape(t.unsqueeze(0), shape, resize)[0]


def decode_image(raw: bytes, name: str, channels: int, warn: Callable[[str], None]) -> torch.Tensor | None:
    img: Image.Image
    try:
        with Image.open(io.BytesIO(raw)) as img:
            if img.width * img.height > MAX_PIXELS:
                warn(f"{name}: {img.width}x{img.height} pixels skipped (an image is at most 8192x8192 here)")
                return None
            img = img.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        warn(f"{name}: unreadable image skipped ({exc})")
        return None
    t = torch.from_numpy(arr.copy()).float() / 255.0
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def stack_images(decoded: list[torch.Tensor], shape: list[int], resize: str) -> torch.Tensor:
    """Images may differ in size: bring each to the input shape, then stack."""
    if not decoded:
        return torch.zeros((0, *shape))
    return torch.cat([to_input_shape(t.unsqueeze(0), shape, resize) for t in decoded])


Reader = Callable[[list[str]], dict[str, bytes]]
