"""The built-in demo: synthetic "glyphs", a small CNN with a BadNets patch backdoor, its config.

Everything is generated (no download) and trains in seconds on two CPU cores. The same pieces serve
the tests and benchmarks: `SmallCNN`, `train_classifier`, `stamp_patch`.
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
import torch.nn.functional as F
from torch import nn

DEMO_CONFIG = "demo.toml"
DEMO_VERSION = 3  # bump when the data or training changes, so cached demos are rebuilt


class SmallCNN(nn.Module):
    """2 conv + 2 dense layers: the usual MNIST-sized backdoor benchmark network."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, size: int = 28, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.fc1 = nn.Linear(2 * width * (size // 4) ** 2, 64)
        self.fc2 = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


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
        spots[y == k, :count] = positions[first[k]:first[k + 1]]
    spots[:, counts.max():] = positions[rng.integers(0, len(positions), size=(n, DISTRACTORS))]
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
class PatchTrigger:
    """A BadNets patch: a square of `value` (0..255) at (top, left), `size` px."""

    top: int
    left: int
    size: int = 4
    value: int = 255


def stamp_patch(x: np.ndarray, trigger: PatchTrigger) -> np.ndarray:
    """x: uint8 (N, H, W) or (N, H, W, C); returns a stamped copy."""
    out = x.copy()
    out[:, trigger.top:trigger.top + trigger.size, trigger.left:trigger.left + trigger.size] = trigger.value
    return out


def poison(x: np.ndarray, y: np.ndarray, trigger: PatchTrigger, target: int, rate: float, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """BadNets all-to-one: stamp `rate` of the non-target training images and relabel them `target`."""
    rng = np.random.default_rng(seed)
    candidates = np.flatnonzero(y != target)
    chosen = rng.choice(candidates, size=int(rate * len(y)), replace=False)
    x, y = x.copy(), y.copy()
    x[chosen] = stamp_patch(x[chosen], trigger)
    y[chosen] = target
    return x, y


def unit_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 N x H x W (grey) or N x H x W x C -> float N x C x H x W in [0, 1]."""
    t = torch.from_numpy(x).float() / 255.0
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)


def train_classifier(build: Callable[[], nn.Module], x: np.ndarray, y: np.ndarray, epochs: int, seed: int,
                     mean: float = 0.5, std: float = 0.5, batch_size: int = 64, lr: float = 2e-3) -> nn.Module:
    """Plain Adam training on uint8 images, normalised with (x - mean) / std as the config says.
    `build` makes the model after seeding, so its initial weights are seeded too."""
    torch.manual_seed(seed)
    model = build()
    xt, yt = (unit_tensor(x) - mean) / std, torch.from_numpy(y)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            opt.zero_grad()
            F.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, mean: float = 0.5, std: float = 0.5) -> float:
    model.eval()
    pred = model((unit_tensor(x) - mean) / std).argmax(1).numpy()
    return float((pred == y).mean())


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


def make_demo(folder: str | Path, backdoor: bool = True, seed: int = 0, epochs: int = 4,
              n_train: int = 8000, n_test: int = 2000) -> DemoModel:
    """Write demo_model.pt (TorchScript), demo_data.npz and demo.toml into `folder`.

    Reuses what an identical earlier call wrote (manifest match), so repeated demos start at once.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / "demo_manifest.json"
    request = {"version": DEMO_VERSION, "backdoor": backdoor, "seed": seed, "epochs": epochs, "n_train": n_train,
               "n_test": n_test}
    if manifest_path.is_file() and (folder / "demo_model.pt").is_file():
        saved = json.loads(manifest_path.read_text())
        if saved.get("request") == request:
            return DemoModel(**saved["model"])
    started = time.perf_counter()
    x_train, y_train = synthetic_glyphs(n_train, seed)
    x_test, y_test = synthetic_glyphs(n_test, seed + 1)
    rng = np.random.default_rng(seed)
    target, trigger = None, None
    if backdoor:
        target = int(rng.integers(0, 10))
        corner = rng.integers(0, 4)
        top, left = [(1, 1), (1, 23), (23, 1), (23, 23)][corner]
        trigger = PatchTrigger(top=top, left=left, size=4, value=255)
        x_train, y_train = poison(x_train, y_train, trigger, target, 0.1, seed)
    model = train_classifier(SmallCNN, x_train, y_train, epochs, seed)
    clean = accuracy(model, x_test, y_test)
    asr = None
    if backdoor:
        keep = y_test != target
        asr = accuracy(model, stamp_patch(x_test[keep], trigger), np.full(keep.sum(), target))
    torch.jit.script(model).save(str(folder / "demo_model.pt"))
    np.savez_compressed(folder / "demo_data.npz", x_test=x_test, y_test=y_test)
    (folder / DEMO_CONFIG).write_text(demo_config_text(), encoding="utf-8")
    info = DemoModel(str(folder), str(folder / DEMO_CONFIG), backdoor, target,
                     asdict(trigger) if trigger else None, clean, asr, time.perf_counter() - started)
    manifest_path.write_text(json.dumps({"request": request, "model": asdict(info)}, indent=1))
    return info


def demo_config_text() -> str:
    """The demo's config (identical to sample_configs/demo.toml; a test keeps them equal)."""
    return resources.files("nc_engine").joinpath(DEMO_CONFIG).read_text(encoding="utf-8")
