"""Data: npz layouts, image folders (plain and archived), sampling, and one-line errors."""

import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from nc_engine.data.load import open_data, split_samples, stratified_order
from nc_engine.errors import DataError
from tests.conftest import cfg_for, noop  # noqa: E402


@pytest.mark.parametrize("layout", ["NHW", "NHWC", "NCHW"])
def test_npz_layouts_and_uint8_scaling(tmp_path, layout):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 8, 8), dtype=np.uint8)
    stored = {"NHW": x, "NHWC": x[..., None], "NCHW": x[:, None]}[layout]
    np.savez(tmp_path / "d.npz", x_test=stored, y_test=np.array([0, 1, 2, 0, 1, 2]))
    src = open_data(cfg_for(tmp_path, {"format": "npz", "path": "d.npz"}))
    batch, kept = src.load(np.array([1, 4]), noop)
    assert batch.shape == (2, 1, 8, 8) and list(kept) == [1, 4]
    assert np.allclose(batch[:, 0].numpy(), x[[1, 4]] / 255.0, atol=1e-6)


def test_npz_grey_into_rgb_model_and_resize(tmp_path):
    x = np.full((4, 28, 28), 255, dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4) % 3)
    src = open_data(cfg_for(tmp_path, {"format": "npz", "path": "d.npz"}, shape=(3, 32, 32)))
    batch, _ = src.load(np.arange(4), noop)
    assert batch.shape == (4, 3, 32, 32) and float(batch.min()) > 0.99


def test_npz_without_expected_arrays_lists_what_it_has(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((2, 8, 8)), targets=np.zeros(2))
    with pytest.raises(DataError) as err:
        open_data(cfg_for(tmp_path, {"format": "npz", "path": "d.npz"}))
    assert "x_test/y_test or x/y" in str(err.value) and "images, targets" in str(err.value)


def test_labels_outside_range_are_an_error(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 8, 8), np.uint8), y=np.array([0, 1, 7]))
    with pytest.raises(DataError, match=r"labels must be in 0..2.*\[7\]"):
        open_data(cfg_for(tmp_path, {"format": "npz", "path": "d.npz"}))


def make_tree(root, classes=("cat", "dog", "eel"), per_class=3, split="test"):
    for c, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((10, 10), 40 * c + i, np.uint8)).save(folder / f"{i}.png")


@pytest.mark.parametrize("kind", ["folder", "tar.gz", "zip"])
def test_imagefolder_plain_and_archived(tmp_path, kind):
    make_tree(tmp_path / "tree")
    make_tree(tmp_path / "tree", split="train")
    path = tmp_path / "tree"
    if kind == "tar.gz":
        path = tmp_path / "tree.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(tmp_path / "tree", arcname="tree")
    elif kind == "zip":
        path = tmp_path / "tree.zip"
        with zipfile.ZipFile(path, "w") as zf:
            for f in (tmp_path / "tree").rglob("*.png"):
                zf.write(f, f.relative_to(tmp_path).as_posix())
    src = open_data(cfg_for(tmp_path, {"format": "imagefolder", "path": str(path), "split": "test"}))
    assert src.class_names == ["cat", "dog", "eel"]
    assert sorted(src.labels.tolist()) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    batch, kept = src.load(np.array([0, 8]), noop)
    assert batch.shape == (2, 1, 8, 8) and list(kept) == [0, 8]
    assert abs(float(batch[1].mean()) - (80 + 2) / 255) < 0.01  # eel/2.png, resized


def test_corrupt_image_is_named_skipped_and_the_rest_loads(tmp_path):
    make_tree(tmp_path / "tree")
    bad = tmp_path / "tree" / "test" / "dog" / "1.png"
    bad.write_bytes(b"not an image")
    warnings = []
    src = open_data(cfg_for(tmp_path, {"format": "imagefolder", "path": "tree"}))
    batch, kept = src.load(np.arange(9), warnings.append)
    assert len(kept) == 8 and batch.shape[0] == 8
    assert len(warnings) == 1 and "dog/1.png" in warnings[0]


def test_stratified_split_is_disjoint_balanced_and_seeded():
    labels = np.repeat(np.arange(10), 100)
    opt, asr = split_samples(labels, 200, 300, seed=3)
    assert len(set(opt) & set(asr)) == 0 and len(opt) == 200 and len(asr) == 300
    assert np.bincount(labels[opt], minlength=10).tolist() == [20] * 10
    assert np.bincount(labels[asr], minlength=10).tolist() == [30] * 10
    again, _ = split_samples(labels, 200, 300, seed=3)
    other, _ = split_samples(labels, 200, 300, seed=4)
    assert np.array_equal(opt, again) and not np.array_equal(opt, other)
    assert sorted(stratified_order(labels, 0).tolist()) == list(range(1000))
