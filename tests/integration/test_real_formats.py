"""Real data in its shipped forms, and every model format saved here, reloaded and scanned."""

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nc_engine import run_scan
from nc_engine.config.settings import config_from_dict, load_config
from nc_engine.data.load import open_data
from nc_engine.models.exported import FixedBatch
from nc_engine.models.load import load_model
from nc_engine.models.state_dict import import_object
from nc_engine.run.prepare import with_model_classes
from tests.conftest import require_module, require_shared

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CPU = torch.device("cpu")
TINY = {"samples": 32, "asr_samples": 32, "batch_size": 32, "max_steps": 3, "labels": [0, 1, 2]}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

ARCH = """
from torch import nn

class SmallNet(nn.Module):
    def __init__(self, channels=1, classes=10, width=8):
        super().__init__()
        self.conv = nn.Conv2d(channels, width, 3, stride=2)
        self.head = nn.Linear(width * 13 * 13, classes)

    def forward(self, x):
        return self.head(self.conv(x).relu().flatten(1))
"""


def make_cfg(tmp_path, model, data, scan=None):
    table = {"model": model, "data": data, "scan": {**TINY, **(scan or {})}, "output": {"dir": "runs"}}
    return config_from_dict(table, source=str(tmp_path / "scan.toml"), base_dir=tmp_path)


def noop(message):
    raise AssertionError(message)


def small_net(tmp_path):
    (tmp_path / "arch.py").write_text(ARCH)  # the file the state_dict format imports too
    torch.manual_seed(0)
    return import_object("arch.py:SmallNet", tmp_path)().eval()


def check_scan(cfg, labels=3):
    report = run_scan(cfg)
    assert report.complete and len(report.labels) == labels
    assert all(r.steps >= 1 and r.l1_norm > 0 for r in report.labels)
    resumed = load_config(Path(report.run_dir) / "config.toml")  # the run folder's config loads again
    assert resumed.model.num_classes == cfg.model.num_classes
    return report


def save_in_format(fmt, net, tmp_path, x):
    """Save `net` as the model format `fmt` names; returns the [model] keys that load it."""
    if fmt == "torchscript":
        torch.jit.script(net).save(str(tmp_path / "m.pt"))
        return {"path": "m.pt"}
    if fmt.startswith("exported"):
        dynamic = None if fmt == "exported_fixed_batch" else ({0: torch.export.Dim("batch")},)
        torch.export.save(torch.export.export(net, (x,), dynamic_shapes=dynamic), str(tmp_path / "m.pt2"))
        return {"format": "exported", "path": "m.pt2"}
    if fmt == "state_dict":
        state = {f"module.{k}": v for k, v in net.state_dict().items()}  # as DataParallel saves it
        torch.save({"model_state_dict": state, "epoch": 7}, tmp_path / "w.pt")
        return {"path": "w.pt", "architecture": "arch.py:SmallNet", "architecture_args": {"width": 8}}
    if fmt == "pickle":
        torch.save(net, tmp_path / "m.pkl")
        return {"path": "m.pkl", "trust_pickle": True}
    if fmt.startswith("onnx"):
        require_module("onnx2torch")  # in the dev extra: fails in CI when absent
        axes = None if fmt == "onnx_fixed_batch" else {"x": {0: "n"}}
        torch.onnx.export(net, (x,), str(tmp_path / "m.onnx"), dynamo=False, input_names=["x"], dynamic_axes=axes)
        return {"format": "onnx", "path": "m.onnx"}
    raise AssertionError(fmt)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy ONNX exporter needs no onnxscript
@pytest.mark.parametrize(
    "fmt", ["torchscript", "exported", "exported_fixed_batch", "state_dict", "pickle", "onnx", "onnx_fixed_batch"]
)
def test_every_model_format_round_trips_on_mnist(tmp_path, fmt):
    mnist = require_shared(SHARED / "mnist.npz")
    net = small_net(tmp_path)
    data = {"format": "npz", "path": str(mnist), "split": "test", "max_images": 200}
    probe = torch.rand(8, 1, 28, 28)  # a fixed-batch export takes batches of 8
    keys = save_in_format(fmt, net, tmp_path, probe)
    model = {"format": fmt.split("_fixed")[0], "input_shape": [1, 28, 28], **keys}  # num_classes inferred
    cfg = make_cfg(tmp_path, model, data)
    scan_model = load_model(cfg, CPU)
    cfg = with_model_classes(cfg, scan_model)
    assert cfg.model.num_classes == 10 and not scan_model.log_probs
    assert isinstance(scan_model.net, FixedBatch) == fmt.endswith("fixed_batch")
    x, _ = open_data(cfg).load(np.arange(37), noop)  # 37: not a multiple of a fixed export batch
    with torch.no_grad():
        assert torch.allclose(scan_model(x), net(x), atol=1e-4)
    check_scan(cfg)


