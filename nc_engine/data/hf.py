"""[data].format = "hf": a folder written by Hugging Face `datasets`' save_to_disk, read without `datasets`.

A Dataset folder holds state.json (its arrow shards), dataset_info.json (its features) and the shards in
Arrow's stream format; a DatasetDict folder holds dataset_dict.json and one such folder per split. The
shards are memory-mapped: the label column is read up front, and a scan's selected rows alone are decoded.
Column detection and cell decoding are parquet_data.py's (the hub stores the same columns in both).
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
from nc_engine.files import JsonFileProblem, escapes_folder, read_json_object

_EXPECTED = "a folder written by datasets' save_to_disk (state.json and .arrow files, or dataset_dict.json)"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path)
    except JsonFileProblem as problem:
        raise DataError(f"{path}: {problem}; expected {_EXPECTED}") from None


def split_folder(path: Path, split: str) -> Path:
    """The Dataset folder: `path` itself, or the DatasetDict's `split` subfolder."""
    if not path.is_dir():
        raise DataError(f'{path}: expected {_EXPECTED} ([data].path with format = "hf")')
    if (path / "dataset_dict.json").is_file():
        splits: Any = _read_json(path / "dataset_dict.json")
        splits = splits.get("splits") if isinstance(splits, dict) else None
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise DataError(f'{path / "dataset_dict.json"}: expected {{"splits": [...]}} as save_to_disk writes it')
        if split not in splits:
            raise DataError(
                f"{path}: no split {split!r} in this DatasetDict (splits: {', '.join(splits)}); set [data].split"
            )
        problem = escapes_folder(path, split)
        if problem is not None:
            raise DataError(problem)
        path = path / split
    for name in ("state.json", "dataset_info.json"):
        problem = escapes_folder(path, name)
        if problem is not None:
            raise DataError(problem)
    if not (path / "state.json").is_file():
        raise DataError(f'{path}: no state.json; expected {_EXPECTED} ([data].path with format = "hf")')
    return path


def _shards(folder: Path) -> list[Path]:
    """The arrow files state.json lists, in order."""
    state = _read_json(folder / "state.json")
    files = state.get("_data_files") if isinstance(state, dict) else None
    names = [f.get("filename") for f in files] if isinstance(files, list) else []
    if not names or not all(isinstance(n, str) and "/" not in n and n not in ("", ".", "..") for n in names):
        raise DataError(f'{folder / "state.json"}: lists no data files ("_data_files"); expected {_EXPECTED}')
    for name in names:  # state.json is the dataset's own: none of its shards may be read from elsewhere
        problem = escapes_folder(folder, name)
        if problem is not None:
            raise DataError(problem)
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DataError(f"{folder / missing[0]}: data file listed in state.json not found")
    return [folder / n for n in names]


def _table(shards: list[Path]) -> Any:
    """The shards as one memory-mapped Arrow table: nothing is read until a column or row is touched."""
    import pyarrow as pa

    tables = []
    for shard in shards:
        try:
            tables.append(pa.ipc.open_stream(pa.memory_map(str(shard))).read_all())
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{shard}: not an Arrow file written by save_to_disk ({first_line(exc)})") from None
    try:
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    except pa.ArrowInvalid as exc:
        raise DataError(f"{shards[0].parent}: the arrow files do not share one schema ({exc})") from None


def _feature_names(folder: Path, label: str) -> list[str]:
    """ClassLabel names from dataset_info.json, when the arrow metadata lacks them."""
    info = _read_json(folder / "dataset_info.json") if (folder / "dataset_info.json").is_file() else {}
    feature = (info.get("features") or {}).get(label) if isinstance(info, dict) else None
    names = feature.get("names") if isinstance(feature, dict) else None
    return [str(n) for n in names] if isinstance(names, list) else []


def open_hf(cfg: Config) -> DataSource:
    """A DataSource over a save_to_disk folder."""
    need_pyarrow(cfg, "hf")
    path = cfg.resolve_path(cfg.data.path)
    folder = split_folder(path, cfg.data.split)
    shards = _shards(folder)
    table = _table(shards)
    image, label = image_label_columns(table.schema, cfg, folder)
    labels, names = label_codes(table.column(label), folder, label)
    names = names or hub_class_names(table.schema, label) or _feature_names(folder, label)
    column = table.column(image)

    def cells(rows: np.ndarray) -> dict[int, Any]:
        picked = column.take(rows).to_pylist()  # only these rows' bytes are paged in from the map
        return {int(r): image_bytes(v) for r, v in zip(rows, picked, strict=True)}

    integer = integer_pixels(table.schema.field(image).type)
    return image_source(
        folder,
        labels,
        names,
        cells,
        integer,
        cfg,
        f"{folder} ({len(labels)} rows in {len(shards)} arrow file(s); {image!r}, {label!r})",
    )
