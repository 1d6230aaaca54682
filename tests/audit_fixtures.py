"""A zoo of four small models for the audit tests, all taking the demo's 28x28 glyphs: the demo's
backdoored and clean CNNs (the session fixtures), a net whose dropout was left on (inconclusive, found
before any search) and a file that is no model at all (an error the audit records and passes)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch
from torch import nn

from nc_engine.audit.spec import AuditSpec, load_spec

# A tiny budget over 4 labels: seconds per scan on 2 idle cores, and it still finds the demo's backdoor.
SCAN = {"preset": "fast", "labels": [0, 2, 5, 8], "samples": 64, "max_steps": 60, "asr_samples": 200, "device": "cpu"}
MODELS = ("a_backdoored", "b_clean", "c_dropout", "d_broken")


class DropoutNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(28 * 28, 10)
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(x.flatten(1)))


def toml_value(value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return str(value)


def scan_section() -> str:
    return "[scan]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in SCAN.items())


def build_zoo(folder: Path, backdoored, clean) -> Path:
    """folder/models/{a_backdoored,b_clean,c_dropout,d_broken}.pt, folder/data.npz and folder/audit.toml
    (a `models` spec sharing the demo's [model] and [data]); returns the spec."""
    models = folder / "models"
    models.mkdir(parents=True)
    shutil.copy(Path(backdoored.folder) / "demo_model.pt", models / "a_backdoored.pt")
    shutil.copy(Path(clean.folder) / "demo_model.pt", models / "b_clean.pt")
    shutil.copy(Path(clean.folder) / "demo_data.npz", folder / "data.npz")
    torch.manual_seed(0)
    net = DropoutNet().train()  # a trace made in train mode keeps dropout on whatever .eval() says
    torch.jit.trace(net, torch.rand(2, 1, 28, 28), check_trace=False).save(str(models / "c_dropout.pt"))
    (models / "d_broken.pt").write_bytes(b"these bytes are not a TorchScript archive\n")
    (models / "notes.txt").write_text("not a model: a folder's other files are left out\n")
    spec = folder / "audit.toml"
    spec.write_text(
        'models = "models"\n\n[model]\nformat = "torchscript"\nnum_classes = 10\n'
        "input_shape = [1, 28, 28]\nmean = [0.5]\nstd = [0.5]\n\n"
        '[data]\nformat = "npz"\npath = "data.npz"\n\n' + scan_section()
    )
    return spec


def cheap_zoo(folder: Path, names: list[str], extra: str = "") -> AuditSpec:
    """Models of 28x28 grey glyphs that never need a search: a dropout left on (inconclusive) and a
    file that is no model (error); the spec names them by `models`."""
    models = folder / "models"
    models.mkdir(parents=True)
    torch.manual_seed(0)
    for name in names:
        if "broken" in name:
            (models / f"{name}.pt").write_bytes(b"not a model")
        else:
            torch.jit.trace(DropoutNet().train(), torch.rand(2, 1, 28, 28), check_trace=False).save(
                str(models / f"{name}.pt")
            )
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.integers(0, 255, (200, 28, 28), dtype=np.uint8), y=np.arange(200) % 10)
    spec = folder / "audit.toml"
    spec.write_text(
        'models = "models"\n[model]\nnum_classes = 10\ninput_shape = [1, 28, 28]\n'
        '[data]\npath = "data.npz"\n[scan]\nsamples = 32\nasr_samples = 32\ndevice = "cpu"\n' + extra
    )
    return load_spec(spec)
