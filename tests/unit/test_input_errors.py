"""Every user mistake in the model or data: one line naming the file, the key and what was expected."""

import sys

import numpy as np
import pytest
import torch
from torch import nn

from nc_engine.config.settings import config_from_dict
from nc_engine.data.load import open_data
from nc_engine.errors import ConfigError, DataError, ModelError, NCError
from nc_engine.models.load import load_model
from nc_engine.run.prepare import with_model_classes
from nc_tui.cli import main
from tests.conftest import require_module
from tests.tiny_scan import linear_model

CPU = torch.device("cpu")


def make_cfg(tmp_path, model=None, data=None, scan=None):
    table = {
        "model": {"format": "torchscript", "path": "m.pt", "input_shape": [1, 8, 8], **(model or {})},
        "data": {"format": "npz", "path": "d.npz", **(data or {})},
        "scan": scan or {},
    }
    return config_from_dict(table, source=str(tmp_path / "scan.toml"), base_dir=tmp_path)


def one_line(exc_info, *needles):
    text = str(exc_info.value)
    assert "\n" not in text and "Traceback" not in text
    for needle in needles:
        assert needle in text, text
    return text


@pytest.fixture
def scripted(tmp_path):
    linear_model(tmp_path / "m.pt", shape=(1, 8, 8))
    return tmp_path


@pytest.mark.parametrize("fmt", ["torchscript", "exported", "onnx", "pickle"])
def test_model_path_missing_or_a_folder(tmp_path, fmt):
    model = {"format": fmt, "trust_pickle": fmt == "pickle"}
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {**model, "path": "nope.bin"}), CPU)
    one_line(err, "nope.bin", "not found", "[model].path")
    (tmp_path / "dir.bin").mkdir()
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {**model, "path": "dir.bin"}), CPU)
    one_line(err, "dir.bin: is a folder; expected a", "[model].path")


@pytest.mark.parametrize(
    "section,key", [("model", "format"), ("data", "format"), ("data", "layout"), ("data", "resize")]
)
def test_unknown_format_and_choice_keys(tmp_path, section, key):
    with pytest.raises(ConfigError) as err:
        make_cfg(tmp_path, **{section: {key: "caffe"}})
    one_line(err, "scan.toml", f"[{section}].{key} must be one of", "'caffe'")


def test_torchvision_dataset_name_is_checked_in_the_config(tmp_path):
    with pytest.raises(ConfigError) as err:
        make_cfg(tmp_path, data={"format": "torchvision", "dataset": "ImageNet", "path": "."})
    one_line(err, "[data].dataset must be one of MNIST, FashionMNIST, CIFAR10")


@pytest.mark.parametrize(
    "fmt,content",
    [
        ("exported", b"\x00garbage" * 50),
        ("onnx", b"just text\n"),
        ("torchvision", b"PK\x03\x04 not really a zip"),
        ("torchvision", b"a text file, not weights\n"),
    ],
    ids=["exported-bytes", "onnx-text", "checkpoint-fake-zip", "checkpoint-text"],
)
def test_a_file_that_is_not_a_model(tmp_path, fmt, content):
    if fmt == "onnx":
        require_module("onnx2torch")  # in the dev extra: fails in CI when absent
    (tmp_path / "m.bin").write_bytes(content)
    model = {"format": fmt, "path": "m.bin", "architecture": "resnet18" if fmt == "torchvision" else ""}
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, model), CPU)
    one_line(err, "m.bin: not a")


def test_onnx_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "m.onnx").write_bytes(b"\x08\x07")
    monkeypatch.setitem(sys.modules, "onnx2torch", None)  # as if not installed
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": "onnx", "path": "m.onnx"}), CPU)
    one_line(err, "m.onnx", 'pip install "nc-tui[onnx]"')


def test_exported_garbage_logs_no_traceback(tmp_path, capfd):
    torch.save({"w": torch.zeros(2)}, tmp_path / "m.pt2")  # a zip, but a checkpoint, not a program
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": "exported", "path": "m.pt2"}), CPU)
    one_line(err, "m.pt2: not a torch.export program")
    assert "Traceback" not in capfd.readouterr().err


def test_unknown_torchvision_architecture(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"irrelevant")
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": "torchvision", "path": "w.pt", "architecture": "resnet99"}), CPU)
    one_line(err, "scan.toml: [model].architecture = 'resnet99' is not a torchvision.models name")


def test_cifar_stem_only_for_resnets(tmp_path):
    import torchvision

    torch.save(torchvision.models.get_model("squeezenet1_1", num_classes=3).state_dict(), tmp_path / "w.pt")
    model = {
        "format": "torchvision",
        "path": "w.pt",
        "architecture": "squeezenet1_1",
        "input_shape": [3, 32, 32],
        "architecture_args": {"cifar_stem": True},
    }
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, model), CPU)
    one_line(err, "cifar_stem works with torchvision ResNets", "'squeezenet1_1'")


