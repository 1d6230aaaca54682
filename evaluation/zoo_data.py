"""The shared datasets as uint8 arrays for training, decoded once and cached beside the zoo."""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SHARED = Path(os.environ.get("NC_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CACHE = Path(os.environ.get("NC_CACHE", Path(__file__).resolve().parents[1] / ".cache"))


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    file: str  # under SHARED/data
    data_format: str  # the [data].format a user would write for it
    channels: int
    size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


DATASETS = {
    "mnist": DatasetInfo("mnist", "mnist.npz", "npz", 1, 28, 10, (0.1307,), (0.3081,)),
    "cifar10": DatasetInfo(
        "cifar10", "cifar10-jpg.tar.gz", "imagefolder", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ),
    "gtsrb": DatasetInfo(
        "gtsrb", "gtsrb-32x32-png.tar.gz", "imagefolder", 3, 32, 43, (0.3403, 0.3121, 0.3214), (0.2724, 0.2608, 0.2669)
    ),
}


def data_path(name: str) -> Path:
    path = SHARED / "data" / DATASETS[name].file
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the shared {name} file is missing (set NC_SHARED to its folder)")
    return path


def _read_tree(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (images N x H x W x 3 uint8, labels), class order = sorted folder names."""
    items: dict[str, list[tuple[str, bytes]]] = {"train": [], "test": []}
    with tarfile.open(path, "r:*") as tar:
        for member in tar:
            parts = member.name.strip("./").split("/")
            if member.isfile() and len(parts) == 3 and parts[0] in items:
                items[parts[0]].append((parts[1], tar.extractfile(member).read()))
    classes = sorted({c for split in items.values() for c, _ in split})
    out = {}
    for split, pairs in items.items():
        x = np.stack([np.asarray(Image.open(io.BytesIO(raw)).convert("RGB")) for _, raw in pairs])
        y = np.array([classes.index(c) for c, _ in pairs], np.int64)
        out[split] = (x, y)
    return out


def load_arrays(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), uint8 images (N x H x W for grey, N x H x W x 3 for colour)."""
    if name == "mnist":
        with np.load(data_path(name)) as d:
            return d["x_train"], d["y_train"].astype(np.int64), d["x_test"], d["y_test"].astype(np.int64)
    cached = CACHE / "datasets" / f"{name}.npz"
    if not cached.is_file():
        splits = _read_tree(data_path(name))
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            x_train=splits["train"][0],
            y_train=splits["train"][1],
            x_test=splits["test"][0],
            y_test=splits["test"][1],
        )
        tmp.replace(cached)
    with np.load(cached) as d:
        return d["x_train"], d["y_train"], d["x_test"], d["y_test"]


def write_subset(source: Path, dest: Path, train: int, test_per_class: int, seed: int = 0) -> tuple[int, int]:
    """A smaller image-folder tarball with the same layout: `train` training images drawn with `seed`, and
    the first `test_per_class` test images of each class (for a GPU machine whose transfers are capped).
    Returns (training, test) image counts."""
    with tarfile.open(source, "r:*") as tar:
        members = [m for m in tar.getmembers() if m.isfile() and len(m.name.strip("./").split("/")) == 3]
        train_members = [m for m in members if m.name.strip("./").startswith("train/")]
        keep = set(
            np.random.default_rng(seed)
            .choice(len(train_members), min(train, len(train_members)), replace=False)
            .tolist()
        )
        chosen = [m for k, m in enumerate(train_members) if k in keep]
        per_class: dict[str, int] = {}
        for m in sorted((m for m in members if m.name.strip("./").startswith("test/")), key=lambda m: m.name):
            cls = m.name.strip("./").split("/")[1]
            if per_class.get(cls, 0) < test_per_class:
                per_class[cls] = per_class.get(cls, 0) + 1
                chosen.append(m)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(dest, "w:gz") as out:
            for m in chosen:
                out.addfile(m, tar.extractfile(m))
    return len(keep), sum(per_class.values())


SHARES_FILE = Path(__file__).parent / "scan_shares.json"


def scan_shares(name: str) -> list[float]:
    """Each class's share of the data a zoo scan reads (the dataset's test split), as the engine records it
    in report.json. Read from SHARES_FILE (written by `python -m evaluation.prior_effect --write-shares`, so
    re-judging old records decodes no dataset); computed from the data for a dataset it lacks."""
    if SHARES_FILE.is_file():
        known = json.loads(SHARES_FILE.read_text())
        if name in known:
            return known[name]
    y_test = load_arrays(name)[3]
    counts = np.bincount(y_test, minlength=DATASETS[name].num_classes)
    return (counts / counts.sum()).tolist()


def write_scan_shares() -> Path:
    """SHARES_FILE for every dataset, computed afresh from the data."""
    SHARES_FILE.unlink(missing_ok=True)
    SHARES_FILE.write_text(json.dumps({name: scan_shares(name) for name in DATASETS}, indent=1) + "\n")
    return SHARES_FILE


if __name__ == "__main__":  # python -m evaluation.zoo_data gtsrb 12000 60 DEST.tar.gz: a smaller copy of a set
    import argparse

    parser = argparse.ArgumentParser(description="Write a smaller image-folder tarball of a shared dataset.")
    parser.add_argument("name", choices=[n for n, d in DATASETS.items() if d.data_format == "imagefolder"])
    parser.add_argument("train", type=int, help="training images to keep (drawn with seed 0)")
    parser.add_argument("per_class", type=int, help="test images to keep per class (the first ones)")
    parser.add_argument("dest", type=Path)
    args = parser.parse_args()
    print(write_subset(data_path(args.name), args.dest, args.train, args.per_class), "->", args.dest)
