"""[model].format = "timm": a timm architecture by name with the user's weights, never fetched."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nc_engine.config.settings import Config
from nc_engine.errors import ModelError, first_line
from nc_engine.models.state_dict import load_state, load_weights
from nc_engine.models.torchvision_nets import classifier_width

_TIMM_FETCHING_ARGS = ("pretrained", "checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay")


def _timm_state(path: Path, weights: str) -> dict[str, torch.Tensor]:
    """A timm state_dict, or the model's weights inside a timm training checkpoint (its argparse args allowed)."""
    with torch.serialization.safe_globals([argparse.Namespace]):  # a Namespace only sets attributes
        return load_state(path, weights)


def _timm_network(cfg: Config, path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A timm model built with pretrained=False (nothing is fetched), the checkpoint's weights, and the
    model's own preprocessing (mean, std, input size from its pretrained_cfg)."""
    try:
        import timm
        from timm.data import resolve_model_data_config
    except ImportError:
        raise ModelError(
            f'{path}: [model].format = "timm" needs the timm package: pip install "nc-tui[timm]"'
        ) from None
    m = cfg.model
    args = dict(m.architecture_args)
    fetching = [k for k in _TIMM_FETCHING_ARGS if args.get(k) not in (None, False)]
    if fetching:
        raise ModelError(
            f"{cfg.source}: [model].architecture_args.{fetching[0]}: nc-tui never downloads or loads "
            "weights through timm; the weights come from [model].path"
        )
    args = {k: v for k, v in args.items() if k not in _TIMM_FETCHING_ARGS}
    if not timm.is_model(m.architecture):
        raise ModelError(
            f"{cfg.source}: [model].architecture = {m.architecture!r} is not a timm model name (see timm.list_models())"
        )
    state = _timm_state(path, m.weights)

    def build(classes: int) -> nn.Module:
        return timm.create_model(m.architecture, pretrained=False, **{**args, "num_classes": classes})

    num_classes = m.num_classes or args.get("num_classes") or classifier_width(path, state, build)
    try:
        net = build(num_classes)
    except Exception as exc:
        raise ModelError(
            f"{cfg.source}: [model].architecture = {m.architecture!r}: timm.create_model failed with "
            f"architecture_args {m.architecture_args} ({type(exc).__name__}: "
            f"{first_line(exc)})"
        ) from None
    load_weights(net, path, state)
    data = resolve_model_data_config(net)
    return net, {"mean": list(data["mean"]), "std": list(data["std"]), "input_shape": list(data["input_size"])}


def open_timm(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    return _timm_network(cfg, cfg.resolve_path(cfg.model.path))
