"""Read the scan data (npz arrays or an image-folder tree, also inside a tar/zip) and draw samples.

A DataSource knows every sample's label up front and decodes only the images a scan selects, so a
large image folder costs one directory listing plus the few thousand images actually used.
"""

from __future__ import annotations

import io
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from .config import Config
from .errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".webp"}
_GREY = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


@dataclass
class DataSource:
    """Labels of every sample, class names, and a loader for selected samples."""

    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    load: Callable[[np.ndarray, Callable[[str], None]], tuple[torch.Tensor, np.ndarray]]
    description: str


def to_input_shape(x: torch.Tensor, shape: list[int]) -> torch.Tensor:
    """(N, C', H', W') float [0, 1] -> (N, C, H, W): grey <-> RGB, bilinear (antialiased) resize."""
    channels, height, width = shape
    if x.shape[1] != channels:
        if x.shape[1] == 1:
            x = x.expand(-1, channels, -1, -1)
        elif x.shape[1] == 3 and channels == 1:
            x = (x * _GREY).sum(1, keepdim=True)
        elif x.shape[1] == 4 and channels == 3:
            x = x[:, :3]
        else:
            raise DataError(f"cannot convert {x.shape[1]}-channel images to the {channels} channels of "
                            "[model].input_shape")
    if tuple(x.shape[2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp(0, 1).contiguous()


# ---------------------------------------------------------------- npz


def _npz_layout(x: np.ndarray, path: Path, key: str) -> str:
    if x.ndim == 3:
        return "NHW"
    if x.ndim != 4:
        raise DataError(f"{path}: array {key} has shape {x.shape}; expected N x H x W, N x H x W x C or "
                        "N x C x H x W")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return "NHWC"
    if x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
        return "NCHW"
    return "NHWC"


def _open_npz(cfg: Config) -> DataSource:
    path = cfg.resolve_path(cfg.data.path)
    split = cfg.data.split
    try:
        arrays = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    names = list(arrays.keys()) if hasattr(arrays, "keys") else []
    for xk, yk in ((f"x_{split}", f"y_{split}"), ("x", "y")):
        if xk in names and yk in names:
            break
    else:
        raise DataError(f"{path}: expected arrays x_{split}/y_{split} or x/y ([data].split = \"{split}\"); "
                        f"the file has: {', '.join(names) or 'no arrays'}")
    x = arrays[xk]
    y = arrays[yk]
    if y.ndim == 2:  # one-hot
        y = y.argmax(1)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: {yk} has shape {y.shape}; expected ({len(x)},) labels for {xk} {x.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: {yk} has dtype {y.dtype}; expected integer labels")
    layout = _npz_layout(x, path, xk)
    if np.issubdtype(x.dtype, np.floating) and len(x) and float(x[: min(len(x), 256)].max()) > 1.5:
        raise DataError(f"{path}: {xk} holds floats above 1; expected uint8 0..255 or floats 0..1")

    def load(idx: np.ndarray, warn: Callable[[str], None]) -> tuple[torch.Tensor, np.ndarray]:
        batch = torch.from_numpy(np.ascontiguousarray(x[idx]))
        batch = batch.float() / 255.0 if x.dtype == np.uint8 else batch.float()
        if layout == "NHW":
            batch = batch.unsqueeze(1)
        elif layout == "NHWC":
            batch = batch.permute(0, 3, 1, 2)
        return to_input_shape(batch, cfg.model.input_shape), np.asarray(idx)

    num = int(y.max()) + 1 if len(y) else 0
    names_out = [str(i) for i in range(max(num, cfg.model.num_classes))]
    return DataSource(y.astype(np.int64), names_out, load, f"{path} [{xk}, {layout}]")


# ---------------------------------------------------------------- image folders


def _select_tree(members: list[str], split: str, where: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Image member paths -> (kept paths, class names, labels); class = parent folder, sorted."""
    images = [m for m in members if PurePosixPath(m).suffix.lower() in IMAGE_SUFFIXES
              and len(PurePosixPath(m).parts) >= 2]
    if not images:
        raise DataError(f"{where}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in class folders")
    roots = {PurePosixPath(m).parts[:-2] for m in images}
    with_split = {r for r in roots if r and r[-1] == split}
    if with_split:
        images = [m for m in images if PurePosixPath(m).parts[:-2] in with_split]
    elif len(roots) > 1:
        shown = ", ".join(sorted("/".join(r) or "." for r in roots)[:6])
        raise DataError(f"{where}: several image trees ({shown}) and none named \"{split}\" "
                        "([data].split)")
    images.sort()
    classes = sorted({PurePosixPath(m).parts[-2] for m in images})
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[PurePosixPath(m).parts[-2]] for m in images], dtype=np.int64)
    return images, classes, labels


def _decode(raw: bytes, name: str, channels: int, warn: Callable[[str], None]) -> torch.Tensor | None:
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        warn(f"{name}: unreadable image skipped ({exc})")
        return None
    t = torch.from_numpy(arr.copy()).float() / 255.0
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def _stack(decoded: list[torch.Tensor], shape: list[int]) -> torch.Tensor:
    """Images may differ in size: bring each to the input shape, then stack."""
    if not decoded:
        return torch.zeros((0, *shape))
    return torch.cat([to_input_shape(t.unsqueeze(0), shape) for t in decoded])


def _open_imagefolder(cfg: Config) -> DataSource:
    path = cfg.resolve_path(cfg.data.path)
    channels = cfg.model.input_shape[0]
    name = path.name.lower()
    if path.is_dir():
        members = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        images, classes, labels = _select_tree(members, cfg.data.split, path)

        def read_all(wanted: list[str]) -> dict[str, bytes]:
            return {m: (path / m).read_bytes() for m in wanted}
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        try:
            with tarfile.open(path) as tar:
                members = [m.name for m in tar.getmembers() if m.isfile()]
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable tar archive ({exc})") from None
        images, classes, labels = _select_tree(members, cfg.data.split, path)

        def read_all(wanted: list[str]) -> dict[str, bytes]:
            want, out = set(wanted), {}
            with tarfile.open(path) as tar:  # one sequential pass: fast even for .tar.gz
                for member in tar:
                    if member.name in want:
                        out[member.name] = tar.extractfile(member).read()
            return out
    elif name.endswith(".zip"):
        try:
            with zipfile.ZipFile(path) as zf:
                members = [i.filename for i in zf.infolist() if not i.is_dir()]
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{path}: not a readable zip archive ({exc})") from None
        images, classes, labels = _select_tree(members, cfg.data.split, path)

        def read_all(wanted: list[str]) -> dict[str, bytes]:
            with zipfile.ZipFile(path) as zf:
                return {m: zf.read(m) for m in wanted}
    else:
        raise DataError(f"{path}: expected a folder or a .tar, .tar.gz, .tgz or .zip archive of "
                        "class folders ([data].format = \"imagefolder\")")

    def load(idx: np.ndarray, warn: Callable[[str], None]) -> tuple[torch.Tensor, np.ndarray]:
        wanted = [images[i] for i in idx]
        raw = read_all(wanted)
        decoded, kept = [], []
        for i, member in zip(idx, wanted, strict=True):
            t = _decode(raw[member], f"{path}/{member}", channels, warn)
            if t is not None:
                decoded.append(t)
                kept.append(i)
        return _stack(decoded, cfg.model.input_shape), np.asarray(kept, dtype=np.int64)

    return DataSource(labels, classes, load, f"{path} ({len(images)} images, {len(classes)} classes)")


def open_data(cfg: Config) -> DataSource:
    """Open the data source the config names and check its labels against num_classes."""
    path = cfg.resolve_path(cfg.data.path)
    if not path.exists():
        raise DataError(f"{path}: data not found ([data].path)")
    if cfg.data.format == "npz":
        if path.is_dir():
            raise DataError(f"{path}: is a folder; expected a .npz file ([data].format = \"npz\")")
        source = _open_npz(cfg)
    else:
        source = _open_imagefolder(cfg)
    n = cfg.model.num_classes
    if len(source.labels) == 0:
        raise DataError(f"{path}: no samples")
    bad = source.labels[(source.labels < 0) | (source.labels >= n)]
    if len(bad):
        raise DataError(f"{path}: labels must be in 0..{n - 1} ([model].num_classes = {n}); found "
                        f"{sorted(set(bad.tolist()))[:5]}")
    if len(source.class_names) > n:
        raise DataError(f"{path}: {len(source.class_names)} classes but [model].num_classes = {n}")
    return source


def stratified_order(labels: np.ndarray, seed: int) -> np.ndarray:
    """All indices, shuffled, then interleaved class by class, so any prefix is class-balanced."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(labels))
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = perm[labels[perm] == c]
        rank[members] = np.arange(len(members))
    return perm[np.argsort(rank[perm], kind="stable")]


def split_samples(labels: np.ndarray, n_opt: int, n_asr: int, seed: int, max_images: int = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, class-stratified optimisation and held-out ASR sample indices."""
    order = stratified_order(labels, seed)
    if max_images:
        order = order[:max_images]
    if len(order) < 2:
        raise DataError(f"only {len(order)} sample(s) available; a scan needs at least 2")
    n_opt = min(n_opt, max(1, len(order) // 2)) if n_opt + n_asr > len(order) else n_opt
    opt = order[:n_opt]
    asr = order[n_opt:n_opt + n_asr]
    return np.sort(opt), np.sort(asr)
