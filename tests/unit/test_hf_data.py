"""[data].format = "hf": folders written by datasets' save_to_disk, built here offline, read lazily."""

import io
import tracemalloc

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from nc_engine import run_scan
from nc_engine.config.settings import config_from_dict
from nc_engine.data.load import open_data
from nc_engine.errors import DataError
from tests.conftest import require_module
from tests.tiny_scan import linear_model

NAMES = ["airplane", "car", "bird"]


def png(seed, side=8):
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    return pixels, buf.getvalue()


def image_dataset(n, side=8, offset=0):
    """A Dataset with an Image column (PNG bytes) and a ClassLabel column, and its pixels."""
    datasets = require_module("datasets")
    images = [png(offset + i, side) for i in range(n)]
    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=NAMES), "note": datasets.Value("string")}
    )
    data = {
        "img": [{"bytes": raw, "path": None} for _, raw in images],
        "label": [i % 3 for i in range(n)],
        "note": ["x"] * n,
    }
    return datasets.Dataset.from_dict(data, features=features), [p for p, _ in images]


def cfg(tmp_path, scan=None, **data):
    table = {
        "model": {"format": "torchscript", "path": "m.pt", "input_shape": [3, 8, 8], "num_classes": 3},
        "data": {"format": "hf", "path": "ds", **data},
        "output": {"dir": "runs"},
    }
    if scan:
        table["scan"] = scan
    return config_from_dict(table, source=str(tmp_path / "c.toml"), base_dir=tmp_path)


def test_dataset_dict_split_decodes_selected_rows_with_class_names(tmp_path):
    datasets = require_module("datasets")
    train, _ = image_dataset(6)
    test, pixels = image_dataset(9, offset=100)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "ds"))
    source = open_data(cfg(tmp_path))  # split = "test", columns found by type and name
    assert source.labels.tolist() == [i % 3 for i in range(9)] and source.class_names == NAMES
    x, kept = source.load(np.array([8, 0, 4]), lambda m: None)
    assert kept.tolist() == [8, 0, 4]
    expected = torch.stack([torch.from_numpy(pixels[i]).permute(2, 0, 1).float() / 255 for i in (8, 0, 4)])
    torch.testing.assert_close(x, expected)
    assert len(open_data(cfg(tmp_path, split="train")).labels) == 6


def test_only_the_drawn_rows_are_decoded_or_read(tmp_path, monkeypatch):
    import pyarrow as pa

    import nc_engine.data.columns as columns_module

    image_dataset(2000, side=32)[0].save_to_disk(str(tmp_path / "ds"), max_shard_size="2MB")
    size = sum(p.stat().st_size for p in (tmp_path / "ds").glob("*.arrow"))
    decoded = []
    original = columns_module.decode_image
    monkeypatch.setattr(columns_module, "decode_image", lambda raw, *a: decoded.append(1) or original(raw, *a))
    before = pa.total_allocated_bytes()
    tracemalloc.start()
    try:
        source = open_data(cfg(tmp_path))
        x, _ = source.load(np.arange(0, 2000, 50), lambda m: None)
        python_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(decoded) == 40 and x.shape == (40, 3, 8, 8)  # 32 x 32 images resized to the model's 8 x 8
    assert len(list((tmp_path / "ds").glob("*.arrow"))) > 1  # several shards, read as one table
    # memory-mapped: neither Arrow nor Python holds more than a sliver of the images' bytes
    assert pa.total_allocated_bytes() - before < size / 10, (pa.total_allocated_bytes() - before, size)
    assert python_peak < size / 4, (python_peak, size)


@pytest.mark.parametrize("kind", ["Array3D", "lists"])
def test_array_images_and_given_columns(tmp_path, kind):
    datasets = require_module("datasets")
    pixels = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    if kind == "Array3D":
        features = datasets.Features({"pixels": datasets.Array3D((8, 8, 3), "uint8"), "y": datasets.Value("int64")})
        ds = datasets.Dataset.from_dict({"pixels": pixels, "y": [0, 1, 2] * 2}, features=features)
    else:  # plain nested lists of floats in [0, 1], channels first
        ds = datasets.Dataset.from_dict({"pixels": (pixels.transpose(0, 3, 1, 2) / 255.0).tolist(), "y": [0, 1, 2] * 2})
    ds.save_to_disk(str(tmp_path / "ds"))
    source = open_data(cfg(tmp_path, image_column="pixels", label_column="y"))
    assert source.class_names == ["0", "1", "2"]
    x, _ = source.load(np.array([5, 1]), lambda m: None)
    expected = torch.from_numpy(pixels[[5, 1]]).permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(x, expected, atol=1e-6, rtol=0)


def test_a_scan_runs_on_a_save_to_disk_folder(tmp_path):
    image_dataset(90)[0].save_to_disk(str(tmp_path / "ds"))
    linear_model(tmp_path / "m.pt", shape=(3, 8, 8))
    report = run_scan(cfg(tmp_path, {"samples": 32, "asr_samples": 32, "batch_size": 32, "max_steps": 3}))
    assert report.complete and [r.name for r in report.labels] == NAMES


def test_hf_folder_errors_are_one_line(tmp_path):
    datasets = require_module("datasets")
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "data.arrow").write_bytes(b"nothing")
    cases = [("no state.json; expected a folder written by datasets' save_to_disk", {})]
    (tmp_path / "file").write_text("x")
    cases.append(("expected a folder written by datasets' save_to_disk", {"path": "file"}))
    image_dataset(3)[0].save_to_disk(str(tmp_path / "dd" / "train"))
    (tmp_path / "dd" / "dataset_dict.json").write_text('{"splits": ["train"]}')
    cases.append(("no split 'test' in this DatasetDict (splits: train); set [data].split", {"path": "dd"}))
    datasets.Dataset.from_dict({"label": [0, 1], "other": [1, 2]}).save_to_disk(str(tmp_path / "noimg"))
    cases.append(("no image column", {"path": "noimg"}))
    image_dataset(3)[0].save_to_disk(str(tmp_path / "torn"))
    next((tmp_path / "torn").glob("*.arrow")).write_bytes(b"torn")
    cases.append(("not an Arrow file written by save_to_disk", {"path": "torn"}))
    for words, data in cases:
        with pytest.raises(DataError) as err:
            open_data(cfg(tmp_path, **data))
        assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_shard_linked_outside_the_dataset_folder_is_refused(tmp_path):
    """Issue 28 item 3: a shard symlinked to an arrow file elsewhere was read."""
    image_dataset(3)[0].save_to_disk(str(tmp_path / "ds"))
    shard = next((tmp_path / "ds").glob("*.arrow"))
    shard.rename(tmp_path / "elsewhere.arrow")
    shard.symlink_to(tmp_path / "elsewhere.arrow")
    with pytest.raises(DataError, match="leads outside") as err:
        open_data(cfg(tmp_path))
    assert "\n" not in str(err.value) and shard.name in str(err.value)
