"""Data formats beyond npz: npy pairs, forced layouts, resize modes, torchvision datasets on disk."""

import csv
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from nc_engine.config.settings import config_to_toml, load_config
from nc_engine.data.arrays import default_labels_path
from nc_engine.data.load import open_data
from nc_engine.data.source import to_input_shape
from nc_engine.errors import DataError
from tests.conftest import cfg_for, noop  # noqa: E402


def test_npy_pair_by_convention_and_by_labels_path(tmp_path):
    x = np.random.default_rng(0).random((6, 8, 8, 1)).astype(np.float32)  # floats 0..1, NHWC
    np.save(tmp_path / "x_test.npy", x)
    np.save(tmp_path / "y_test.npy", np.array([0, 1, 2, 0, 1, 2]))
    src = open_data(cfg_for(tmp_path, {"format": "npy", "path": "x_test.npy"}))
    batch, kept = src.load(np.array([5, 2]), noop)
    assert list(kept) == [5, 2] and np.allclose(batch[:, 0].numpy(), x[[5, 2], ..., 0], atol=1e-6)
    np.save(tmp_path / "targets.npy", np.array([2, 2, 1, 1, 0, 0]))
    src = open_data(cfg_for(tmp_path, {"format": "npy", "path": "x_test.npy", "labels_path": "targets.npy"}))
    assert src.labels.tolist() == [2, 2, 1, 1, 0, 0]
    assert default_labels_path(tmp_path / "train_images.npy") == tmp_path / "train_labels.npy"
    assert default_labels_path(tmp_path / "pics.npy") is None


def test_npy_labels_path_survives_the_run_folder_config(tmp_path):
    cfg = cfg_for(tmp_path, {"format": "npy", "path": "a/x.npy", "labels_path": "a/y.npy"})
    saved = tmp_path / "run" / "config.toml"
    saved.parent.mkdir()
    saved.write_text(config_to_toml(cfg))
    again = load_config(saved)
    assert again.resolve_path(again.data.labels_path) == (tmp_path / "a" / "y.npy").resolve()
    assert again.data.format == "npy"


def test_forced_layout_reads_an_ambiguous_array(tmp_path):
    x = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)  # NCHW with 3 channels, width 3
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    auto = open_data(cfg_for(tmp_path, {"format": "npz", "path": "d.npz"}, shape=(3, 4, 3)))
    forced = open_data(cfg_for(tmp_path, {"format": "npz", "path": "d.npz", "layout": "NCHW"}, shape=(3, 4, 3)))
    a, _ = auto.load(np.arange(2), noop)
    f, _ = forced.load(np.arange(2), noop)
    assert torch.allclose(f, torch.from_numpy(x).float() / 255) and not torch.allclose(a, f)
    with pytest.raises(DataError, match=r"not NHW \(\[data\].layout = \"NHW\"\)"):
        open_data(cfg_for(tmp_path, {"format": "npz", "path": "d.npz", "layout": "NHW"}, shape=(3, 4, 3)))


def test_resize_modes():
    x = torch.zeros(1, 1, 4, 4)
    x[..., ::2, ::2] = 1.0  # a checkerboard of single pixels
    nearest = to_input_shape(x, [1, 8, 8], "nearest")
    assert set(nearest.unique().tolist()) == {0.0, 1.0}  # nearest invents no grey levels
    for mode in ("bilinear", "bicubic"):
        up = to_input_shape(x, [1, 8, 8], mode)
        assert up.shape == (1, 1, 8, 8) and len(up.unique()) > 2
    down = to_input_shape(torch.rand(1, 3, 32, 32), [1, 8, 8])  # RGB -> grey, antialiased shrink
    assert down.shape == (1, 1, 8, 8) and 0 <= float(down.min()) and float(down.max()) <= 1


def make_tree(root, classes=("cat", "dog", "eel"), per_class=2):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((8, 8), 40 * c + i, np.uint8)).save(root / name / f"{i}.png")


