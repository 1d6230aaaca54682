"""The built-in demo: synthetic "glyphs", a small CNN with a BadNets patch backdoor, its config.

Everything is generated (no download) and trains in seconds on two CPU cores. The same pieces serve
the tests and benchmarks: `SmallCNN`, `train_classifier`, `stamp_patch`.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEMO_CONFIG = "demo.toml"


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


def synthetic_glyphs(n: int, seed: int, size: int = 28, classes: int = 10, blobs: int = 4
                     ) -> tuple[np.ndarray, np.ndarray]:
    """n grey images (uint8, n x size x size). Each class is a fixed constellation of `blobs` Gaussian
    spots, drawn with per-image jitter, shift, brightness and noise. The constellations are independent
    random draws, so every class is about equally far from the others: a clean model needs a similar
    trigger size for every label, as on real digit data."""
    glyph_rng = np.random.default_rng(12345)  # the classes' shapes are the same for every seed
    centers = glyph_rng.uniform(5, size - 5, size=(classes, blobs, 2))  # (K, blob, xy)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    c = centers[y] + rng.normal(0, 1.0, size=(n, blobs, 2)) + rng.integers(-2, 3, size=(n, 1, 2))
    yy, xx = np.mgrid[0:size, 0:size]
    img = np.zeros((n, size, size))
    for b in range(blobs):  # one blob at a time keeps memory at n x size x size
        d2 = (xx - c[:, b, 0, None, None]) ** 2 + (yy - c[:, b, 1, None, None]) ** 2
        np.maximum(img, np.exp(-d2 / 8.0), out=img)  # sigma = 2 px
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


def _to_tensor(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x).float() / 255.0
    return t.unsqueeze(1) if t.dim() == 3 else t.permute(0, 3, 1, 2)


def train_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int,
                     mean: float = 0.5, std: float = 0.5, batch_size: int = 64, lr: float = 2e-3) -> nn.Module:
    """Plain Adam training on uint8 images, normalised with (x - mean) / std as the config says."""
    torch.manual_seed(seed)
    xt, yt = (_to_tensor(x) - mean) / std, torch.from_numpy(y)
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
    pred = model((_to_tensor(x) - mean) / std).argmax(1).numpy()
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
    request = {"backdoor": backdoor, "seed": seed, "epochs": epochs, "n_train": n_train, "n_test": n_test}
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
    model = train_classifier(SmallCNN(), x_train, y_train, epochs, seed)
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
