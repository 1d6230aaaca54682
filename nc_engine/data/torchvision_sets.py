"""torchvision's own datasets (MNIST, CIFAR-10, GTSRB, ...) from their download folder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import UnidentifiedImageError

from nc_engine.config.settings import Config
from nc_engine.data.arrays import array_source
from nc_engine.data.source import DataSource, stack_images
from nc_engine.errors import DataError, first_line

# How each dataset names its split, and where it keeps labels without decoding images.
_TV_SPLITS = {
    "MNIST": ("train", "test"),
    "FashionMNIST": ("train", "test"),
    "CIFAR10": ("train", "test"),
    "CIFAR100": ("train", "test"),
    "SVHN": ("train", "test", "extra"),
    "GTSRB": ("train", "test"),
    "STL10": ("train", "test"),
}


_TV_TRAIN_FLAG = {"MNIST", "FashionMNIST", "CIFAR10", "CIFAR100"}


def _tv_labels(ds: Any) -> np.ndarray:
    for attr in ("targets", "labels"):
        if getattr(ds, attr, None) is not None:
            return np.asarray(getattr(ds, attr)).astype(np.int64)
    return np.array([label for _, label in ds._samples], dtype=np.int64)  # GTSRB


def open_torchvision(cfg: Config) -> DataSource:
    import torchvision

    d = cfg.data
    root = cfg.resolve_path(d.path)
    if not root.is_dir():
        raise DataError(f'{root}: expected the dataset\'s root folder ([data].path with format = "torchvision")')
    splits = _TV_SPLITS[d.dataset]
    if d.split not in splits:
        raise DataError(
            f"{cfg.source}: [data].split must be one of {', '.join(splits)} for {d.dataset}, got {d.split!r}"
        )
    kwargs = {"train": d.split == "train"} if d.dataset in _TV_TRAIN_FLAG else {"split": d.split}
    # CIFAR10/100 batch files are pickles: torchvision unpickles them only after their md5 matched the
    # official release's, so a user's own (possibly hostile) pickle never runs here.
    try:
        ds = getattr(torchvision.datasets, d.dataset)(str(root), download=d.download, **kwargs)
    except Exception as exc:  # torchvision raises RuntimeError for a missing/corrupt set, others on bad files
        hint = "" if d.download else "; set [data].download = true to let torchvision fetch it"
        raise DataError(
            f"{root}: no readable torchvision {d.dataset} {d.split} set in this root folder "
            f"([data].path; {type(exc).__name__}: {first_line(exc)}){hint}"
        ) from None
    labels = _tv_labels(ds)
    classes = [str(c) for c in getattr(ds, "classes", [])]
    data = getattr(ds, "data", None)
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    if isinstance(data, np.ndarray) and data.ndim in (3, 4):
        source = array_source(data, labels, cfg, f"{root} ({d.dataset} {d.split})", "data", "labels")
    else:
        source = _decode_items(ds, labels, cfg, f"{root} ({d.dataset} {d.split})")
    if classes and len(classes) >= len(source.class_names):
        source.class_names = classes
    return source


def _decode_items(ds: Any, labels: np.ndarray, cfg: Config, where: str) -> DataSource:
    """Datasets without an image array (GTSRB): decode only the selected items through the dataset."""
    channels = cfg.model.input_shape[0]

    def load(idx: np.ndarray, warn: Callable[[str], None]) -> tuple[torch.Tensor, np.ndarray]:
        decoded, kept = [], []
        for i in idx:
            try:
                img = ds[int(i)][0].convert("L" if channels == 1 else "RGB")
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                warn(f"{where}: item {int(i)}: unreadable image skipped ({exc})")
                continue
            t = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).float() / 255.0
            decoded.append(t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1))
            kept.append(i)
        return stack_images(decoded, cfg.model.input_shape, cfg.data.resize), np.asarray(kept, dtype=np.int64)

    num = int(labels.max()) + 1 if len(labels) else 0
    return DataSource(labels, [str(i) for i in range(max(num, cfg.model.num_classes))], load, where)
