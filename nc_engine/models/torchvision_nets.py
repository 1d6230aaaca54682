"""[model].format = "torchvision": a torchvision architecture by name with the user's weights."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nc_engine.config.settings import Config
from nc_engine.errors import ModelError, first_line
from nc_engine.models.state_dict import load_state, load_weights


def _cifar_stem(net: nn.Module, cfg: Config) -> nn.Module:
    """The usual CIFAR adaptation of an ImageNet ResNet: 3x3 stride-1 first conv, no max-pool."""
    conv = getattr(net, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(net, "maxpool"):
        raise ModelError(
            f"{cfg.source}: [model].architecture_args.cifar_stem works with torchvision ResNets "
            f"(conv1 + maxpool), not {cfg.model.architecture!r}"
        )
    net.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def classifier_width(path: Path, state: dict[str, torch.Tensor], build: Callable[[int], nn.Module]) -> int:
    """num_classes of a checkpoint: the rows of the weight that follows num_classes in the architecture.

    Found by building the architecture twice on the meta device (no memory, no compute) with two class
    counts; key order cannot be trusted (safetensors files come back sorted by name)."""

    def both() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return build(1000).state_dict(), build(1001).state_dict()

    try:
        with torch.device("meta"):
            one, two = both()
    except Exception:  # some architectures compute at init, which meta tensors cannot: build them for real
        try:
            one, two = both()
        except Exception:  # the real build reports the error in the config's words
            one, two = {}, {}
    heads = [k for k in one if k in two and one[k].shape != two[k].shape and k in state and state[k].dim() >= 2]
    if not heads:
        raise ModelError(f"{path}: cannot tell the number of classes from the checkpoint; set [model].num_classes")
    return int(state[heads[0]].shape[0])


def _torchvision_network(cfg: Config, path: Path) -> nn.Module:
    import torchvision

    m = cfg.model
    args = dict(m.architecture_args)
    cifar_stem = args.pop("cifar_stem", False)
    if not isinstance(cifar_stem, bool):
        raise ModelError(
            f"{cfg.source}: [model].architecture_args.cifar_stem must be true or false, got {cifar_stem!r}"
        )
    if m.architecture not in torchvision.models.list_models():
        raise ModelError(
            f"{cfg.source}: [model].architecture = {m.architecture!r} is not a torchvision.models "
            "name (see torchvision.models.list_models())"
        )
    state = load_state(path, m.weights)

    def build(classes: int) -> nn.Module:
        return torchvision.models.get_model(m.architecture, weights=None, num_classes=classes, **args)

    num_classes = m.num_classes or classifier_width(path, state, build)
    try:
        net = build(num_classes)
    except (ValueError, TypeError) as exc:
        raise ModelError(
            f"[model].architecture = {m.architecture!r}: not a usable torchvision.models name ({first_line(exc)})"
        ) from None
    if cifar_stem:
        net = _cifar_stem(net, cfg)
    load_weights(net, path, state)
    return net


def open_torchvision(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    return _torchvision_network(cfg, cfg.resolve_path(cfg.model.path)), {}
