"""[model].format = "state_dict": weights (a torch checkpoint or safetensors) into an architecture the
config names, imported from a file or a package."""

from __future__ import annotations

import importlib
import importlib.util
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nc_engine.config.settings import Config
from nc_engine.errors import ModelError, first_line
from nc_engine.models.checks import check_model_file, keras_hint

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "state_dict_ema")


def import_object(spec: str, base_dir: Path) -> Any:
    """ "file.py:Name" (relative to the config) or "package.module:Name" -> the object."""
    module_part, sep, name = spec.rpartition(":")
    if not sep or not module_part or not name:
        raise ModelError(f'[model].architecture = {spec!r}: expected "file.py:Name" or "package.module:Name"')
    if module_part.endswith(".py"):
        file = Path(module_part).expanduser()
        file = file if file.is_absolute() else base_dir / file
        if not file.is_file():
            raise ModelError(f"{file}: architecture file not found ([model].architecture = {spec!r})")
        mod_name = f"nc_user_arch_{abs(hash(str(file.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, file)
        assert loader_spec is not None and loader_spec.loader is not None  # always, for a .py file
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise ModelError(
                f"{file}: importing the architecture failed: {type(exc).__name__}: {first_line(exc)}"
            ) from None
    else:
        try:
            module = importlib.import_module(module_part)
        except Exception as exc:
            raise ModelError(
                f"[model].architecture = {spec!r}: cannot import {module_part}: {type(exc).__name__}: {first_line(exc)}"
            ) from None
    if not hasattr(module, name):
        raise ModelError(f"[model].architecture = {spec!r}: {module_part} has no {name!r}")
    return getattr(module, name)


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file saved with torch.save, read with weights_only=True (no code runs).

    Accepts a bare state_dict or one wrapped as {"state_dict": ...}, {"model": ...}, ...; strips the
    "module." prefix DataParallel adds.
    """
    check_model_file(path, "checkpoint file")
    with path.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (new format) or a pickle stream starting with PROTO 0x80 (legacy)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":
        raise ModelError(f"{path}: not a PyTorch checkpoint (expected a file written by torch.save){keras_hint(path)}")
    try:
        with path.open("rb") as f:  # a file object: torch.load reads a path by its extension (.safetensors)
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise ModelError(
            f"{path}: holds Python objects that weights_only=True will not unpickle"
            + (f" ({found.group(1)})" if found else "")
            + '; if it is a whole pickled model you trust, use format = "pickle" '
            "with trust_pickle = true"
        ) from None
    except Exception as exc:  # torch.load fails on foreign bytes with many exception types
        raise ModelError(
            f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {first_line(exc)}){keras_hint(path)}"
        ) from None
    if isinstance(obj, dict):
        for key in _CHECKPOINT_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        keys = ", ".join(list(obj)[:5]) if isinstance(obj, dict) else ""
        raise ModelError(
            f"{path}: expected a state_dict (a dict of tensors, possibly under one of "
            f"{', '.join(_CHECKPOINT_KEYS)}), got a {kind}" + (f" with keys {keys}" if keys else "")
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file: a JSON header and raw tensors, so nothing is unpickled."""
    check_model_file(path, "safetensors file")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(
            f'{path}: safetensors weights need the safetensors package: pip install "nc-tui[safetensors]"'
        ) from None
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...: all mean the file is not readable as safetensors
        raise ModelError(f"{path}: not a safetensors file ({type(exc).__name__}: {first_line(exc)})") from None
    if not state:
        raise ModelError(f"{path}: the safetensors file holds no tensors; expected a state_dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def load_state(path: Path, weights: str = "auto") -> dict[str, torch.Tensor]:
    """A state_dict from a torch.save checkpoint or a .safetensors file ([model].weights; auto = by extension)."""
    if weights == "safetensors" or (weights == "auto" and path.suffix.lower() == ".safetensors"):
        return load_safetensors(path)
    return load_checkpoint(path)


def load_weights(net: nn.Module, path: Path, state: dict[str, torch.Tensor] | None = None) -> None:
    state = load_checkpoint(path) if state is None else state
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:

        def few(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f" (+{len(keys) - 4} more)" if len(keys) > 4 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        raise ModelError(f"{path}: checkpoint does not match the architecture; " + "; ".join(parts))
    wrong = [k for k in own if own[k].shape != state[k].shape]
    if wrong:
        k = wrong[0]
        raise ModelError(
            f"{path}: checkpoint does not match the architecture; {k} has shape "
            f"{tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        )
    net.load_state_dict(state)


def open_state_dict(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    m = cfg.model
    path = cfg.resolve_path(m.path)
    factory = import_object(m.architecture, cfg.base_dir)
    try:
        net = factory(**m.architecture_args)
    except Exception as exc:
        raise ModelError(
            f"[model].architecture = {m.architecture!r}: calling it with architecture_args "
            f"{m.architecture_args} failed: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    if not isinstance(net, nn.Module):
        raise ModelError(
            f"[model].architecture = {m.architecture!r} returned a {type(net).__name__}, expected a torch.nn.Module"
        )
    load_weights(net, path, load_state(path, m.weights))
    return net, {}
