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
from .errors import DataError, first_line
from .files import regular_file_problem

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
            raise DataError(f"cannot convert {x.shape[1]}-channel images to the {channels} channels of "
                            "[model].input_shape")
    if tuple(x.shape[2:]) != (height, width):
        if resize == "nearest":
            x = F.interpolate(x, size=(height, width), mode="nearest-exact")
        else:
            x = F.interpolate(x, size=(height, width), mode=resize, antialias=True, align_corners=False)
    return x.clamp(0, 1).contiguous()


# ---------------------------------------------------------------- arrays (npz, npy, torchvision .data)


def _array_layout(x: np.ndarray, forced: str, where: str) -> str:
    """The layout of an image array: forced by [data].layout, else guessed from where the channels are."""
    expected = "N x H x W, N x H x W x C or N x C x H x W"
    if forced != "auto":
        if x.ndim != (3 if forced == "NHW" else 4):
            raise DataError(f"{where} has shape {x.shape}, which is not {forced} ([data].layout = \"{forced}\")")
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
    raise DataError(f"{where} has shape {x.shape}: cannot tell which axis holds the channels (neither axis 1 "
                    f"({x.shape[1]}) nor the last ({x.shape[-1]}) is 1, 3 or 4); set [data].layout to "
                    "\"NCHW\" or \"NHWC\"")


def _check_finite(rows: np.ndarray, index: np.ndarray, where: str, xk: str) -> None:
    """NaN or infinite pixels would make every loss and norm of the scan NaN: name the first such image."""
    bad = ~np.isfinite(rows).all(1)
    if bad.any():
        raise DataError(f"{where}: {xk}[{int(index[bad].min())}] holds NaN or infinite pixel values; expected "
                        "uint8 0..255 or finite floats 0..1")


def _array_source(x: np.ndarray, y: np.ndarray, cfg: Config, where: str, xk: str, yk: str,
                  layout: str = "auto") -> DataSource:
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
    num = int(y.max()) + 1 if len(y) else 0
    names = [str(i) for i in range(max(num, cfg.model.num_classes))]
    return DataSource(y, names, load, f"{where} [{xk}, {layout}]")


def _open_npz(cfg: Config) -> DataSource:
    path = cfg.resolve_path(cfg.data.path)
    split = cfg.data.split
    try:
        arrays = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ([data].path; {exc})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: is a single .npy array; expected a .npz file ([data].format = \"npz\"; "
                        "use format = \"npy\" with labels_path for .npy files)")
    names = list(arrays.keys())
    for xk, yk in ((f"x_{split}", f"y_{split}"), ("x", "y")):
        if xk in names and yk in names:
            break
    else:
        raise DataError(f"{path}: expected arrays x_{split}/y_{split} or x/y ([data].split = \"{split}\"); "
                        f"the file has: {', '.join(names) or 'no arrays'}")
    try:
        x, y = arrays[xk], arrays[yk]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # object arrays need pickle: refused
        raise DataError(f"{path}: cannot read arrays {xk}/{yk} ([data].path; {first_line(exc)})") from None
    return _array_source(x, y, cfg, str(path), xk, yk, cfg.data.layout)


def default_labels_path(images: Path) -> Path | None:
    """The labels file beside an images .npy: x*.npy -> y*.npy, *images*.npy -> *labels*.npy."""
    stem = images.stem
    if stem.startswith("x"):
        return images.with_name("y" + stem[1:] + images.suffix)
    if "images" in stem:
        return images.with_name(stem.replace("images", "labels") + images.suffix)
    return None


def check_regular_file(path: Path, key: str, expected: str) -> None:
    """A regular data file, or one DataError line naming the file and the key."""
    problem = regular_file_problem(path, expected)
    if problem:
        raise DataError(f"{path}: {problem} ({key})")


def _load_npy(path: Path, key: str) -> np.ndarray:
    check_regular_file(path, key, "a .npy file")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)  # memory-mapped: only used rows are read
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({key}; {first_line(exc)})") from None


