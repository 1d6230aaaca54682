"""The built-in demo: synthetic "glyphs", a small CNN with a BadNets patch backdoor, its config.

Everything is generated (no download) and trains on the CPU in seconds to a minute, depending on the
machine's load. The network, the poisoning and the training loop come from the training kit
(nc_engine.demo.training), which the zoo and the tests use too.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from nc_engine.demo.training import (
    PatchTrigger,
    SmallCNN,
    TrainingProgress,
    accuracy,
    poison,
    stamp_patch,
    train_classifier,
)
from nc_engine.files import write_atomic, write_npz, write_text

DEMO_CONFIG = "demo.toml"
DEMO_VERSION = 3  # bump when the data or training changes, so cached demos are rebuilt
DEMO_NORM = (0.5,)  # the demo config's mean and std


BLOBS_PER_CLASS = (4, 5, 6, 4, 5, 6, 4, 5, 6, 5)
DISTRACTORS = 2


def _spot_positions(count: int, size: int) -> np.ndarray:
    """`count` spot centres on a grid inside the image, in a fixed shuffled order: (count, xy)."""
    cols = int(np.ceil(np.sqrt(count * 1.2)))
    rows = int(np.ceil(count / cols))
    grid = np.array([(x, y) for y in np.linspace(5, size - 6, rows) for x in np.linspace(5, size - 6, cols)])
    return grid[:count][np.random.default_rng(12345).permutation(count)]


def synthetic_glyphs(n: int, seed: int, size: int = 28) -> tuple[np.ndarray, np.ndarray]:
    """n grey images (uint8, n x size x size) of 10 classes. Each class owns its own set of 4-6 spot
    positions (no two classes share one); an image shows its class's spots plus 2 distractor spots from
    anywhere, with jitter, brightness and noise. So a class is recognised from several spots together,
    and turning an image into another class takes drawing several spots: a clean model needs triggers
    of similar, sizeable area for every label, as on real digits, unlike a 4x4 backdoor patch."""
    counts = np.array(BLOBS_PER_CLASS)
    positions = _spot_positions(int(counts.sum()), size)
    first = np.concatenate([[0], np.cumsum(counts)])
    rng = np.random.default_rng(seed)
    y = rng.integers(0, len(counts), n)
    spots = np.full((n, counts.max() + DISTRACTORS, 2), np.nan)  # NaN = no spot in this slot
    for k, count in enumerate(counts):
        spots[y == k, :count] = positions[first[k] : first[k + 1]]
    spots[:, counts.max() :] = positions[rng.integers(0, len(positions), size=(n, DISTRACTORS))]
    spots += rng.normal(0, 0.7, size=spots.shape) + rng.integers(-1, 2, size=(n, 1, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.zeros((n, size, size))
    for b in range(spots.shape[1]):  # one spot slot at a time keeps memory at n x size x size
        d2 = (xx - spots[:, b, 0, None, None]) ** 2 + (yy - spots[:, b, 1, None, None]) ** 2
        np.fmax(img, np.exp(-d2 / (2 * 1.5**2)), out=img)  # fmax ignores the NaN of empty slots
    img = img * rng.uniform(0.6, 1.0, size=(n, 1, 1))
    img += rng.uniform(0, 0.15, size=(n, 1, 1)) + rng.normal(0, 0.04, size=(n, size, size))
    return (np.clip(img, 0, 1) * 255).astype(np.uint8), y.astype(np.int64)


@dataclass
class DemoModel:
    folder: str
    config: str
    backdoor: bool
    target: int | None
    trigger: dict | None
    clean_accuracy: float
    attack_success_rate: float | None
    train_seconds: float
    cached: bool = False  # True: reused from an earlier identical call, not trained now


def _cached(folder: Path, request: dict) -> DemoModel | None:
    """What an identical earlier call wrote, if it is there."""
    manifest_path = folder / "demo_manifest.json"
    if manifest_path.is_file() and (folder / "demo_model.pt").is_file():
        saved = json.loads(manifest_path.read_text())
        if saved.get("request") == request:
            return DemoModel(**{**saved["model"], "cached": True})
    return None


def _corner_backdoor(seed: int) -> tuple[int, PatchTrigger]:
    """The demo's target and its 4x4 white patch in one of the four corners, drawn from the seed."""
    rng = np.random.default_rng(seed)
    target = int(rng.integers(0, 10))
    top, left = [(1, 1), (1, 23), (23, 1), (23, 23)][rng.integers(0, 4)]
    return target, PatchTrigger(top=top, left=left, size=4, value=255)


def make_demo(
    folder: str | Path,
    backdoor: bool = True,
    seed: int = 0,
    epochs: int = 4,
    n_train: int = 8000,
    n_test: int = 2000,
    on_progress: Callable[[TrainingProgress], None] | None = None,
) -> DemoModel:
    """Write demo_model.pt (TorchScript), demo_data.npz and demo.toml into `folder`.

    Reuses what an identical earlier call wrote (manifest match), so repeated demos start at once.
    `on_progress` hears after every training mini-batch how far the training is (not called when cached).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "demo_manifest.json"
    request = {
        "version": DEMO_VERSION,
        "backdoor": backdoor,
        "seed": seed,
        "epochs": epochs,
        "n_train": n_train,
        "n_test": n_test,
    }
    cached = _cached(folder, request)
    if cached is not None:
        return cached
    started = time.perf_counter()
    x_train, y_train = synthetic_glyphs(n_train, seed)
    x_test, y_test = synthetic_glyphs(n_test, seed + 1)
    target, trigger = None, None
    if backdoor:
        target, trigger = _corner_backdoor(seed)
        x_train, y_train = poison(x_train, y_train, trigger, target, 0.1, seed)
    torch.manual_seed(seed)  # the network's initial weights
    model = train_classifier(SmallCNN(), x_train, y_train, DEMO_NORM, DEMO_NORM, epochs, seed, on_batch=on_progress)
    clean = accuracy(model, x_test, y_test, DEMO_NORM, DEMO_NORM)
    asr = None
    if backdoor:
        assert trigger is not None  # set above when backdoor
        keep = y_test != target
        asr = accuracy(model, stamp_patch(x_test[keep], trigger), np.full(keep.sum(), target), DEMO_NORM, DEMO_NORM)
    scripted = torch.jit.script(model)
    write_atomic(folder / "demo_model.pt", lambda f: torch.jit.save(scripted, f))
    write_npz(folder / "demo_data.npz", x_test=x_test, y_test=y_test)
    write_text(folder / DEMO_CONFIG, demo_config_text())
    info = DemoModel(
        str(folder),
        str(folder / DEMO_CONFIG),
        backdoor,
        target,
        asdict(trigger) if trigger else None,
        clean,
        asr,
        time.perf_counter() - started,
    )
    write_text(manifest_path, json.dumps({"request": request, "model": asdict(info)}, indent=1))
    return info


def demo_config_text() -> str:
    """The demo's config (identical to sample_configs/demo.toml; a test keeps them equal)."""
    return resources.files("nc_engine.demo").joinpath(DEMO_CONFIG).read_text(encoding="utf-8")