@pytest.mark.parametrize("kind", ["folder", "tar"])
def test_empty_class_folder_is_an_error(tmp_path, kind):
    make_tree(tmp_path / "tree" / "test")
    (tmp_path / "tree" / "test" / "bat").mkdir()
    (tmp_path / "tree" / "test" / "bat" / "notes.txt").write_text("no images here")
    path = "tree"
    if kind == "tar":
        path = "tree.tar"
        with tarfile.open(tmp_path / path, "w") as tar:
            tar.add(tmp_path / "tree", arcname="tree")
    with pytest.raises(DataError, match=r"class folder tree/test/bat has no images|class folder test/bat has"):
        open_data(cfg_for(tmp_path, {"format": "imagefolder", "path": path}))


def write_idx(path, array):
    """MNIST's raw idx format: magic (0, 0, 8 = uint8, ndim), big-endian int32 sizes, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + np.array(array.shape, dtype=">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_torchvision_mnist_from_its_raw_files(tmp_path, name):
    raw = tmp_path / "root" / name / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12) % 10
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    data = {"format": "torchvision", "dataset": name, "path": "root", "split": "test"}
    src = open_data(cfg_for(tmp_path, data, shape=(3, 32, 32), classes=10))
    assert src.labels.tolist() == labels.tolist() and len(src.class_names) == 10
    batch, kept = src.load(np.array([3, 7]), noop)
    assert batch.shape == (2, 3, 32, 32) and list(kept) == [3, 7]
    grey = to_input_shape(torch.from_numpy(images[[3, 7]]).float().div(255).unsqueeze(1), [3, 32, 32])
    assert torch.allclose(batch, grey)


def test_torchvision_gtsrb_test_split_decodes_only_what_is_asked(tmp_path):
    base = tmp_path / "root" / "gtsrb"
    folder = base / "GTSRB" / "Final_Test" / "Images"
    folder.mkdir(parents=True)
    rows = []
    for i in range(6):
        Image.fromarray(np.full((30, 30, 3), 40 * i, np.uint8)).save(folder / f"{i:05d}.ppm")
        rows.append({"Filename": f"{i:05d}.ppm", "ClassId": i % 3})
    with open(base / "GT-final_test.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["Filename", "ClassId"], delimiter=";")
        writer.writeheader()
        writer.writerows(rows)
    (folder / "00002.ppm").write_bytes(b"broken")  # unreadable items are skipped with a warning
    data = {"format": "torchvision", "dataset": "GTSRB", "path": "root", "split": "test", "resize": "nearest"}
    src = open_data(cfg_for(tmp_path, data, shape=(3, 16, 16)))
    assert src.labels.tolist() == [0, 1, 2, 0, 1, 2]
    warnings = []
    batch, kept = src.load(np.array([1, 2, 5]), warnings.append)
    assert list(kept) == [1, 5] and batch.shape == (2, 3, 16, 16)
    assert len(warnings) == 1 and "item 2" in warnings[0]
    assert torch.allclose(batch[1], torch.full((3, 16, 16), 200 / 255))


def test_torchvision_dataset_missing_says_how_to_get_it(tmp_path):
    (tmp_path / "root").mkdir()
    data = {"format": "torchvision", "dataset": "CIFAR10", "path": "root", "split": "test"}
    with pytest.raises(DataError) as err:
        open_data(cfg_for(tmp_path, data, shape=(3, 32, 32), classes=10))
    text = str(err.value)
    assert "no readable torchvision CIFAR10 test set" in text and "[data].download = true" in text
    assert "\n" not in text
    with pytest.raises(DataError, match=r"\[data\].split must be one of train, test, extra for SVHN"):
        open_data(cfg_for(tmp_path, {**data, "dataset": "SVHN", "split": "valid"}, shape=(3, 32, 32), classes=10))