def test_exported_program_shape_mismatch_names_input_shape(tmp_path):
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 8, 8),)), str(tmp_path / "m.pt2"))
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"format": "exported", "path": "m.pt2", "input_shape": [3, 8, 8]}), CPU)
    one_line(err, "m.pt2", "input of shape [N, 3, 8, 8] ([model].input_shape)")


def test_num_classes_mismatch_and_inference(tmp_path, scripted):
    with pytest.raises(ModelError) as err:
        load_model(make_cfg(tmp_path, {"num_classes": 10}), CPU)
    one_line(err, "m.pt", "3 outputs but [model].num_classes = 10")
    cfg = make_cfg(tmp_path)
    assert cfg.model.num_classes == 0
    inferred = with_model_classes(cfg, load_model(cfg, CPU))
    assert inferred.model.num_classes == 3 and cfg.model.num_classes == 0  # the given config is not changed


def test_scan_labels_outside_an_inferred_num_classes(tmp_path, scripted):
    cfg = make_cfg(tmp_path, scan={"labels": [0, 5]})  # accepted until the model says it has 3 classes
    with pytest.raises(ConfigError) as err:
        with_model_classes(cfg, load_model(cfg, CPU))
    one_line(err, "scan.toml", "[scan].labels must be labels in 0..2 (num_classes = 3, inferred", "[5]")
    with pytest.raises(ConfigError) as err:  # with num_classes given, the config itself says so
        make_cfg(tmp_path, {"num_classes": 3}, scan={"labels": [0, 5]})
    one_line(err, "[scan].labels must be labels in 0..2")


def test_data_labels_outside_an_inferred_num_classes(tmp_path, scripted):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 2, 6]))
    cfg = make_cfg(tmp_path)
    cfg = with_model_classes(cfg, load_model(cfg, CPU))
    with pytest.raises(DataError) as err:
        open_data(cfg)
    one_line(err, "d.npz: labels must be in 0..2 ([model].num_classes = 3)", "[6]")


@pytest.mark.parametrize("fmt", ["npz", "npy"])
def test_data_path_missing_or_a_folder(tmp_path, fmt):
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": fmt, "path": "gone.npz"}))
    one_line(err, "gone.npz: data not found ([data].path)")
    (tmp_path / "x.npy").mkdir()
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": fmt, "path": "x.npy"}))
    one_line(err, f"x.npy: is a folder; expected a .{fmt} file ([data].path")


def test_npy_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": "npy", "path": "x.npy"}))
    one_line(err, "y.npy: not found ([data].labels_path)")
    np.save(tmp_path / "pics.npy", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": "npy", "path": "pics.npy"}))
    one_line(err, "pics.npy: set [data].labels_path")
    (tmp_path / "y.npy").write_text("not numpy")
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": "npy", "path": "x.npy"}))
    one_line(err, "y.npy: not a readable .npy file ([data].labels_path")
    np.save(tmp_path / "y.npy", np.array([0.5, 1, 2, 0]))
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": "npy", "path": "x.npy"}))
    one_line(err, "x.npy: y.npy has dtype float64; expected integer labels")


def test_npz_and_npy_mixed_up(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 8, 8), np.uint8))
    (tmp_path / "d.npz").write_bytes((tmp_path / "x.npy").read_bytes())
    with pytest.raises(DataError) as err:
        open_data(make_cfg(tmp_path, data={"format": "npz", "path": "d.npz"}))
    one_line(err, "d.npz: is a single .npy array; expected a .npz file", 'format = "npy"')


def write_config(tmp_path, model_path="m.pt", data_path="d.npz"):
    path = tmp_path / "scan.toml"
    path.write_text(
        f'[model]\nformat = "torchscript"\npath = "{model_path}"\ninput_shape = [1, 8, 8]\n'
        f'[data]\nformat = "npz"\npath = "{data_path}"\n'
        "[scan]\nsamples = 32\nasr_samples = 32\nbatch_size = 32\nmax_steps = 2\n"
    )
    return str(path)


def assert_cli_error(capsys, config, out, *needles):
    assert main(["scan", config, "--headless", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    for needle in needles:
        assert needle in captured.err, captured.err
    assert not out.exists()  # nothing written for a failed scan


def test_cli_model_error_is_one_line_exit_2_nothing_written(tmp_path, capsys):
    (tmp_path / "m.pt").write_bytes(b"random bytes, not a model")
    np.savez(tmp_path / "d.npz", x=np.zeros((64, 8, 8), np.uint8), y=np.arange(64) % 3)
    assert_cli_error(capsys, write_config(tmp_path), tmp_path / "out", "m.pt: not a TorchScript model")


def test_cli_data_error_is_one_line_exit_2_nothing_written(tmp_path, scripted, capsys):
    np.savez(tmp_path / "d.npz", images=np.zeros((64, 8, 8), np.uint8), targets=np.arange(64) % 3)
    assert_cli_error(
        capsys,
        write_config(tmp_path),
        tmp_path / "out",
        "d.npz: expected arrays x_test/y_test or x/y",
        "the file has: images, targets",
    )


def test_every_error_is_an_nc_error():
    assert all(issubclass(e, NCError) for e in (ConfigError, DataError, ModelError))
