"""Load the user's model in one of the supported formats and wrap it for scanning.

Each format has a module of its own behind FORMATS. The wrapper (scan_model.ScanModel) takes images in
[0, 1] pixel space (where triggers are stamped), applies the model's own normalisation, and returns
log-probabilities or logits so cross-entropy is always the real one.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from typing import Any

import torch
from torch import nn

from nc_engine.config.settings import MAX_CLASSES, Config, ModelConfig
from nc_engine.errors import ModelError, first_line
from nc_engine.models.scan_model import ScanModel, looks_like_probabilities

# [model].format -> "module:function" under nc_engine.models; each returns (network, the preprocessing it
# records itself). A format's module is imported only when a model of it loads (keras, onnx, timm and
# transformers are optional extras, and take seconds to import).
FORMATS = {
    "torchscript": "torch_files:open_torchscript",
    "pickle": "torch_files:open_pickle",
    "state_dict": "state_dict:open_state_dict",
    "exported": "exported:open_exported",
    "onnx": "onnx_model:open_onnx",
    "torchvision": "torchvision_nets:open_torchvision",
    "timm": "timm_nets:open_timm",
    "huggingface": "huggingface:open_huggingface",
    "keras": "keras:open_keras",
}


def _build_with_defaults(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    """The network, and the preprocessing it carries (formats that record it) for keys the config left out."""
    module, function = FORMATS[cfg.model.format].split(":")
    return getattr(importlib.import_module(f"nc_engine.models.{module}"), function)(cfg)


def _with_own_preprocessing(cfg: Config, own: dict[str, Any]) -> ModelConfig:
    """[model] with mean, std and input_shape the config did not give taken from the model's own values."""
    m = cfg.model
    shape: Any = own.get("input_shape") if not cfg.gave("model", "input_shape") else None
    fits = isinstance(shape, list | tuple) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)
    changes: dict[str, Any] = {"input_shape": [int(v) for v in shape]} if fits else {}
    channels = changes.get("input_shape", m.input_shape)[0]
    for key in ("mean", "std"):
        value = own.get(key)
        numbers = isinstance(value, list | tuple) and all(
            isinstance(v, int | float) and not isinstance(v, bool) and (key == "mean" or v > 0) for v in value
        )
        if numbers and value and not cfg.gave("model", key) and len(value) in (1, channels):
            changes[key] = [float(v) for v in value]
    return dataclasses.replace(m, **changes) if changes else m


def load_model(cfg: Config, device: torch.device) -> ScanModel:
    """Load, wrap, test-forward and freeze the model the config names. The config is not changed:
    with num_classes absent, the model's own count is `model.num_classes`."""
    net, own = _build_with_defaults(cfg)
    m = _with_own_preprocessing(cfg, own)
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    # A test forward at input_shape: shape errors surface here with the config's words, not torch's.
    probe = torch.rand((4, *m.input_shape), generator=torch.Generator().manual_seed(0))
    try:
        with torch.no_grad():
            out = net(probe)
    except Exception as exc:
        raise ModelError(
            f"{cfg.resolve_path(m.path)}: the model fails on input of shape [N, "
            f"{', '.join(map(str, m.input_shape))}] ([model].input_shape): {first_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{cfg.resolve_path(m.path)}: expected the model to return (N, num_classes) scores, got {shape}"
        )
    if not m.num_classes:  # absent from the config: the model says; the run folder's config records it
        if not 2 <= out.shape[1] <= MAX_CLASSES:  # a config recording more could never be resumed
            raise ModelError(
                f"{cfg.resolve_path(m.path)}: the model has {out.shape[1]} output(s); expected one "
                f"score per class, 2..{MAX_CLASSES} of them"
            )
    elif out.shape[1] != m.num_classes:
        raise ModelError(
            f"{cfg.resolve_path(m.path)}: the model has {out.shape[1]} outputs but "
            f"[model].num_classes = {m.num_classes}"
        )
    if m.outputs == "auto":
        log_probs = looks_like_probabilities(out)
    else:
        log_probs = m.outputs == "probabilities"
    channels = m.input_shape[0]
    mean = list(m.mean) * (channels if len(m.mean) == 1 else 1)
    std = list(m.std) * (channels if len(m.std) == 1 else 1)
    model = ScanModel(net, mean, std, log_probs, int(out.shape[1])).to(device)
    model.preprocessing = {"mean": list(m.mean), "std": list(m.std), "input_shape": list(m.input_shape)}
    model.class_names = list(own.get("class_names", []))
    model.eval()
    return model
