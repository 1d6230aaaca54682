"""Damaged or crafted side files (issue 27 items 3, 5 and 8): one line naming the file and what was
expected, never a traceback."""

from __future__ import annotations

import io
import json
import tarfile
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nc_engine import files
from nc_engine.audit.spec import load_spec
from nc_engine.config.settings import config_from_dict, load_config
from nc_engine.data import imagefolder, parquet
from nc_engine.data.load import open_data
from nc_engine.errors import ConfigError, DataError, MitigationError, ModelError, RunFolderError
from nc_engine.files import parse_json, parse_toml
from nc_engine.mitigate import filter_images, load_options
from nc_engine.mitigate.filter import DETECTOR_KIND
from nc_engine.models.load import load_model
from nc_engine.run.runfolder import RunFolder
from tests.conftest import require_module
from tests.tiny_scan import linear_model

GOOD_DETECTOR = {"config": "c.toml", "layer": "", "units": {"0": [1]}, "mean": [0.0], "std": [1.0], "threshold": 2}


@pytest.mark.parametrize(
    "change, key",
    [
        ({"config": None}, "config"),
        ({"units": [1, 2]}, "units"),
        ({"threshold": "high"}, "threshold"),
        ({"mean": [[0.0]]}, "mean"),
        ({"units": {"zero": [1]}}, "units"),
    ],
)
def test_a_detector_with_a_missing_or_wrong_field_is_one_line(tmp_path, change, key):
    fields = {"kind": DETECTOR_KIND, **GOOD_DETECTOR, **change}
    fields = {k: v for k, v in fields.items() if v is not None}
    (tmp_path / "detector.json").write_text(json.dumps(fields))
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(MitigationError) as err:
        filter_images(tmp_path / "detector.json", [tmp_path / "x.png"])
    text = str(err.value)
    assert "\n" not in text and "detector.json" in text and repr(key) in text, text


def test_a_detector_naming_a_trusted_pickle_config_needs_the_flag(tmp_path):
    (tmp_path / "c.toml").write_text(
        '[model]\nformat = "pickle"\ntrust_pickle = true\npath = "m.pkl"\nnum_classes = 2\ninput_shape = [1, 4, 4]\n'
        '[data]\npath = "d.npz"\n'
    )
    fields = {"kind": DETECTOR_KIND, **GOOD_DETECTOR, "config": str(tmp_path / "c.toml")}
    (tmp_path / "detector.json").write_text(json.dumps(fields))
    with pytest.raises(MitigationError, match="trust_pickle.*--trust-pickle"):
        filter_images(tmp_path / "detector.json", [tmp_path / "x.png"])


# ---- item 3: nesting 100,000 levels deep is one line, never a RecursionError

DEEP_JSON = "[" * 100_000 + "]" * 100_000
DEEP_TOML = "x = " + "[" * 100_000 + "]" * 100_000 + "\n"


def test_the_bounded_readers_refuse_deep_nesting_and_keep_shallow_files():
    for text in (DEEP_JSON, "[" * 201 + "]" * 201):
        with pytest.raises(ValueError, match="nested deeper"):
            parse_json(text)
    with pytest.raises(tomllib.TOMLDecodeError, match="nested deeper"):
        parse_toml(DEEP_TOML)
    assert parse_json('{"a": [1, {"b": 2}]}') == {"a": [1, {"b": 2}]}
    assert parse_toml("[model]\nmean = [0.5]\n") == {"model": {"mean": [0.5]}}


def deep_file(path: Path, text: str = DEEP_JSON) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_deep_toml_configs_specs_and_options_are_one_line(tmp_path):
    deep_file(tmp_path / "c.toml", DEEP_TOML)
    with pytest.raises(ConfigError, match="c.toml: invalid TOML"):
        load_config(tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="c.toml: invalid TOML"):
        load_spec(tmp_path / "c.toml")
    with pytest.raises(MitigationError, match="c.toml: invalid TOML"):
        load_options(tmp_path / "c.toml")


def test_deep_json_side_files_are_one_line(tmp_path):
    deep_file(tmp_path / "detector.json")
    with pytest.raises(MitigationError, match="detector.json: not a detector"):
        filter_images(tmp_path / "detector.json", [tmp_path / "x.png"])
    deep_file(tmp_path / "hf" / "config.json")
    cfg = config_from_dict({"model": {"format": "huggingface", "path": "hf"}}, str(tmp_path / "c.toml"), tmp_path)
    with pytest.raises(ModelError, match="config.json: not a readable JSON file .*nested deeper"):
        load_model(cfg, torch.device("cpu"))
    deep_file(tmp_path / "ds" / "state.json")
    cfg = config_from_dict(
        {"model": {"input_shape": [1, 4, 4]}, "data": {"format": "hf", "path": "ds"}},
        str(tmp_path / "c.toml"),
        tmp_path,
    )
    with pytest.raises(DataError, match="state.json: not a readable JSON file .*nested deeper"):
        open_data(cfg)


