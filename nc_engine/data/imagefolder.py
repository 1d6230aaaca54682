"""Image files in class folders (train/ and test/ splits or one level of classes): a folder, a tar
archive or a zip."""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import IO, cast

import numpy as np
import torch

from nc_engine.config.settings import Config
from nc_engine.data.source import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_BYTES,
    DataSource,
    Reader,
    decode_image,
    fit_image,
    stack_images,
)
from nc_engine.errors import DataError

_TAR_CACHE_BYTES = 512 * 2**20  # image bytes kept from the listing pass of a tar archive


def _is_image(member: str) -> bool:
    return PurePosixPath(member).suffix.lower() in IMAGE_SUFFIXES


def _select_tree(
    members: list[str], split: str, where: Path, dirs: Sequence[str] = ()
) -> tuple[list[str], list[str], np.ndarray]:
    """Image member paths -> (kept paths, class names, labels); class = parent folder, sorted.

    `dirs` (folder paths, when known) finds empty class folders: they would shift every later label.
    """
    images = [m for m in members if _is_image(m) and len(PurePosixPath(m).parts) >= 2]
    if not images:
        raise DataError(f"{where}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in class folders ([data].path)")
    roots = {PurePosixPath(m).parts[:-2] for m in images}
    with_split = {r for r in roots if r and r[-1] == split}
    if with_split:
        roots = with_split
        images = [m for m in images if PurePosixPath(m).parts[:-2] in with_split]
    elif len(roots) > 1:
        shown = ", ".join(sorted("/".join(r) or "." for r in roots)[:6])
        raise DataError(f'{where}: several image trees ({shown}) and none named "{split}" ([data].split)')
    images.sort()
    classes = sorted({PurePosixPath(m).parts[-2] for m in images})
    full = {PurePosixPath(m).parts[:-1] for m in images}
    empty = sorted(
        "/".join(PurePosixPath(d).parts)
        for d in dirs
        if PurePosixPath(d).parts[:-1] in roots and PurePosixPath(d).parts not in full
    )
    if empty:
        raise DataError(
            f"{where}: class folder {empty[0]} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            + (f" (and {len(empty) - 1} more)" if len(empty) > 1 else "")
            + "; every class folder needs images, or the labels after it shift"
        )
    index = {c: i for i, c in enumerate(classes)}
    labels = np.array([index[PurePosixPath(m).parts[-2]] for m in images], dtype=np.int64)
    return images, classes, labels


def _folder_tree(path: Path, split: str) -> tuple[list[str], list[str], np.ndarray, Reader]:
    files: list[str] = []
    dirs: list[str] = []
    for p in path.rglob("*"):
        (files if p.is_file() else dirs).append(p.relative_to(path).as_posix())
    images, classes, labels = _select_tree(files, split, path, dirs)

    def read(wanted: list[str]) -> dict[str, bytes]:
        return {m: (path / m).read_bytes() for m in wanted if (path / m).stat().st_size <= MAX_IMAGE_BYTES}

    return images, classes, labels, read


def _tar_tree(path: Path, split: str) -> tuple[list[str], list[str], np.ndarray, Reader]:
    # Listing a .tar.gz decompresses all of it; keeping the image bytes as we go costs little more,
    # so the scan's reads need no second pass (unless the images are too large to keep).
    files: list[str] = []
    dirs: list[str] = []
    cache: dict[str, bytes] | None = {}
    size = 0
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isdir():
                    dirs.append(member.name)
                elif member.isfile():
                    files.append(member.name)
                    if cache is not None and _is_image(member.name) and member.size <= MAX_IMAGE_BYTES:
                        cache[member.name] = cast(IO[bytes], tar.extractfile(member)).read()  # isfile(): not None
                        size += member.size
                        cache = cache if size <= _TAR_CACHE_BYTES else None
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable tar archive ([data].path; {exc})") from None
    images, classes, labels = _select_tree(files, split, path, dirs)
    if cache is not None:
        cache = {m: cache[m] for m in images if m in cache}  # drop the other split's bytes (and too large ones)

    def read(wanted: list[str]) -> dict[str, bytes]:
        if cache is not None:
            return {m: cache[m] for m in wanted if m in cache}
        want, out = set(wanted), {}
        with tarfile.open(path) as tar:  # one sequential pass per call
            for member in tar:
                if member.name in want and member.size <= MAX_IMAGE_BYTES:
                    out[member.name] = cast(IO[bytes], tar.extractfile(member)).read()  # an image file: not None
                    if len(out) == len(want):
                        break
                elif member.name in want:
                    want.discard(member.name)  # too large: left out (skipped with a warning)
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
            return {m: zf.read(m) for m in wanted if zf.getinfo(m).file_size <= MAX_IMAGE_BYTES}

    return images, classes, labels, read


def open_imagefolder(cfg: Config) -> DataSource:
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
        raise DataError(
            f"{path}: expected a folder or a .tar, .tar.gz, .tgz or .zip archive of "
            'class folders ([data].path with format = "imagefolder")'
        )

    def load(idx: np.ndarray, warn: Callable[[str], None]) -> tuple[torch.Tensor, np.ndarray]:
        wanted = [images[i] for i in idx]
        raw = read_all(wanted)
        decoded, kept = [], []
        for i, member in zip(idx, wanted, strict=True):
            if member not in raw:
                warn(f"{path}/{member}: image file over {MAX_IMAGE_BYTES >> 20} MiB skipped unread")
                continue
            t = decode_image(raw[member], f"{path}/{member}", channels, warn)
            if t is not None:
                decoded.append(fit_image(t, cfg.model.input_shape, cfg.data.resize))
                kept.append(i)
        return stack_images(decoded, cfg.model.input_shape, cfg.data.resize), np.asarray(kept, dtype=np.int64)

    return DataSource(labels, classes, load, f"{path} ({len(images)} images, {len(classes)} classes)")
