"""The cheapest real scan: a 3-label linear TorchScript model on 4x4 images, about a second a scan. Tests
of the run folder, resume and faults build on it."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nc_engine import run_scan

CONFIG = """[model]
format = "torchscript"
path = "m.pt"
num_classes = 3
input_shape = [1, 4, 4]

[data]
path = "d.npz"

[scan]
preset = "fast"
samples = 24
asr_samples = 30
batch_size = 8
max_steps = 4
device = "cpu"
strategy = "sequential"

[output]
dir = "runs"
"""


def tiny_model(path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(16, 3))).save(str(path))


def write_tiny(folder: Path) -> Path:
    """m.pt, d.npz and c.toml in `folder`; returns the config's path."""
    tiny_model(folder / "m.pt", 0)
    rng = np.random.default_rng(0)
    np.savez(folder / "d.npz", x_test=rng.integers(0, 256, (90, 4, 4), dtype=np.uint8), y_test=np.arange(90) % 3)
    (folder / "c.toml").write_text(CONFIG)
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
