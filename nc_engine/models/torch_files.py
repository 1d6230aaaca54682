"""[model].format = "torchscript" (torch.jit.save) and "pickle" (a whole nn.Module saved with torch.save;
runs the file's code, so the config must say trust_pickle = true, which config.py checks)."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn

from nc_engine.config.settings import Config
from nc_engine.errors import ModelError, first_line
from nc_engine.models.checks import check_model_file, keras_hint


def open_torchscript(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    path = cfg.resolve_path(cfg.model.path)
    check_model_file(path, "TorchScript model file")
    try:
        with warnings.catch_warnings():  # torch deprecates TorchScript; users still ship it
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu"), {}
    except Exception as exc:
        hint = keras_hint(path)
        if hint:
            raise ModelError(f"{path}: not a TorchScript model{hint}") from None
        raise ModelError(
            f"{path}: not a TorchScript model ({first_line(exc)}); for a state_dict set "
            'format = "state_dict" and architecture'
        ) from None


def open_pickle(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    path = cfg.resolve_path(cfg.model.path)
    check_model_file(path, "pickled model file")
    try:
        net = torch.load(path, map_location="cpu", weights_only=False)  # trust_pickle checked in config
    except Exception as exc:
        raise ModelError(f"{path}: cannot unpickle the model ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(net, nn.Module):
        raise ModelError(f"{path}: expected a pickled torch.nn.Module, got a {type(net).__name__}")
    return net, {}