def _open_npy(cfg: Config) -> DataSource:
    images = cfg.resolve_path(cfg.data.path)
    if cfg.data.labels_path:
        labels = cfg.resolve_path(cfg.data.labels_path)
    else:
        labels = default_labels_path(images)
        if labels is None:
            raise DataError(f"{images}: set [data].labels_path to the labels .npy (the default pairs x*.npy "
                            "with y*.npy and *images*.npy with *labels*.npy)")
    x = _load_npy(images, "[data].path")
    if not isinstance(x, np.ndarray) or isinstance(x, np.lib.npyio.NpzFile):
        raise DataError(f"{images}: expected a .npy array ([data].path)")
    y = np.asarray(_load_npy(labels, "[data].labels_path"))
    return _array_source(x, y, cfg, str(images), images.name, labels.name, cfg.data.layout)



# ---------------------------------------------------------------- image folders

_TAR_CACHE_BYTES = 512 * 2**20  # image bytes kept from the listing pass of a tar archive


def _is_image(member: str) -> bool:
    return PurePosixPath(member).suffix.lower() in IMAGE_SUFFIXES


def _select_tree(members: list[str], split: str, where: Path, dirs: list[str] = ()
                 ) -> tuple[list[str], list[str], np.ndarray]:
    """Image member paths -> (kept paths, class names, labels); class = parent folder, sorted.

    `dirs` (folder paths, when known) finds empty class folders: they would shift every later label.
    """
    images = [m for m in members if _is_image(m) and len(PurePosixPath(m).parts) >= 2]
    if not images:
        raise DataError(f"{where}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in class folders "
                        "([data].path)")
    roots = {PurePosixPath(m).parts[:-2] for m in images}
    with_split = {r for r in roots if r and r[-1] == split}
    if with_split:
        roots = with_split
        images = [m for m in images if PurePosixPath(m).parts[:-2] in with_split]
    elif len(roots) > 1:
        shown = ", ".join(sorted("/".join(r) or "." for r in roots)[:6])
        raise DataError(f"{where}: several image trees ({shown}) and none named \"{split}\" "
                        "([data].split)")
    images.sort()
    classes = sorted({PurePosixPath(m).parts[-2] for m in images})
    full = {PurePosixPath(m).parts[:-1] for m in images}
    empty = sorted("/".join(PurePosixPath(d).parts) for d in dirs
                   if PurePosixPath(d).parts[:-1] in roots and PurePosixPath(d).parts not in full)
    if empty:
        raise DataError(f"{where}: class folder {empty[0]} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
                        + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
                        + "; every class folder needs images, or the labels after it shift")
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[PurePosixPath(m).parts[-2]] for m in images], dtype=np.int64)
    return images, classes, labels


def _decode(raw: bytes, name: str, channels: int, warn: Callable[[str], None]) -> torch.Tensor | None:
    try:
        with Image.open(io.BytesIO(raw)) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        warn(f"{name}: unreadable image skipped ({exc})")
        return None
    t = torch.from_numpy(arr.copy()).float() / 255.0
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1)


def _stack(decoded: list[torch.Tensor], shape: list[int], resize: str) -> torch.Tensor:
    """Images may differ in size: bring each to the input shape, then stack."""
    if not decoded:
        return torch.zeros((0, *shape))
    return torch.cat([to_input_shape(t.unsqueeze(0), shape, resize) for t in decoded])


Reader = Callable[[list[str]], dict[str, bytes]]


def _folder_tree(path: Path, split: str) -> tuple[list[str], list[str], np.ndarray, Reader]:
    files, dirs = [], []
    for p in path.rglob("*"):
        (files if p.is_file() else dirs).append(p.relative_to(path).as_posix())
    images, classes, labels = _select_tree(files, split, path, dirs)
    return images, classes, labels, lambda wanted: {m: (path / m).read_bytes() for m in wanted}


