"""Before a scan: the device, the model, the disjoint samples and the model's clean accuracy on them.

Everything that can fail on the user's input happens here, before a run folder exists.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from nc_engine.config.settings import Config, check_labels
from nc_engine.data.load import open_data, split_samples
from nc_engine.detectors.neural_cleanse.asr import clean_accuracy
from nc_engine.errors import DataError, RunFolderError
from nc_engine.models.load import load_model
from nc_engine.models.scan_model import ScanModel, forward_is_deterministic, outputs_are_finite, resolve_device

Warn = Callable[[str], None]


@dataclass
class ScanData:
    x_opt: torch.Tensor  # (N, C, H, W) on the device
    y_opt: torch.Tensor
    x_asr: torch.Tensor
    y_asr: torch.Tensor
    opt_idx: np.ndarray
    asr_idx: np.ndarray
    class_names: list[str]
    label_share: list[float]  # each class's share of the data's labels (all of them, not only the samples)


@dataclass
class Prepared:
    """A resolved config (num_classes known) with its device, model, samples and clean accuracy."""

    cfg: Config
    device: torch.device
    model: ScanModel
    data: ScanData
    accuracy: float
    faults: list[str]  # why no trigger search can work on this model (then none runs)


def load_scan_data(
    cfg: Config,
    device: torch.device,
    warn: Warn,
    indices: tuple[np.ndarray, np.ndarray] | None = None,
    model_names: list[str] | None = None,
    indices_file: str = "the saved sample indices",
) -> ScanData:
    """Open the data, draw (or reuse) the disjoint stratified samples, decode them onto the device.
    Class names are the data's, else the model's own (`model_names`), else the label numbers."""
    source = open_data(cfg)
    s = cfg.scan
    assert s.samples is not None and s.asr_samples is not None and s.batch_size is not None  # the preset's
    if indices is None:
        where = str(cfg.resolve_path(cfg.data.path))
        indices = split_samples(source.labels, s.samples, s.asr_samples, s.seed, cfg.data.max_images, where)
    opt_idx, asr_idx = indices
    for idx in (opt_idx, asr_idx):  # a resume's saved indices: damaged, or drawn from other data
        if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= len(source.labels)):
            bad = int(idx.min()) if int(idx.min()) < 0 else int(idx.max())
            raise RunFolderError(
                f"{indices_file}: sample index {bad} is outside the data's {len(source.labels)} images "
                f"({cfg.resolve_path(cfg.data.path)}); expected the indices the scan drew from this data"
            )
    x_opt, opt_idx = source.load(opt_idx, warn)
    x_asr, asr_idx = source.load(asr_idx, warn)
    if len(opt_idx) < s.batch_size:
        raise DataError(
            f"{cfg.resolve_path(cfg.data.path)}: {len(opt_idx)} optimisation samples, fewer "
            f"than [scan].batch_size = {s.batch_size}"
        )
    if len(opt_idx) < s.samples:
        warn(f"only {len(opt_idx)} optimisation samples available ([scan].samples = {s.samples})")
    if len(asr_idx) < min(s.asr_samples, 100):
        warn(f"only {len(asr_idx)} held-out samples for the attack success rate")
    names = list(source.class_names)
    if model_names and names == [str(i) for i in range(len(names))]:  # the data only numbers its classes
        names = list(model_names)
    names += [str(i) for i in range(len(names), cfg.model.num_classes)]
    y = torch.as_tensor(source.labels)
    counts = np.bincount(np.asarray(source.labels, dtype=np.int64), minlength=len(names))
    return ScanData(
        x_opt.to(device),
        y[opt_idx].to(device),
        x_asr.to(device),
        y[asr_idx].to(device),
        opt_idx,
        asr_idx,
        names,
        (counts / max(counts.sum(), 1)).tolist(),
    )


def with_model_classes(cfg: Config, model: ScanModel) -> Config:
    """With num_classes absent from the config, the model's own count (which the run folder records);
    [scan].labels are checked against it. Mean, std and input_shape the model supplied are recorded too."""
    own: dict[str, Any] = {k: v for k, v in model.preprocessing.items() if getattr(cfg.model, k) != v}
    if own:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **own))
    if cfg.model.num_classes:
        return cfg
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, num_classes=model.num_classes))
    check_labels(cfg, inferred=True)
    return cfg


def prepare(
    cfg: Config,
    warn: Warn,
    indices: tuple[np.ndarray, np.ndarray] | None = None,
    indices_file: str = "the saved sample indices",
) -> Prepared:
    """Resolve the config, load the model and the samples, measure the clean accuracy."""
    cfg = cfg.resolved()
    device = resolve_device(cfg.scan.device)
    torch.manual_seed(cfg.scan.seed)
    model = load_model(cfg, device)
    cfg = with_model_classes(cfg, model)
    data = load_scan_data(cfg, device, warn, indices, model.class_names, indices_file)
    accuracy = clean_accuracy(model, torch.cat([data.x_opt, data.x_asr]), torch.cat([data.y_opt, data.y_asr]))
    return Prepared(cfg, device, model, data, accuracy, model_faults(model, data.x_opt[:64]))


def model_faults(model: ScanModel, x: torch.Tensor) -> list[str]:
    """What makes a trigger search meaningless on this model, found on a batch of clean images."""
    if not outputs_are_finite(model, x):
        return ["the model outputs NaN or infinite scores on clean images, so no trigger can be reversed"]
    if not forward_is_deterministic(model, x):
        return [
            "the model's outputs differ between two identical forward passes (dropout or batch norm left "
            "in training mode?), so every trigger's size is noise; save it in eval mode"
        ]
    return []


def low_accuracy_note(accuracy: float, floor: float) -> str:
    """What a low clean accuracy means, without claiming the config is wrong: some models are weak."""
    return (
        f"clean accuracy {accuracy:.1%} on the scan samples is below {floor:.0%}. If the model is documented "
        "as more accurate, the usual causes are the normalisation ([model] mean/std), the input range or "
        "channel order, or labels that do not match the model's classes; if it is simply a weak model, the "
        "scan still runs, but read its verdict with that in mind"
    )


def outputs_kind(model: ScanModel) -> str:
    """What the model's outputs were taken to be (outputs = "auto" detects it): said in the log and report."""
    return "probabilities (log taken)" if model.log_probs else "logits"


def check_setup(cfg: Config) -> dict[str, Any]:
    """The quick check before a scan: load model and data, measure clean accuracy; raises NCError."""
    warnings: list[str] = []
    p = prepare(cfg, warnings.append)
    return {
        "device": str(p.device),
        "samples": len(p.data.opt_idx),
        "asr_samples": len(p.data.asr_idx),
        "classes": len(p.data.class_names),
        "clean_accuracy": p.accuracy,
        "outputs": outputs_kind(p.model),
        "low_accuracy_note": low_accuracy_note(p.accuracy, p.cfg.detect.min_clean_accuracy),
        "low_accuracy": p.accuracy < p.cfg.detect.min_clean_accuracy,
        "warnings": warnings + p.faults,
        "preprocessing": dict(p.model.preprocessing),
    }  # mean, std, input_shape in use (the model's own if left out)