def test_torchvision_factory_by_package_path(tmp_path):
    """state_dict + "package.module:Name": a factory from an installed package, with architecture_args."""
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.squeezenet1_1(num_classes=5).eval()
    torch.save({"state_dict": net.state_dict()}, tmp_path / "w.pt")
    x = torch.rand(6, 3, 48, 48)
    np.savez(tmp_path / "d.npz", x=(x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), y=np.arange(6) % 5)
    model = {
        "format": "state_dict",
        "path": "w.pt",
        "architecture": "torchvision.models:squeezenet1_1",
        "architecture_args": {"num_classes": 5},
        "input_shape": [3, 48, 48],
    }
    cfg = make_cfg(tmp_path, model, {"format": "npz", "path": "d.npz"})
    loaded = load_model(cfg, CPU)
    cfg = with_model_classes(cfg, loaded)
    xs, _ = open_data(cfg).load(np.arange(6), noop)
    with torch.no_grad():
        assert cfg.model.num_classes == 5 and torch.allclose(loaded(xs), net(xs), atol=1e-5)


def cifar_resnet18():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)  # the usual CIFAR stem
    net.maxpool = nn.Identity()
    return net.eval()


def test_cifar10_jpeg_archive_with_a_cifar_stem_resnet18(tmp_path):
    archive = require_shared(SHARED / "cifar10-jpg.tar.gz")
    net = cifar_resnet18()
    torch.save(net.state_dict(), tmp_path / "resnet18_cifar.pt")
    model = {
        "format": "torchvision",
        "architecture": "resnet18",
        "architecture_args": {"cifar_stem": True},
        "path": "resnet18_cifar.pt",
        "input_shape": [3, 32, 32],
        "mean": [0.4914, 0.4822, 0.4465],
        "std": [0.2470, 0.2435, 0.2616],
    }
    data = {"format": "imagefolder", "path": str(archive), "split": "test", "max_images": 200}
    cfg = make_cfg(tmp_path, model, data, {"labels": [0, 1], "max_steps": 1})  # ResNet-18 steps cost ~2s here
    scan_model = load_model(cfg, CPU)
    cfg = with_model_classes(cfg, scan_model)
    assert cfg.model.num_classes == 10  # inferred from the checkpoint's classifier
    started = time.perf_counter()
    source = open_data(cfg)
    listing = time.perf_counter() - started
    assert source.class_names == CIFAR_CLASSES
    assert len(source.labels) == 10_000 and np.bincount(source.labels).tolist() == [1000] * 10
    x, kept = source.load(np.array([0, 1500, 9999]), noop)
    assert x.shape == (3, 3, 32, 32) and source.labels[kept].tolist() == [0, 1, 9]
    mean = torch.tensor(model["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(scan_model(x), net((x - mean) / std), atol=1e-4)
    assert listing < 20, f"reading the archive took {listing:.1f}s"
    report = check_scan(cfg, labels=2)
    assert [r.name for r in report.labels] == ["airplane", "automobile"]


def test_gtsrb_png_archive_has_43_classes_named_by_folder(tmp_path):
    archive = require_shared(SHARED / "gtsrb-32x32-png.tar.gz")
    model = {"format": "torchscript", "path": "m.pt", "num_classes": 43, "input_shape": [3, 32, 32]}
    cfg = make_cfg(tmp_path, model, {"format": "imagefolder", "path": str(archive), "split": "test"})
    started = time.perf_counter()
    source = open_data(cfg)
    assert time.perf_counter() - started < 30
    assert source.class_names == [f"{i:02d}" for i in range(43)]
    assert len(source.labels) == 12_630 and set(source.labels.tolist()) == set(range(43))
    x, kept = source.load(np.array([0, 6000, 12_629]), noop)
    assert x.shape == (3, 3, 32, 32) and len(kept) == 3 and 0 < float(x.mean()) < 1


@pytest.mark.parametrize("shape", [[1, 28, 28], [3, 32, 32]])
def test_mnist_npz_into_grey_and_rgb_models(tmp_path, shape):
    mnist = require_shared(SHARED / "mnist.npz")
    with np.load(mnist) as arrays:
        raw, y = arrays["x_test"][:5], arrays["y_test"][:5]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 10)).eval()
    torch.jit.script(net).save(str(tmp_path / "m.pt"))
    model = {"format": "torchscript", "path": "m.pt", "input_shape": shape}
    cfg = make_cfg(tmp_path, model, {"format": "npz", "path": str(mnist), "split": "test", "max_images": 100})
    cfg = with_model_classes(cfg, load_model(cfg, CPU))
    source = open_data(cfg)
    assert len(source.labels) == 10_000 and source.labels[:5].tolist() == y.tolist()
    x, _ = source.load(np.arange(5), noop)
    assert x.shape == (5, *shape)
    if shape[0] == 1:
        assert np.allclose(x[:, 0].numpy(), raw / 255.0, atol=1e-6)
    else:  # grey copied to RGB, 28 -> 32 bilinear: same picture, same brightness
        assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])
        assert abs(float(x.mean()) - raw.mean() / 255.0) < 0.01
    check_scan(cfg)