def _tar_tree(path: Path, split: str) -> tuple[list[str], list[str], np.ndarray, Reader]:
    # Listing a .tar.gz decompresses all of it; keeping the image bytes as we go costs little more,
    # so the scan's reads need no second pass (unless the images are too large to keep).
    files, dirs, cache, size = [], [], {}, 0
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isdir():
                    dirs.append(member.name)
                elif member.isfile():
                    files.append(member.name)
                    if cache is not None and _is_image(member.name):
                        cache[member.name] = tar.extractfile(member).read()
                        size += member.size
                        cache = cache if size <= _TAR_CACHE_BYTES else None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable tar archive ([data].path; {exc})") from None
    images, classes, labels = _select_tree(files, split, path, dirs)
    if cache is not None:
        cache = {m: cache[m] for m in images}  # drop the other split's bytes

    def read(wanted: list[str]) -> dict[str, bytes]:
        if cache is not None:
            return {m: cache[m] for m in wanted}
        want, out = set(wanted), {}
        with tarfile.open(path) as tar:  # one sequential pass per call
            for member in tar:
                if member.name in want:
                    out[member.name] = tar.extractfile(member).read()
                    if len(out) == len(want):
                        break
        return out

    return images, classes, labels, read


def _zip_tree(path: Path, split: str) -> tuple[list[str], list[str], np.ndarray, Reader]:
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip archive ([data].path; {exc})") from None
    files = [i.filename for i in infos if not i.is_dir()]
    dirs = [i.filename.rstrip("/") for i in infos if i.is_dir()]
    images, classes, labels = _select_tree(files, split, path, dirs)

    def read(wanted: list[str]) -> dict[str, bytes]:
        with zipfile.ZipFile(path) as zf:
            return {m: zf.read(m) for m in wanted}

    return images, classes, labels, read


def _open_imagefolder(cfg: Config) -> DataSource:
    path = cfg.resolve_path(cfg.data.path)
    channels = cfg.model.input_shape[0]
    name = path.name.lower()
    if path.is_dir():
        images, classes, labels, read_all = _folder_tree(path, cfg.data.split)
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        images, classes, labels, read_all = _tar_tree(path, cfg.data.split)
    elif name.endswith(".zip"):
        images, classes, labels, read_all = _zip_tree(path, cfg.data.split)
    else:
        raise DataError(f"{path}: expected a folder or a .tar, .tar.gz, .tgz or .zip archive of "
                        "class folders ([data].path with format = \"imagefolder\")")

    def load(idx: np.ndarray, warn: Callable[[str], None]) -> tuple[torch.Tensor, np.ndarray]:
        wanted = [images[i] for i in idx]
        raw = read_all(wanted)
        decoded, kept = [], []
        for i, member in zip(idx, wanted, strict=True):
            t = _decode(raw[member], f"{path}/{member}", channels, warn)
            if t is not None:
                decoded.append(t)
                kept.append(i)
        return _stack(decoded, cfg.model.input_shape, cfg.data.resize), np.asarray(kept, dtype=np.int64)

    return DataSource(labels, classes, load, f"{path} ({len(images)} images, {len(classes)} classes)")


# ---------------------------------------------------------------- torchvision.datasets

# How each dataset names its split, and where it keeps labels without decoding images.
_TV_SPLITS = {"MNIST": ("train", "test"), "FashionMNIST": ("train", "test"), "CIFAR10": ("train", "test"),
              "CIFAR100": ("train", "test"), "SVHN": ("train", "test", "extra"), "GTSRB": ("train", "test"),
              "STL10": ("train", "test")}
_TV_TRAIN_FLAG = {"MNIST", "FashionMNIST", "CIFAR10", "CIFAR100"}


def _tv_labels(ds: object) -> np.ndarray:
    for attr in ("targets", "labels"):
        if getattr(ds, attr, None) is not None:
            return np.asarray(getattr(ds, attr)).astype(np.int64)
    return np.array([label for _, label in ds._samples], dtype=np.int64)  # GTSRB


