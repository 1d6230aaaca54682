"""Open the scan data, whatever its format, and draw the samples a scan uses.

Each format has a module of its own (arrays, imagefolder, torchvision_sets, parquet, hf) with an
`open_*` function taking the config; FORMATS names them, and a format's module is imported only when a
scan uses it, so optional extras (pyarrow) stay optional. A DataSource knows every sample's label up
front and decodes only the images a scan selects, so a large image folder costs one directory listing
plus the few thousand images actually used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from nc_engine.config.settings import Config
from nc_engine.data.source import DataSource, check_regular_file
from nc_engine.errors import DataError

# [data].format -> "module:function" under nc_engine.data
FORMATS = {
    "npz": "arrays:open_npz",
    "npy": "arrays:open_npy",
    "imagefolder": "imagefolder:open_imagefolder",
    "torchvision": "torchvision_sets:open_torchvision",
    "parquet": "parquet:open_parquet",
    "hf": "hf:open_hf",
}


def _opener(data_format: str) -> Callable[[Config], DataSource]:
    module, function = FORMATS[data_format].split(":")
    return getattr(importlib.import_module(f"nc_engine.data.{module}"), function)


def open_data(cfg: Config) -> DataSource:
    """Open the data source the config names and check its labels against num_classes.

    With num_classes inferred (0 in the config), call this after load_model has filled it in.
    """
    d = cfg.data
    path = cfg.resolve_path(d.path)
    if not path.exists():
        raise DataError(f"{path}: data not found ([data].path)")
    if d.format in ("npz", "npy") and path.is_dir():
        raise DataError(f'{path}: is a folder; expected a .{d.format} file ([data].path with format = "{d.format}")')
    if not path.is_dir():
        check_regular_file(path, "[data].path", "a data file or folder")
    source = _opener(d.format)(cfg)
    if len(source.labels) == 0:
        raise DataError(f"{path}: no samples")
    n = cfg.model.num_classes or len(source.class_names)
    what = f"[model].num_classes = {n}" if cfg.model.num_classes else f"{n} classes in the data"
    bad = source.labels[(source.labels < 0) | (source.labels >= n)]
    if len(bad):
        raise DataError(f"{path}: labels must be in 0..{n - 1} ({what}); found {sorted(set(bad.tolist()))[:5]}")
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


def split_samples(
    labels: np.ndarray, n_opt: int, n_asr: int, seed: int, max_images: int = 0, where: str = "the data"
) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint, class-stratified optimisation and held-out ASR sample indices."""
    order = stratified_order(labels, seed)
    if max_images:
        order = order[:max_images]
    if len(order) < 2:
        cap = f" with [data].max_images = {max_images}" if max_images and len(labels) > max_images else ""
        raise DataError(f"{where}: only {len(order)} image(s) to scan{cap}; a scan needs at least 2")
    n_opt = min(n_opt, max(1, len(order) // 2)) if n_opt + n_asr > len(order) else n_opt
    opt = order[:n_opt]
    asr = order[n_opt : n_opt + n_asr]
    return np.sort(opt), np.sort(asr)
