"""The cheapest real scan: a 3-label linear TorchScript model on 4x4 images, about a second a scan. Tests
of the run folder, resume and faults build on it."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nc_engine import run_scan

# the [scan] section of the cheapest scan; a test changes what it needs through write_tiny's keywords
SCAN = {
    "preset": "fast",
    "samples": 24,
    "asr_samples": 30,
    "batch_size": 8,
    "max_steps": 4,
    "device": "cpu",
    "strategy": "sequential",
}


def _toml(value: object) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else json.dumps(value)


def tiny_config(classes: int = 3, **scan: object) -> str:
    """The config of a tiny scan of m.pt on d.npz, with `scan` keys over SCAN's."""
    lines = [f"{key} = {_toml(value)}" for key, value in {**SCAN, **scan}.items()]
    return (
        f'[model]\nformat = "torchscript"\npath = "m.pt"\nnum_classes = {classes}\ninput_shape = [1, 4, 4]\n\n'
        '[data]\npath = "d.npz"\n\n[scan]\n' + "\n".join(lines) + '\n\n[output]\ndir = "runs"\n'
    )


def linear_model(path: Path, seed: int = 0, classes: int = 3, shape: tuple[int, int, int] = (1, 4, 4)) -> None:
    """A TorchScript linear classifier: the cheapest model a scan can search."""
    torch.manual_seed(seed)
    torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), classes))).save(str(path))


def tiny_model(path: Path, seed: int) -> None:
    linear_model(path, seed)


def write_tiny(folder: Path, classes: int = 3, images: int = 90, **scan: object) -> Path:
    """m.pt, d.npz (random 4x4 images, labels in turn) and c.toml in `folder`; returns the config's path."""
    linear_model(folder / "m.pt", 0, classes)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (images, 4, 4), dtype=np.uint8)
    np.savez(folder / "d.npz", x_test=x, y_test=np.arange(images) % classes)
    (folder / "c.toml").write_text(tiny_config(classes, **scan))
    return folder / "c.toml"


def partial_run(config: Path) -> Path:
    """A scan stopped after its first label: a resumable run folder with one finished trial."""
    stop = threading.Event()
    report = run_scan(config, lambda e: stop.set() if e.kind == "label_finished" else None, stop)
    assert not report.complete and len(report.labels) == 1
    return Path(report.run_dir)


def one_line_error(capsys, *needles: str) -> str:
    """What a command printed on stderr: exactly one line, no traceback, holding every needle."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
