"""Images in NumPy arrays: an .npz with images and labels, or an .npy of images beside one of labels."""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from nc_engine.config.settings import MAX_CLASSES, Config
from nc_engine.data.source import DataSource, check_regular_file, to_input_shape
from nc_engine.errors import DataError, first_line
from nc_engine.files import npz_problem


def _array_layout(x: np.ndarray, forced: str, where: str) -> str:
    """The layout of an image array: forced by [data].layout, else guessed from where the channels are."""
    expected = "N x H x W, N x H x W x C or N x C x H x W"
    if forced != "auto":
        if x.ndim != (3 if forced == "NHW" else 4):
            raise DataError(f'{where} has shape {x.shape}, which is not {forced} ([data].layout = "{forced}")')
        return forced
    if x.ndim == 3:
        return "NHW"
    if x.ndim != 4:
        raise DataError(f"{where} has shape {x.shape}; expected {expected}")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        return "NHWC"
    if x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
        return "NCHW"
    if x.shape[-1] in (1, 3, 4):
        return "NHWC"  # ambiguous (e.g. 3 x 3 x 3 images): the common case; [data].layout overrides
    # Neither axis looks like channels (e.g. 5 x 28 x 28): guessing would report 28-channel images.
    raise DataError(
        f"{where} has shape {x.shape}: cannot tell which axis holds the channels (neither axis 1 "
        f"({x.shape[1]}) nor the last ({x.shape[-1]}) is 1, 3 or 4); set [data].layout to "
        '"NCHW" or "NHWC"'
    )


def _check_finite(rows: np.ndarray, index: np.ndarray, where: str, xk: str) -> None:
    """NaN or infinite pixels would make every loss and norm of the scan NaN: name the first such image."""
    bad = ~np.isfinite(rows).all(1)
    if bad.any():
        raise DataError(
            f"{where}: {xk}[{int(index[bad].min())}] holds NaN or infinite pixel values; expected "
            "uint8 0..255 or finite floats 0..1"
        )


def array_source(
    x: np.ndarray, y: np.ndarray, cfg: Config, where: str, xk: str, yk: str, layout: str = "auto"
) -> DataSource:
    """Images and labels held in arrays (possibly memory-mapped): only selected rows are read."""
    if y.ndim == 2:  # one-hot
        y = np.asarray(y).argmax(1)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{where}: {yk} has shape {y.shape}; expected ({len(x)},) labels for {xk} {x.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{where}: {yk} has dtype {y.dtype}; expected integer labels")
    layout = _array_layout(x, layout, f"{where}: {xk}")
    if not (x.dtype == np.uint8 or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{where}: {xk} has dtype {x.dtype}; expected uint8 0..255 or floats 0..1")
    if np.issubdtype(x.dtype, np.floating) and len(x):
        head = np.asarray(x[:256])
        _check_finite(head.reshape(len(head), -1), np.arange(len(head)), where, xk)
        if float(head.max()) > 1.5:
            raise DataError(f"{where}: {xk} holds floats above 1; expected uint8 0..255 or floats 0..1")

    def load(idx: np.ndarray, warn: Callable[[str], None]) -> tuple[torch.Tensor, np.ndarray]:
        order = np.argsort(idx)  # sorted reads are sequential on a memory-mapped file
        rows = np.empty((len(idx), *x.shape[1:]), dtype=x.dtype)
        rows[order] = x[np.asarray(idx)[order]]
        batch = torch.from_numpy(rows)
        batch = batch.float() / 255.0 if x.dtype == np.uint8 else batch.float()
        if x.dtype != np.uint8:
            _check_finite(rows.reshape(len(rows), -1), np.asarray(idx), where, xk)  # rows are in idx order
        if layout == "NHW":
            batch = batch.unsqueeze(1)
        elif layout == "NHWC":
            batch = batch.permute(0, 3, 1, 2)
        return to_input_shape(batch, cfg.model.input_shape, cfg.data.resize), np.asarray(idx)

    y = np.asarray(y).astype(np.int64)
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= MAX_CLASSES):
        bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
        raise DataError(f"{where}: {yk} holds the label {bad}; expected class numbers 0..{MAX_CLASSES - 1}")
    num = int(y.max()) + 1 if len(y) else 0
    names = [str(i) for i in range(max(num, cfg.model.num_classes))]
    return DataSource(y, names, load, f"{where} [{xk}, {layout}]")


def open_npz(cfg: Config) -> DataSource:
    path = cfg.resolve_path(cfg.data.path)
    split = cfg.data.split
    try:
        arrays = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ([data].path; {exc})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(
            f'{path}: is a single .npy array; expected a .npz file ([data].format = "npz"; '
            'use format = "npy" with labels_path for .npy files)'
        )
    names = list(arrays.keys())
    for xk, yk in ((f"x_{split}", f"y_{split}"), ("x", "y")):
        if xk in names and yk in names:
            break
    else:
        raise DataError(
            f'{path}: expected arrays x_{split}/y_{split} or x/y ([data].split = "{split}"); '
            f"the file has: {', '.join(names) or 'no arrays'}"
        )
    problem = npz_problem(path, [xk, yk])
    if problem is not None:
        raise DataError(f"{path}: {problem} ([data].path)")
    try:
        x, y = arrays[xk], arrays[yk]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # object arrays need pickle: refused
        raise DataError(f"{path}: cannot read arrays {xk}/{yk} ([data].path; {first_line(exc)})") from None
    return array_source(x, y, cfg, str(path), xk, yk, cfg.data.layout)


def default_labels_path(images: Path) -> Path | None:
    """The labels file beside an images .npy: x*.npy -> y*.npy, *images*.npy -> *labels*.npy."""
    stem = images.stem
    if stem.startswith("x"):
        return images.with_name("y" + stem[1:] + images.suffix)
    if "images" in stem:
        return images.with_name(stem.replace("images", "labels") + images.suffix)
    return None


def _load_npy(path: Path, key: str) -> np.ndarray:
    check_regular_file(path, key, "a .npy file")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # memory-mapped: only used rows are read
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({key}; {first_line(exc)})") from None


def open_npy(cfg: Config) -> DataSource:
    images = cfg.resolve_path(cfg.data.path)
    labels: Path | None
    if cfg.data.labels_path:
        labels = cfg.resolve_path(cfg.data.labels_path)
    else:
        labels = default_labels_path(images)
        if labels is None:
            raise DataError(
                f"{images}: set [data].labels_path to the labels .npy (the default pairs x*.npy "
                "with y*.npy and *images*.npy with *labels*.npy)"
            )
    x = _load_npy(images, "[data].path")
    if not isinstance(x, np.ndarray) or isinstance(x, np.lib.npyio.NpzFile):
        raise DataError(f"{images}: expected a .npy array ([data].path)")
    y = np.asarray(_load_npy(labels, "[data].labels_path"))
    return array_source(x, y, cfg, str(images), images.name, labels.name, cfg.data.layout)
