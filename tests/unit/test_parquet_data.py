"""[data].format = "parquet": PNG bytes in a column, as the Hugging Face hub stores image datasets."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from nc_engine.config.settings import config_from_dict
from nc_engine.data.load import open_data
from nc_engine.errors import DataError
from tests.conftest import require_module

pa = require_module("pyarrow")
pq = require_module("pyarrow.parquet")


def png(seed):
    pixels = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return pixels, buf.getvalue()


def write(path, n=12, struct=True, labels=None, names=("airplane", "car", "bird"), row_group_size=5):
    images = [png(i) for i in range(n)]
    cells = (
        [{"bytes": raw, "path": f"{i}.png"} for i, (_, raw) in enumerate(images)]
        if struct
        else [raw for _, raw in images]
    )
    labels = labels if labels is not None else [i % 3 for i in range(n)]
    table = pa.table({"img": cells, "fine_label": labels, "note": ["x"] * n})
    hub = {"info": {"features": {"fine_label": {"names": list(names), "_type": "ClassLabel"}}}}
    table = table.replace_schema_metadata({b"huggingface": json.dumps(hub).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=row_group_size)
    return [p for p, _ in images]


def cfg(tmp_path, **data):
    table = {"format": "parquet", "path": "d.parquet", **data}
    return config_from_dict(
        {"model": {"input_shape": [3, 8, 8], "num_classes": 3}, "data": table},
        source=str(tmp_path / "c.toml"),
        base_dir=tmp_path,
    )


@pytest.mark.parametrize("struct", [True, False])
def test_parquet_rows_decode_by_index_with_hub_class_names(tmp_path, struct):
    pixels = write(tmp_path / "d.parquet", struct=struct)
    source = open_data(cfg(tmp_path))
    assert source.labels.tolist() == [i % 3 for i in range(12)]
    assert source.class_names == ["airplane", "car", "bird"]
    x, kept = source.load(np.array([11, 0, 6]), lambda m: None)
    assert kept.tolist() == [11, 0, 6]
    expected = torch.stack([torch.from_numpy(pixels[i]).permute(2, 0, 1).float() / 255 for i in (11, 0, 6)])
    torch.testing.assert_close(x, expected)


def test_parquet_reads_only_the_row_groups_it_needs(tmp_path, monkeypatch):
    write(tmp_path / "d.parquet")
    source = open_data(cfg(tmp_path))
    read = []
    original = pq.ParquetFile.read_row_group
    monkeypatch.setattr(
        pq.ParquetFile, "read_row_group", lambda self, i, **kw: read.append(i) or original(self, i, **kw)
    )
    source.load(np.array([1, 3]), lambda m: None)
    assert read == [0]  # rows 0-4 are row group 0; groups 1 and 2 stay unread


def test_parquet_folder_split_string_labels_and_named_columns(tmp_path):
    write(tmp_path / "ds" / "data" / "train-00000-of-00001.parquet", n=4)
    pixels = write(tmp_path / "ds" / "data" / "test-00000-of-00002.parquet", n=6, labels=["b", "a"] * 3)
    write(tmp_path / "ds" / "data" / "test-00001-of-00002.parquet", n=6, labels=["c", "a"] * 3)
    source = open_data(cfg(tmp_path, path="ds", image_column="img", label_column="fine_label"))
    assert source.class_names == ["a", "b", "c"] and len(source.labels) == 12
    assert source.labels[:2].tolist() == [1, 0] and source.labels[6].tolist() == 2
    x, _ = source.load(np.array([2]), lambda m: None)
    torch.testing.assert_close(x[0], torch.from_numpy(pixels[2]).permute(2, 0, 1).float() / 255)


def test_parquet_errors_are_one_line_naming_the_file(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="d.parquet: not a readable parquet file"):
        open_data(cfg(tmp_path))
    write(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"no column 'pixels' \(\[data\]\.image_column\)"):
        open_data(cfg(tmp_path, image_column="pixels"))
    pq.write_table(pa.table({"label": [0, 1]}), tmp_path / "d.parquet")
    with pytest.raises(DataError, match="no image column") as err:
        open_data(cfg(tmp_path))
    assert "\n" not in str(err.value)
