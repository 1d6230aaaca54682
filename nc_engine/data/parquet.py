"""[data].format = "parquet": images stored as encoded bytes in a parquet column (the Hugging Face hub's layout).

Only the label column is read up front; a scan's selected rows are decoded from their row groups alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from nc_engine.config.settings import Config
from nc_engine.data.columns import (
    hub_class_names,
    image_bytes,
    image_label_columns,
    image_source,
    integer_pixels,
    label_codes,
    need_pyarrow,
)
from nc_engine.data.source import DataSource
from nc_engine.errors import DataError, first_line


def _parquet_files(path: Path, split: str) -> list[Path]:
    """The file itself, or the folder's .parquet files; those named after the split when some are."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise DataError(f'{path}: no .parquet files in the folder ([data].path with format = "parquet")')
    named = [
        p for p in files if split in p.relative_to(path).parts[:-1] or p.name.startswith(f"{split}-") or p.stem == split
    ]
    return named or files


MAX_ROWS = 20_000_000  # ImageNet-21k has 14M images


def _read_rows(
    files: list[Any], groups: list[tuple[int, int, int]], rows: np.ndarray, image: str
) -> dict[int, bytes | list | None]:
    """The image cells of the global `rows`, reading only the row groups that hold them."""
    starts = np.array([start for _, _, start in groups])
    where = np.searchsorted(starts, rows, side="right") - 1
    cells: dict[int, bytes | list | None] = {}
    for g in np.unique(where):
        file, group, start = groups[g]
        column = files[file].read_row_group(group, columns=[image]).column(0)
        for row in rows[where == g]:
            cells[int(row)] = image_bytes(column[int(row) - start].as_py())
    return cells


def open_parquet(cfg: Config) -> DataSource:
    """A DataSource over one parquet file or a folder of them."""
    need_pyarrow(cfg, "parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = cfg.resolve_path(cfg.data.path)
    paths = _parquet_files(path, cfg.data.split)
    try:
        files = [pq.ParquetFile(p) for p in paths]
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: not a readable parquet file ({first_line(exc)})") from None
    image, label = image_label_columns(files[0].schema_arrow, cfg, paths[0])
    rows = sum(f.metadata.num_rows for f in files)
    if rows > MAX_ROWS:  # the label column is read whole: a run-length-encoded one can be tiny on disk
        raise DataError(f"{path}: {rows:,} rows; a parquet dataset is read here up to {MAX_ROWS:,} rows")
    groups, parts, start = [], [], 0
    for i, f in enumerate(files):
        if image not in f.schema_arrow.names or label not in f.schema_arrow.names:
            raise DataError(f"{paths[i]}: lacks the {image!r} or {label!r} column of {paths[0].name}")
        parts.append(f.read(columns=[label]).column(0))
        for g in range(f.num_row_groups):
            groups.append((i, g, start))
            start += f.metadata.row_group(g).num_rows
    labels, names = label_codes(pa.chunked_array([c for p in parts for c in p.chunks], type=parts[0].type), path, label)
    names = names or hub_class_names(files[0].schema_arrow, label)
    integer = integer_pixels(files[0].schema_arrow.field(image).type)
    return image_source(
        path,
        labels,
        names,
        lambda rows: _read_rows(files, groups, rows, image),
        integer,
        cfg,
        f"{path} ({len(labels)} rows; {image!r}, {label!r})",
    )