def test_deep_json_in_a_run_folder_is_one_line_or_a_warning(tmp_path):
    run = RunFolder(tmp_path)
    deep_file(tmp_path / "report.json")
    with pytest.raises(RunFolderError, match="report.json: not valid JSON"):
        run.read_report_dict()
    assert run.previous_seconds() == 0.0  # a damaged report.json never blocks a resume
    deep_file(tmp_path / "trials" / "label_000_trial_0.json")
    warnings: list[str] = []
    assert run.trials([1, 4, 4], warnings.append) == []
    assert len(warnings) == 1 and "label_000_trial_0.json" in warnings[0]
    meta = np.frombuffer(DEEP_JSON.encode(), dtype=np.uint8)
    np.savez(deep_file(tmp_path / "inflight" / "x").parent / "label_000_trial_0.npz", meta=meta)
    assert run.inflight([1, 4, 4], warnings.append) == {}
    assert len(warnings) == 2 and "label_000_trial_0.npz" in warnings[1]


def test_a_model_with_more_outputs_than_a_config_allows_is_one_line(tmp_path):
    """Issue 27 item 6: 200,000 outputs and no num_classes started a scan whose config no resume accepts."""
    linear_model(tmp_path / "m.pt", classes=200_000)
    cfg = config_from_dict({"model": {"path": "m.pt", "input_shape": [1, 4, 4]}}, str(tmp_path / "c.toml"), tmp_path)
    with pytest.raises(ModelError, match="200000 output.*2..100000") as err:
        load_model(cfg, torch.device("cpu"))
    assert "\n" not in str(err.value)


# ---- item 4: sizes are checked against what a scan needs before anything is allocated


def lying_npz(path: Path, arrays: dict[str, np.ndarray], lies: dict[str, tuple[int, ...]]) -> Path:
    """An .npz whose `lies` members declare a huge shape over a few bytes (numpy would allocate it first)."""
    with zipfile.ZipFile(path, "w") as zf:
        for key, value in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, value)
            zf.writestr(f"{key}.npy", buffer.getvalue())
        for key, shape in lies.items():
            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
            zf.writestr(f"{key}.npy", buffer.getvalue() + b"\0" * 1024)
    return path


def npz_cfg(tmp_path: Path) -> object:
    return config_from_dict(
        {"model": {"input_shape": [1, 4, 4]}, "data": {"path": "d.npz"}}, str(tmp_path / "c"), tmp_path
    )


def test_an_npz_declaring_more_than_it_holds_is_one_line(tmp_path):
    lying_npz(tmp_path / "d.npz", {"y_test": np.arange(10)}, {"x_test": (10**9, 28, 28)})
    with pytest.raises(DataError, match=r"declares shape \(1000000000, 28, 28\)") as err:
        open_data(npz_cfg(tmp_path))
    assert "\n" not in str(err.value) and "d.npz" in str(err.value)


def test_an_npz_too_large_for_this_machine_is_refused_before_it_is_read(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "d.npz", x_test=np.zeros((64, 64, 64), np.uint8), y_test=np.zeros(64, np.int64))
    monkeypatch.setattr(files, "memory_bytes", lambda: 200_000)  # the arrays take 262,656 bytes
    with pytest.raises(DataError, match="more than half of this machine's memory"):
        open_data(npz_cfg(tmp_path))


@pytest.mark.parametrize("label", [10**9, -1])
def test_a_label_far_outside_the_classes_is_one_line(tmp_path, label):
    np.savez(tmp_path / "d.npz", x_test=np.zeros((4, 4, 4), np.uint8), y_test=np.array([0, 1, 2, label]))
    with pytest.raises(DataError, match=f"holds the label {label}"):
        open_data(npz_cfg(tmp_path))


def test_run_folder_arrays_are_sized_before_they_are_read(tmp_path):
    run = RunFolder(tmp_path)
    np.savez(tmp_path / "samples.npz", opt_idx=np.arange(3_000_000), asr_idx=np.arange(3))
    with pytest.raises(RunFolderError, match="samples.npz: damaged .*holds at most"):
        run.read_samples()
    lying_npz(tmp_path / "samples.npz", {"asr_idx": np.arange(3)}, {"opt_idx": (300_000_000,)})
    with pytest.raises(RunFolderError, match="samples.npz: damaged .*declares shape"):
        run.read_samples()
    (tmp_path / "inflight").mkdir()
    lying_npz(tmp_path / "inflight" / "label_000_trial_0.npz", {}, {"raw_mask": (10**6, 10**6)})
    warnings: list[str] = []
    assert run.inflight([1, 4, 4], warnings.append) == {}
    assert "label_000_trial_0.npz" in warnings[0] and "declares shape" in warnings[0]


