"""[data].format = "parquet": images stored as encoded bytes in a parquet column (the Hugging Face hub's layout).

Only the label column is read up front; a scan's selected rows are decoded from their row groups alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .config import Config
from .errors import DataError, first_line

if TYPE_CHECKING:
    from .data import DataSource

_IMAGE_NAMES = ("image", "img", "images", "pixel_values", "picture")
_LABEL_NAMES = ("label", "labels", "fine_label", "target", "targets", "class", "y")


def _parquet_files(path: Path, split: str) -> list[Path]:
    """The file itself, or the folder's .parquet files; those named after the split when some are."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise DataError(f"{path}: no .parquet files in the folder ([data].path with format = \"parquet\")")
    named = [p for p in files if split in p.relative_to(path).parts[:-1] or p.name.startswith(f"{split}-")
             or p.stem == split]
    return named or files


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


def _integer_pixels(kind: Any) -> bool:
    """Array pixels stored as integers are 0..255; floats are 0..1."""
    import pyarrow as pa
    kind = _storage(kind)
    while pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        kind = _storage(kind.value_type)
    return pa.types.is_integer(kind)


def _columns(schema: Any, cfg: Config, where: Path) -> tuple[str, str]:
    """The image and label columns: given by [data].image_column / label_column, else found by type and name."""
    import pyarrow as pa
    d, names = cfg.data, list(schema.names)
    for key in ("image_column", "label_column"):
        if getattr(d, key) and getattr(d, key) not in names:
            raise DataError(f"{where}: no column {getattr(d, key)!r} ([data].{key}); columns: {', '.join(names)}")
    images = [n for n in names if _is_image_type(schema.field(n).type)]
    image = d.image_column or next((n for n in images if n.lower() in _IMAGE_NAMES), images[0] if images else "")
    if not image:
        raise DataError(f"{where}: no image column (encoded image bytes, a struct with \"bytes\", or 2-D/3-D "
                        "arrays of pixels); columns: "
                        f"{', '.join(names)}; set [data].image_column")
    usable = [n for n in names if n != image and (pa.types.is_integer(schema.field(n).type)
                                                    or pa.types.is_string(schema.field(n).type))]
    label = d.label_column or next((n for n in usable if n.lower() in _LABEL_NAMES), usable[0] if usable else "")
    if not label:
        raise DataError(f"{where}: no label column (integers or strings); columns: {', '.join(names)}; "
                        "set [data].label_column")
    return image, label


def _hub_class_names(schema: Any, label: str) -> list[str]:
    """Class names the hub records for a ClassLabel column in the file's metadata, or []."""
    try:
        info = json.loads((schema.metadata or {})[b"huggingface"])
        names = info["info"]["features"][label]["names"]
    except (KeyError, TypeError, ValueError):
        return []
    return [str(n) for n in names] if isinstance(names, list) else []


def _labels(column: Any, where: Path, label: str) -> tuple[np.ndarray, list[str]]:
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


def _image_bytes(value: Any) -> bytes | list | None:
    """Encoded bytes from a cell (a {"bytes", "path"} struct as the hub writes it, or raw bytes), or the
    nested lists of an array cell."""
    if isinstance(value, dict):
        value = value.get("bytes")
    return value if isinstance(value, bytes | list) else None


def _array_image(value: list, name: str, integer: bool, warn: Callable[[str], None]) -> torch.Tensor | None:
    """An array cell (H x W, H x W x C or C x H x W) as a float C x H x W tensor in [0, 1]."""
    try:
        arr = np.asarray(value, dtype=np.float32)
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


def decode_cell(raw: Any, name: str, channels: int, integer: bool, decode: Callable,
                warn: Callable[[str], None]) -> torch.Tensor | None:
    """One image cell: encoded bytes through data.py's `decode`, arrays here; None (warned) if unusable."""
    if raw is None:
        warn(f"{name}: no image bytes; skipped")
        return None
    if isinstance(raw, list):
        return _array_image(raw, name, integer, warn)
    return decode(raw, name, channels, warn)


def image_source(path: Path, labels: np.ndarray, names: list[str], cells: Callable[[np.ndarray], dict],
                 integer: bool, cfg: Config, decode: Callable, stack: Callable, description: str) -> DataSource:
    """A DataSource whose loader decodes only the selected rows' cells (`cells` reads them)."""
    from .data import DataSource  # here: data.py imports this module only when a columnar source opens
    shape, channels = cfg.model.input_shape, cfg.model.input_shape[0]

    def load(idx: np.ndarray, warn: Callable[[str], None]) -> tuple[torch.Tensor, np.ndarray]:
        raw = cells(np.asarray(idx, dtype=np.int64))
        decoded, kept = [], []
        for i in idx:
            t = decode_cell(raw[int(i)], f"{path} row {int(i)}", channels, integer, decode, warn)
            if t is not None:
                decoded.append(t)
                kept.append(i)
        return stack(decoded, shape, cfg.data.resize), np.asarray(kept, dtype=np.int64)

    num = int(labels.max()) + 1 if len(labels) else 0
    names = names or [str(i) for i in range(max(num, cfg.model.num_classes))]
    return DataSource(labels, names, load, description)


def _read_rows(files: list[Any], groups: list[tuple[int, int, int]], rows: np.ndarray,
               image: str) -> dict[int, bytes | None]:
    """The image cells of the global `rows`, reading only the row groups that hold them."""
    starts = np.array([start for _, _, start in groups])
    where = np.searchsorted(starts, rows, side="right") - 1
    cells: dict[int, bytes | None] = {}
    for g in np.unique(where):
        file, group, start = groups[g]
        column = files[file].read_row_group(group, columns=[image]).column(0)
        for row in rows[where == g]:
            cells[int(row)] = _image_bytes(column[int(row) - start].as_py())
    return cells


def need_pyarrow(cfg: Config, extra: str) -> None:
    """The columnar formats read through pyarrow, an optional extra: without it, one line naming the extra."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise DataError(f"{cfg.data.path}: [data].format = \"{cfg.data.format}\" needs the pyarrow package: "
                        f"pip install \"nc-tui[{extra}]\"") from None


def open_parquet(cfg: Config, decode: Callable, stack: Callable) -> DataSource:
    """A DataSource over one parquet file or a folder of them (data.py's decode and stack do the pixels)."""
    need_pyarrow(cfg, "parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = cfg.resolve_path(cfg.data.path)
    paths = _parquet_files(path, cfg.data.split)
    try:
        files = [pq.ParquetFile(p) for p in paths]
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable parquet file ({first_line(exc)})") from None
    image, label = _columns(files[0].schema_arrow, cfg, paths[0])
    groups, parts, start = [], [], 0
    for i, f in enumerate(files):
        if image not in f.schema_arrow.names or label not in f.schema_arrow.names:
            raise DataError(f"{paths[i]}: lacks the {image!r} or {label!r} column of {paths[0].name}")
        parts.append(f.read(columns=[label]).column(0))
        for g in range(f.num_row_groups):
            groups.append((i, g, start))
            start += f.metadata.row_group(g).num_rows
    labels, names = _labels(pa.chunked_array([c for p in parts for c in p.chunks], type=parts[0].type),
                            path, label)
    names = names or _hub_class_names(files[0].schema_arrow, label)
    integer = _integer_pixels(files[0].schema_arrow.field(image).type)
    return image_source(path, labels, names, lambda rows: _read_rows(files, groups, rows, image), integer, cfg,
                        decode, stack, f"{path} ({len(labels)} rows; {image!r}, {label!r})")
