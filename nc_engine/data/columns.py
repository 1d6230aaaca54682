"""What the columnar formats (parquet, hf) share: finding the image and label columns, the labels' codes
and names, and a DataSource that decodes only the selected rows' cells."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nc_engine.config.settings import Config
from nc_engine.data.source import DataSource, decode_image, fit_image, stack_images
from nc_engine.errors import DataError
from nc_engine.files import parse_json

_IMAGE_NAMES = ("image", "img", "images", "pixel_values", "picture")


_LABEL_NAMES = ("label", "labels", "fine_label", "target", "targets", "class", "y")


def _storage(kind: Any) -> Any:
    """An Arrow extension type's storage (datasets' Array2D/Array3D are nested lists underneath)."""
    import pyarrow as pa

    return kind.storage_type if isinstance(kind, pa.ExtensionType) else kind


def _array_depth(kind: Any) -> int:
    """How many list levels wrap a numeric value (2 for H x W, 3 for H x W x C), 0 if not numbers."""
    import pyarrow as pa

    depth, kind = 0, _storage(kind)
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        depth, kind = depth + 1, _storage(kind.value_type)
    return depth if pa.types.is_integer(kind) or pa.types.is_floating(kind) else 0


def _is_image_type(kind: Any) -> bool:
    """Encoded bytes (raw, or a struct with "bytes" as the hub writes it) or a 2-D/3-D array of numbers."""
    import pyarrow as pa

    kind = _storage(kind)
    if pa.types.is_struct(kind):
        return kind.get_field_index("bytes") >= 0
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or _array_depth(kind) in (2, 3)


def integer_pixels(kind: Any) -> bool:
    """Array pixels stored as integers are 0..255; floats are 0..1."""
    import pyarrow as pa

    kind = _storage(kind)
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = _storage(kind.value_type)
    return pa.types.is_integer(kind)


def image_label_columns(schema: Any, cfg: Config, where: Path) -> tuple[str, str]:
    """The image and label columns: given by [data].image_column / label_column, else found by type and name."""
    import pyarrow as pa

    d, names = cfg.data, list(schema.names)
    for key in ("image_column", "label_column"):
        if getattr(d, key) and getattr(d, key) not in names:
            raise DataError(f"{where}: no column {getattr(d, key)!r} ([data].{key}); columns: {', '.join(names)}")
    images = [n for n in names if _is_image_type(schema.field(n).type)]
    image = d.image_column or next((n for n in images if n.lower() in _IMAGE_NAMES), images[0] if images else "")
    if not image:
        raise DataError(
            f'{where}: no image column (encoded image bytes, a struct with "bytes", or 2-D/3-D '
            "arrays of pixels); columns: "
            f"{', '.join(names)}; set [data].image_column"
        )
    usable = [
        n
        for n in names
        if n != image and (pa.types.is_integer(schema.field(n).type) or pa.types.is_string(schema.field(n).type))
    ]
    label = d.label_column or next((n for n in usable if n.lower() in _LABEL_NAMES), usable[0] if usable else "")
    if not label:
        raise DataError(
            f"{where}: no label column (integers or strings); columns: {', '.join(names)}; set [data].label_column"
        )
    return image, label


def hub_class_names(schema: Any, label: str) -> list[str]:
    """Class names the hub records for a ClassLabel column in the file's metadata, or []."""
    try:
        info = parse_json((schema.metadata or {})[b"huggingface"])
        names = info["info"]["features"][label]["names"]
    except (KeyError, TypeError, ValueError):
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def label_codes(column: Any, where: Path, label: str) -> tuple[np.ndarray, list[str]]:
    """int64 labels, and class names when the labels are strings (sorted, numbered in that order)."""
    import pyarrow as pa

    if column.null_count:
        raise DataError(f"{where}: the label column {label!r} has {column.null_count} empty values")
    if pa.types.is_string(column.type):
        values = np.asarray(column.to_pylist(), dtype=object)
        names = sorted(set(values.tolist()))
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[v] for v in values], dtype=np.int64), names
    return np.asarray(column.to_numpy()).astype(np.int64), []


def image_bytes(value: Any) -> bytes | list | None:
    """Encoded bytes from a cell (a {"bytes", "path"} struct as the hub writes it, or raw bytes), or the
    nested lists of an array cell."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return value if isinstance(value, bytes | list) else None


def _array_image(value: list, name: str, integer: bool, warn: Callable[[str], None]) -> torch.Tensor | None:
    """An array cell (H x W, H x W x C or C x H x W) as a float C x H x W tensor in [0, 1]."""
    try:
        arr: np.ndarray = np.asarray(value, dtype=np.float32)
    except ValueError:
        arr = np.zeros(0)
    if arr.ndim == 2:
        arr = arr[None]
    elif arr.ndim == 3 and arr.shape[-1] in (1, 3, 4):
        arr = arr.transpose(2, 0, 1)
    if arr.ndim != 3 or arr.shape[0] not in (1, 3, 4) or not np.isfinite(arr).all():
        warn(f"{name}: not an image array (H x W, H x W x C or C x H x W of finite numbers); skipped")
        return None
    return torch.from_numpy(arr / 255.0 if integer else arr).clamp(0, 1)


def decode_cell(raw: Any, name: str, channels: int, integer: bool, warn: Callable[[str], None]) -> torch.Tensor | None:
    """One image cell: encoded bytes decoded as image files are, arrays here; None (warned) if unusable."""
    if raw is None:
        warn(f"{name}: no image bytes; skipped")
        return None
    if isinstance(raw, list):
        return _array_image(raw, name, integer, warn)
    return decode_image(raw, name, channels, warn)


def image_source(
    path: Path,
    labels: np.ndarray,
    names: list[str],
    cells: Callable[[np.ndarray], dict],
    integer: bool,
    cfg: Config,
    description: str,
) -> DataSource:
    """A DataSource whose loader decodes only the selected rows' cells (`cells` reads them)."""
    shape, channels = cfg.model.input_shape, cfg.model.input_shape[0]

    def load(idx: np.ndarray, warn: Callable[[str], None]) -> tuple[torch.Tensor, np.ndarray]:
        raw = cells(np.asarray(idx, dtype=np.int64))
        decoded, kept = [], []
        for i in idx:
            t = decode_cell(raw[int(i)], f"{path} row {int(i)}", channels, integer, warn)
            if t is not None:
                decoded.append(fit_image(t, shape, cfg.data.resize))
                kept.append(i)
        return stack_images(decoded, shape, cfg.data.resize), np.asarray(kept, dtype=np.int64)

    num = int(labels.max()) + 1 if len(labels) else 0
    names = names or [str(i) for i in range(max(num, cfg.model.num_classes))]
    return DataSource(labels, names, load, description)


def need_pyarrow(cfg: Config, extra: str) -> None:
    """The columnar formats read through pyarrow, an optional extra: without it, one line naming the extra."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DataError(
            f'{cfg.data.path}: [data].format = "{cfg.data.format}" needs the pyarrow package: '
            f'pip install "nc-tui[{extra}]"'
        ) from None