def _open_torchvision(cfg: Config) -> DataSource:
    import torchvision

    d = cfg.data
    root = cfg.resolve_path(d.path)
    if not root.is_dir():
        raise DataError(f"{root}: expected the dataset's root folder ([data].path with format = \"torchvision\")")
    splits = _TV_SPLITS[d.dataset]
    if d.split not in splits:
        raise DataError(f"{cfg.source}: [data].split must be one of {', '.join(splits)} for {d.dataset}, "
                        f"got {d.split!r}")
    kwargs = {"train": d.split == "train"} if d.dataset in _TV_TRAIN_FLAG else {"split": d.split}
    # CIFAR10/100 batch files are pickles: torchvision unpickles them only after their md5 matched the
    # official release's, so a user's own (possibly hostile) pickle never runs here.
    try:
        ds = getattr(torchvision.datasets, d.dataset)(str(root), download=d.download, **kwargs)
    except Exception as exc:  # torchvision raises RuntimeError for a missing/corrupt set, others on bad files
        hint = "" if d.download else "; set [data].download = true to let torchvision fetch it"
        raise DataError(f"{root}: no readable torchvision {d.dataset} {d.split} set in this root folder "
                        f"([data].path; {type(exc).__name__}: {first_line(exc)}){hint}") from None
    labels = _tv_labels(ds)
    classes = [str(c) for c in getattr(ds, "classes", [])]
    data = getattr(ds, "data", None)
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    if isinstance(data, np.ndarray) and data.ndim in (3, 4):
        source = _array_source(data, labels, cfg, f"{root} ({d.dataset} {d.split})", "data", "labels")
    else:
        source = _decode_items(ds, labels, cfg, f"{root} ({d.dataset} {d.split})")
    if classes and len(classes) >= len(source.class_names):
        source.class_names = classes
    return source


def _decode_items(ds: object, labels: np.ndarray, cfg: Config, where: str) -> DataSource:
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
        return _stack(decoded, cfg.model.input_shape, cfg.data.resize), np.asarray(kept, dtype=np.int64)

    num = int(labels.max()) + 1 if len(labels) else 0
    return DataSource(labels, [str(i) for i in range(max(num, cfg.model.num_classes))], load, where)


def _open_parquet(cfg: Config) -> DataSource:
    from .parquet_data import open_parquet  # pyarrow is an optional extra
    return open_parquet(cfg, _decode, _stack)


def _open_hf(cfg: Config) -> DataSource:
    from .hf_data import open_hf  # pyarrow is an optional extra
    return open_hf(cfg, _decode, _stack)


# ---------------------------------------------------------------- all formats


def open_data(cfg: Config) -> DataSource:
    """Open the data source the config names and check its labels against num_classes.

    With num_classes inferred (0 in the config), call this after load_model has filled it in.
    """
    d = cfg.data
    path = cfg.resolve_path(d.path)
    if not path.exists():
        raise DataError(f"{path}: data not found ([data].path)")
    if d.format in ("npz", "npy") and path.is_dir():
        raise DataError(f"{path}: is a folder; expected a .{d.format} file ([data].path with "
                        f"format = \"{d.format}\")")
    if not path.is_dir():
        check_regular_file(path, "[data].path", "a data file or folder")
    opener = {"npz": _open_npz, "npy": _open_npy, "imagefolder": _open_imagefolder,
              "torchvision": _open_torchvision, "parquet": _open_parquet, "hf": _open_hf}[d.format]
    source = opener(cfg)
    if len(source.labels) == 0:
        raise DataError(f"{path}: no samples")
    n = cfg.model.num_classes or len(source.class_names)
    what = f"[model].num_classes = {n}" if cfg.model.num_classes else f"{n} classes in the data"
    bad = source.labels[(source.labels < 0) | (source.labels >= n)]
    if len(bad):
        raise DataError(f"{path}: labels must be in 0..{n - 1} ({what}); found "
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