def image_tree(root: Path, sizes: dict[str, int]) -> None:
    """Class folders a/ and b/ with grey PNGs of the given sides (name -> side)."""
    for name, side in sizes.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (side, side), 128).save(root / name)


def test_a_huge_image_is_skipped_with_its_line_before_it_is_decoded(tmp_path):
    image_tree(tmp_path / "imgs", {"a/0.png": 8, "a/1.png": 8, "b/0.png": 8, "b/big.png": 12000})
    table = {"model": {"input_shape": [1, 8, 8]}, "data": {"format": "imagefolder", "path": "imgs"}}
    source = open_data(config_from_dict(table, str(tmp_path / "c"), tmp_path))
    warnings: list[str] = []
    x, kept = source.load(np.arange(4), warnings.append)
    assert x.shape == (3, 1, 8, 8) and len(kept) == 3
    assert len(warnings) == 1 and "big.png: 12000x12000 pixels skipped" in warnings[0]


@pytest.mark.parametrize("archive", ["tar.gz", "zip"])
def test_an_oversized_archive_member_is_skipped_unread(tmp_path, monkeypatch, archive):
    image_tree(tmp_path / "imgs", {"a/0.png": 8, "a/1.png": 8, "b/0.png": 8, "b/big.png": 64})
    members = sorted(p for p in (tmp_path / "imgs").rglob("*.png"))
    if archive == "zip":
        with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as zf:
            for p in members:
                zf.write(p, p.relative_to(tmp_path / "imgs").as_posix())
    else:
        with tarfile.open(tmp_path / "imgs.tar.gz", "w:gz") as tar:
            for p in members:
                tar.add(p, p.relative_to(tmp_path / "imgs").as_posix())
    monkeypatch.setattr(imagefolder, "MAX_IMAGE_BYTES", (tmp_path / "imgs" / "a" / "0.png").stat().st_size + 10)
    table = {"model": {"input_shape": [1, 8, 8]}, "data": {"format": "imagefolder", "path": f"imgs.{archive}"}}
    source = open_data(config_from_dict(table, str(tmp_path / "c"), tmp_path))
    warnings: list[str] = []
    x, kept = source.load(np.arange(4), warnings.append)
    assert x.shape[0] == 3 and len(warnings) == 1 and "big.png: image file over" in warnings[0]


def test_a_parquet_dataset_with_too_many_rows_is_one_line(tmp_path, monkeypatch):
    pq = require_module("pyarrow.parquet")
    pa = require_module("pyarrow")
    pq.write_table(pa.table({"image": [b"x"] * 10, "label": list(range(10))}), tmp_path / "d.parquet")
    monkeypatch.setattr(parquet, "MAX_ROWS", 5)
    table = {"model": {"input_shape": [1, 8, 8]}, "data": {"format": "parquet", "path": "d.parquet"}}
    with pytest.raises(DataError, match="10 rows; a parquet dataset is read here up to 5 rows"):
        open_data(config_from_dict(table, str(tmp_path / "c"), tmp_path))


def test_onnx_external_data_outside_the_model_folder_is_refused(tmp_path):
    """The same shape as a sharded checkpoint's index: weights named outside the model's folder."""
    onnx = require_module("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((16, 3), np.float32), "W")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [weight]))
    (tmp_path / "m").mkdir()
    onnx.save(model, tmp_path / "m" / "m.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    (tmp_path / "m" / "w.bin").rename(tmp_path / "outside.bin")
    proto = onnx.load(tmp_path / "m" / "m.onnx", load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../outside.bin"
    onnx.save(proto, tmp_path / "m" / "m.onnx")
    table = {"model": {"format": "onnx", "path": "m/m.onnx", "input_shape": [1, 4, 4]}}
    with pytest.raises(ModelError, match="points outside the directory") as err:
        load_model(config_from_dict(table, str(tmp_path / "c"), tmp_path), torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_an_npz_that_inflates_like_a_bomb_is_refused(tmp_path, monkeypatch):
    np.savez_compressed(tmp_path / "d.npz", x_test=np.zeros((2000, 28, 28), np.uint8), y_test=np.zeros(2000, np.int64))
    monkeypatch.setattr(files, "BOMB_FLOOR", 1 << 20)  # the real floor is 256 MiB: the same check, smaller
    with pytest.raises(DataError, match="'x_test' inflates .*x to 1,568,128 bytes"):
        open_data(npz_cfg(tmp_path))
