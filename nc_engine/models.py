"""Load the user's model in one of the supported formats and wrap it for scanning.

The wrapper takes images in [0, 1] pixel space (where triggers are stamped), applies the model's own
normalisation, and returns log-probabilities or logits so cross-entropy is always the real one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import importlib.util
import io
import json
import logging
import os
import pickle
import re
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import Config, ModelConfig
from .errors import ModelError, first_line
from .files import JsonFileProblem, read_json_object, regular_file_problem

_CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights", "state_dict_ema")


# Below this a probability's log gets no gradient. A confident model with its softmax inside gives the labels
# a stamped image is far from 1e-13 and less (a zoo model: every image with 30% of its pixels replaced), so
# a floor of 1e-12 froze their searches; 1e-30 keeps 1/p (the log's gradient) well inside float32.
PROB_FLOOR = 1e-30


class ScanModel(nn.Module):
    """`net` behind the model's normalisation; outputs are logits or log-probabilities."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float], log_probs: bool,
                 num_classes: int = 0) -> None:
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.log_probs = log_probs
        self.preprocessing: dict[str, list] = {}  # the mean, std and input_shape it was loaded with
        self.class_names: list[str] = []  # the model's own names, where its format records them

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) in [0, 1]
        out = self.net((x - self.mean) / self.std)
        if self.log_probs:
            out = torch.log(out.float().clamp_min(PROB_FLOOR))
        return out


def resolve_device(name: str) -> torch.device:
    """"auto" -> the first CUDA device if there is one, else the CPU; a clear error for absent CUDA."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ModelError(f"[scan].device = \"{name}\" but this machine has no CUDA device "
                             "(use \"cpu\" or \"auto\")")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise ModelError(f"[scan].device = \"{name}\" but only {torch.cuda.device_count()} CUDA "
                             "device(s) are present")
    return torch.device(name)



def _check_file(path: Path, what: str) -> None:
    """An existing regular model file, or one ModelError line naming it."""
    problem = regular_file_problem(path, f"a {what}")
    if problem:
        raise ModelError(f"{path}: {f'{what} not found' if problem == 'not found' else problem} ([model].path)")


def import_object(spec: str, base_dir: Path) -> Any:
    """"file.py:Name" (relative to the config) or "package.module:Name" -> the object."""
    module_part, sep, name = spec.rpartition(":")
    if not sep or not module_part or not name:
        raise ModelError(f"[model].architecture = {spec!r}: expected \"file.py:Name\" or \"package.module:Name\"")
    if module_part.endswith(".py"):
        file = Path(module_part).expanduser()
        file = file if file.is_absolute() else base_dir / file
        if not file.is_file():
            raise ModelError(f"{file}: architecture file not found ([model].architecture = {spec!r})")
        mod_name = f"nc_user_arch_{abs(hash(str(file.resolve())))}"
        loader_spec = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[mod_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise ModelError(f"{file}: importing the architecture failed: "
                             f"{type(exc).__name__}: {first_line(exc)}") from None
    else:
        try:
            module = importlib.import_module(module_part)
        except Exception as exc:
            raise ModelError(f"[model].architecture = {spec!r}: cannot import {module_part}: "
                             f"{type(exc).__name__}: {first_line(exc)}") from None
    if not hasattr(module, name):
        raise ModelError(f"[model].architecture = {spec!r}: {module_part} has no {name!r}")
    return getattr(module, name)


def _keras_hint(path: Path) -> str:
    """The end of an error line for a Keras file given as another format (its bytes say so)."""
    from .keras_model import file_kind  # reads bytes only; keras is not imported

    return "; it is a Keras model: set [model].format = \"keras\"" if file_kind(path) in ("keras", "hdf5") else ""


def load_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a file saved with torch.save, read with weights_only=True (no code runs).

    Accepts a bare state_dict or one wrapped as {"state_dict": ...}, {"model": ...}, ...; strips the
    "module." prefix DataParallel adds.
    """
    _check_file(path, "checkpoint file")
    with path.open("rb") as f:
        head = f.read(4)
    # torch.save writes a zip archive (new format) or a pickle stream starting with PROTO 0x80 (legacy)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":
        raise ModelError(f"{path}: not a PyTorch checkpoint (expected a file written by torch.save){_keras_hint(path)}")
    try:
        with path.open("rb") as f:  # a file object: torch.load reads a path by its extension (.safetensors)
            obj = torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise ModelError(f"{path}: holds Python objects that weights_only=True will not unpickle"
                         + (f" ({found.group(1)})" if found else "")
                         + "; if it is a whole pickled model you trust, use format = \"pickle\" "
                         "with trust_pickle = true") from None
    except Exception as exc:  # torch.load fails on foreign bytes with many exception types
        raise ModelError(f"{path}: not a PyTorch checkpoint ({type(exc).__name__}: {first_line(exc)})"
                         f"{_keras_hint(path)}") from None
    if isinstance(obj, dict):
        for key in _CHECKPOINT_KEYS:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = type(obj).__name__
        keys = ", ".join(list(obj)[:5]) if isinstance(obj, dict) else ""
        raise ModelError(f"{path}: expected a state_dict (a dict of tensors, possibly under one of "
                         f"{', '.join(_CHECKPOINT_KEYS)}), got a {kind}" + (f" with keys {keys}" if keys else ""))
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict from a .safetensors file: a JSON header and raw tensors, so nothing is unpickled."""
    _check_file(path, "safetensors file")
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(f"{path}: safetensors weights need the safetensors package: "
                         "pip install \"nc-tui[safetensors]\"") from None
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # SafetensorError, OSError, ...: all mean the file is not readable as safetensors
        raise ModelError(f"{path}: not a safetensors file ({type(exc).__name__}: {first_line(exc)})") from None
    if not state:
        raise ModelError(f"{path}: the safetensors file holds no tensors; expected a state_dict")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state(path: Path, weights: str = "auto") -> dict[str, torch.Tensor]:
    """A state_dict from a torch.save checkpoint or a .safetensors file ([model].weights; auto = by extension)."""
    if weights == "safetensors" or (weights == "auto" and path.suffix.lower() == ".safetensors"):
        return load_safetensors(path)
    return load_checkpoint(path)


def _load_weights(net: nn.Module, path: Path, state: dict[str, torch.Tensor] | None = None) -> None:
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
        raise ModelError(f"{path}: checkpoint does not match the architecture; {k} has shape "
                         f"{tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model")
    net.load_state_dict(state)


class FixedBatch(nn.Module):
    """Runs a model exported for one batch size on any batch: chunks of that size, the last one padded."""

    def __init__(self, net: nn.Module, batch: int) -> None:
        super().__init__()
        self.net = net
        self.batch = batch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for chunk in x.split(self.batch):
            n = len(chunk)
            if n < self.batch:
                chunk = torch.cat([chunk, chunk.new_zeros((self.batch - n, *chunk.shape[1:]))])
            outs.append(self.net(chunk)[:n])
        return torch.cat(outs)


class ExportedModule(nn.Module):
    """Holds a torch.export program's module, whose .train()/.eval() raise; exported_to_eval sets its mode."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def train(self, mode: bool = True) -> ExportedModule:
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _train_flag_ops() -> dict[Any, int]:
    """aten ops of an exported graph that take a train flag, and the flag's position."""
    aten = torch.ops.aten
    return {aten.dropout.default: 2, aten.feature_dropout.default: 2, aten.alpha_dropout.default: 2,
            aten.feature_alpha_dropout.default: 2, aten.native_dropout.default: 2,
            aten.batch_norm.default: 5, aten._native_batch_norm_legit.default: 5}


def exported_to_eval(module: torch.fx.GraphModule) -> int:
    """Put a torch.export module in eval mode in place; returns how many ops were switched.

    An exported graph has the train flags of the export baked into its ops, and its .eval() raises, so a
    model exported in train mode would keep dropout on and update batch-norm statistics on every forward.
    torch 2.14 has no in-tree helper (torch.ao.quantization.move_exported_model_to_eval went to torchao);
    this does what it does: set the train argument of dropout and batch-norm ops to False.
    """
    ops, changed = _train_flag_ops(), 0
    for node in module.graph.nodes:
        index = ops.get(node.target) if node.op == "call_function" else None
        if index is None:
            continue
        name = node.target._schema.arguments[index].name
        if len(node.args) > index and node.args[index]:
            node.update_arg(index, False)
            changed += 1
        elif node.kwargs.get(name):
            node.update_kwarg(name, False)
            changed += 1
    if changed:
        module.recompile()
    return changed


def forward_is_deterministic(model: nn.Module, x: torch.Tensor, atol: float = 1e-5) -> bool:
    """Two forwards of the same batch agree: false for a model whose dropout stayed on (e.g. a TorchScript
    trace made in train mode, which .eval() cannot undo); such a model makes every scan result noise."""
    with torch.no_grad():
        first, second = model(x), model(x)
    if not (isinstance(first, torch.Tensor) and isinstance(second, torch.Tensor)) or first.shape != second.shape:
        return False
    return bool(torch.allclose(first.float(), second.float(), atol=atol, rtol=1e-4, equal_nan=True))


def outputs_are_finite(model: nn.Module, x: torch.Tensor) -> bool:
    """The model's scores for `x` hold no NaN or infinity (log of a zero probability is clamped by ScanModel)."""
    with torch.no_grad():
        out = model(x)
    return isinstance(out, torch.Tensor) and bool(torch.isfinite(out).all())


def _with_batch(net: nn.Module, batch: Any) -> nn.Module:
    """Exports often fix the batch size; wrap the model so any batch works."""
    return FixedBatch(net, batch) if isinstance(batch, int) and batch > 0 else net


def _unpickled_pt2_entry(zf: zipfile.ZipFile, name: str) -> str | None:
    """Why torch.export.load would unpickle (or run) something from this archive entry, or None."""
    rel = name.partition("/")[2]  # entries sit under one root folder, named after the file
    if rel.startswith("data/aotinductor/"):
        return "AOTInductor compiled code"
    if rel.startswith(("data/weights/", "data/constants/")) and rel.endswith(".pt"):
        return "weights in the legacy pickled format"
    if rel.startswith("data/sample_inputs/"):
        try:  # torch retries a failed weights_only=True load with weights_only=False
            torch.load(io.BytesIO(zf.read(name)), map_location="cpu", weights_only=True)
        except Exception:
            return "sample inputs that only load as a full pickle"
        return None
    if rel.endswith(("_weights_config.json", "_constants_config.json")):
        try:
            entries = json.loads(zf.read(name))["config"].items()
        except Exception:
            return "an unreadable weights/constants config"
        for fqn, meta in entries:
            if not isinstance(meta, dict) or meta.get("use_pickle"):
                return f"{fqn!r} stored as a pickle"
            if "constants" in rel and not str(meta.get("path_name", "")).startswith("tensor_"):
                return f"{fqn!r} stored as a pickled object"
    return None


def _check_exported_archive(path: Path) -> None:
    """Refuse a .pt2 archive that torch.export.load would unpickle: pickles run code (trust_pickle opts in).

    Mirrors torch 2.14's loader (torch/export/pt2_archive/_package.py): it calls torch.load(weights_only=False)
    for use_pickle weights/constants and legacy .pt weights, pickle.loads for opaque constants, a TorchScript
    unpickler for custom objects, a weights_only=False retry for sample inputs, and loads AOTInductor code.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            if "version" in zf.namelist():  # the pre-2.8 layout: deserialised with a weights_only=False fallback
                reason, where = "the old pickled torch.export format", "version"
            else:
                found = ((_unpickled_pt2_entry(zf, name), name) for name in zf.namelist())
                reason, where = next(((r, n) for r, n in found if r), (None, ""))
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise ModelError(f"{path}: not a torch.export program ({first_line(exc)})") from None
    if reason:
        raise ModelError(f"{path}: the torch.export archive holds {reason} ({where}), which runs code when it "
                         "loads; add trust_pickle = true to [model] only if you trust the file")


def _load_exported(path: Path, trust_pickle: bool = False) -> nn.Module:
    _check_file(path, "torch.export program (.pt2)")
    if not zipfile.is_zipfile(path):  # torch.export.save writes a zip; anything else is not one
        raise ModelError(f"{path}: not a torch.export program (expected a .pt2 file written by torch.export.save)")
    if not trust_pickle:
        _check_exported_archive(path)
    quiet = logging.getLogger("torch.export")  # it logs a traceback before raising; our line says it all
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        detail = "" if "warnings above" in str(exc) else f" ({type(exc).__name__}: {first_line(exc)})"
        raise ModelError(f"{path}: not a torch.export program saved with torch.export.save{detail}") from None
    finally:
        quiet.setLevel(level)
    user_inputs = set(program.graph_signature.user_inputs)
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    if len(inputs) != 1:
        raise ModelError(f"{path}: the exported program takes {len(inputs)} inputs; expected one image batch")
    value = inputs[0].meta.get("val")
    batch = value.shape[0] if value is not None and value.dim() == 4 else None
    module = program.module()
    exported_to_eval(module)
    return _with_batch(ExportedModule(module), batch if isinstance(batch, int) else None)


def _load_onnx(path: Path) -> nn.Module:
    _check_file(path, "ONNX model file")
    try:
        import onnx
        import onnx2torch
    except ImportError:
        raise ModelError(f"{path}: [model].format = \"onnx\" needs the onnx and onnx2torch packages: "
                         "pip install \"nc-tui[onnx]\"") from None
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not an ONNX model ({type(exc).__name__}: {first_line(exc)})") from None
    if not proto.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes)")
    try:
        net = onnx2torch.convert(proto)
    except Exception as exc:
        raise ModelError(f"{path}: onnx2torch cannot convert this ONNX model ({type(exc).__name__}: "
                         f"{first_line(exc)})") from None
    initialisers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise ModelError(f"{path}: the ONNX model takes {len(inputs)} inputs; expected one image batch")
    dims = inputs[0].type.tensor_type.shape.dim
    return _with_batch(net, dims[0].dim_value if len(dims) == 4 else None)


def _cifar_stem(net: nn.Module, cfg: Config) -> nn.Module:
    """The usual CIFAR adaptation of an ImageNet ResNet: 3x3 stride-1 first conv, no max-pool."""
    conv = getattr(net, "conv1", None)
    if not isinstance(conv, nn.Conv2d) or not hasattr(net, "maxpool"):
        raise ModelError(f"{cfg.source}: [model].architecture_args.cifar_stem works with torchvision ResNets "
                         f"(conv1 + maxpool), not {cfg.model.architecture!r}")
    net.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


def _classifier_width(path: Path, state: dict[str, torch.Tensor], build: Callable[[int], nn.Module]) -> int:
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
        raise ModelError(f"{cfg.source}: [model].architecture_args.cifar_stem must be true or false, "
                         f"got {cifar_stem!r}")
    if m.architecture not in torchvision.models.list_models():
        raise ModelError(f"{cfg.source}: [model].architecture = {m.architecture!r} is not a torchvision.models "
                         "name (see torchvision.models.list_models())")
    state = load_state(path, m.weights)
    def build(classes: int) -> nn.Module:
        return torchvision.models.get_model(m.architecture, weights=None, num_classes=classes, **args)

    num_classes = m.num_classes or _classifier_width(path, state, build)
    try:
        net = build(num_classes)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"[model].architecture = {m.architecture!r}: not a usable torchvision.models "
                         f"name ({first_line(exc)})") from None
    if cifar_stem:
        net = _cifar_stem(net, cfg)
    _load_weights(net, path, state)
    return net


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
        raise ModelError(f"{path}: [model].format = \"timm\" needs the timm package: "
                         "pip install \"nc-tui[timm]\"") from None
    m = cfg.model
    args = dict(m.architecture_args)
    fetching = [k for k in _TIMM_FETCHING_ARGS if args.get(k) not in (None, False)]
    if fetching:
        raise ModelError(f"{cfg.source}: [model].architecture_args.{fetching[0]}: nc-tui never downloads or loads "
                         "weights through timm; the weights come from [model].path")
    args = {k: v for k, v in args.items() if k not in _TIMM_FETCHING_ARGS}
    if not timm.is_model(m.architecture):
        raise ModelError(f"{cfg.source}: [model].architecture = {m.architecture!r} is not a timm model name "
                         "(see timm.list_models())")
    state = _timm_state(path, m.weights)

    def build(classes: int) -> nn.Module:
        return timm.create_model(m.architecture, pretrained=False, **{**args, "num_classes": classes})

    num_classes = m.num_classes or args.get("num_classes") or _classifier_width(path, state, build)
    try:
        net = build(num_classes)
    except Exception as exc:
        raise ModelError(f"{cfg.source}: [model].architecture = {m.architecture!r}: timm.create_model failed with "
                         f"architecture_args {m.architecture_args} ({type(exc).__name__}: "
                         f"{first_line(exc)})") from None
    _load_weights(net, path, state)
    data = resolve_model_data_config(net)
    return net, {"mean": list(data["mean"]), "std": list(data["std"]), "input_shape": list(data["input_size"])}


class HubLogits(nn.Module):
    """A Hugging Face image classifier as a plain module: pixel values in, the output object's logits out."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(pixel_values=x).logits


def _read_json(path: Path) -> dict[str, Any]:
    """A JSON object from the model folder, or {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        return read_json_object(path)
    except JsonFileProblem as problem:
        raise ModelError(f"{path}: {problem}") from None


def _side(value: Any) -> list[int] | None:
    """[H, W] from an image size as Hugging Face writes it: an int, a pair, or {"height", "width"}."""
    if isinstance(value, dict) and "height" in value and "width" in value:
        value = [value["height"], value["width"]]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value, value]
    ok = isinstance(value, list | tuple) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)
    return [int(v) for v in value] if ok else None


def _hub_preprocessing(folder: Path, config: dict[str, Any]) -> dict[str, Any]:
    """Mean, std, input shape and class names from config.json and preprocessor_config.json."""
    pre = _read_json(folder / "preprocessor_config.json")
    own: dict[str, Any] = {}
    if pre.get("do_normalize", True) and pre.get("image_mean") and pre.get("image_std"):
        own["mean"], own["std"] = pre["image_mean"], pre["image_std"]
    side = _side(pre.get("crop_size")) if pre.get("do_center_crop") else None
    side = side or _side(pre.get("size")) or _side(config.get("image_size"))
    channels = config.get("num_channels", 3)
    if side and isinstance(channels, int):
        own["input_shape"] = [channels, *side]
    labels = config.get("id2label")
    if isinstance(labels, dict) and all(str(k).isdigit() for k in labels):
        names = [str(labels[k]) for k in sorted(labels, key=int)]
        if names != [f"LABEL_{i}" for i in range(len(names))]:  # transformers' placeholder names say nothing
            own["class_names"] = names
    return own


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 and no progress bars (they would draw over the terminal app) for one load."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # with local_files_only: nothing may reach the network
    bars = None
    try:
        from transformers.utils import logging as hf_logging
        bars = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def _huggingface_network(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A save_pretrained folder, loaded offline (local files only, no remote code, safetensors when present)."""
    if not folder.is_dir():
        raise ModelError(f"{folder}: expected a folder written by save_pretrained (config.json and weights) "
                         "([model].path)")
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no config.json; expected a folder written by save_pretrained ([model].path)")
    config = _read_json(folder / "config.json")
    if importlib.util.find_spec("transformers") is None:
        raise ModelError(f"{folder}: [model].format = \"huggingface\" needs the transformers package: "
                         "pip install \"nc-tui[hf]\"")
    try:
        with _hub_offline():
            from transformers import AutoModelForImageClassification
            net, info = AutoModelForImageClassification.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=False, output_loading_info=True,
                use_safetensors=True if any(folder.glob("*.safetensors")) else None)
    except Exception as exc:
        raise ModelError(f"{folder}: cannot load a Hugging Face image classifier ({type(exc).__name__}: "
                         f"{first_line(exc)})") from None
    missing = list(info.get("missing_keys") or [])
    if missing:  # transformers fills them with random values and only warns: the scan would be of noise
        raise ModelError(f"{folder}: the weights lack {len(missing)} of the classifier's tensors ("
                         f"{', '.join(missing[:3])}); expected a folder saved from an image-classification model")
    return HubLogits(net), _hub_preprocessing(folder, config)


def _build_with_defaults(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    """The network, and the preprocessing it carries (formats that record it) for keys the config left out."""
    if cfg.model.format == "timm":
        return _timm_network(cfg, cfg.resolve_path(cfg.model.path))
    if cfg.model.format == "huggingface":
        return _huggingface_network(cfg.resolve_path(cfg.model.path))
    if cfg.model.format == "keras":
        from .keras_model import load_keras  # imports keras (seconds) only for Keras models

        return load_keras(cfg.resolve_path(cfg.model.path), cfg.model.outputs)
    return _build_network(cfg), {}


def _with_own_preprocessing(cfg: Config, own: dict[str, Any]) -> ModelConfig:
    """[model] with mean, std and input_shape the config did not give taken from the model's own values."""
    m = cfg.model
    shape = own.get("input_shape") if not cfg.gave("model", "input_shape") else None
    fits = isinstance(shape, list | tuple) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)
    changes: dict[str, Any] = {"input_shape": [int(v) for v in shape]} if fits else {}
    channels = changes.get("input_shape", m.input_shape)[0]
    for key in ("mean", "std"):
        value = own.get(key)
        numbers = isinstance(value, list | tuple) and all(isinstance(v, int | float) and not isinstance(v, bool)
                                                          and (key == "mean" or v > 0) for v in value)
        if numbers and value and not cfg.gave("model", key) and len(value) in (1, channels):
            changes[key] = [float(v) for v in value]
    return dataclasses.replace(m, **changes) if changes else m


def _build_network(cfg: Config) -> nn.Module:
    m = cfg.model
    path = cfg.resolve_path(m.path)
    if m.format == "exported":
        return _load_exported(path, m.trust_pickle)
    if m.format == "onnx":
        return _load_onnx(path)
    if m.format == "torchscript":
        _check_file(path, "TorchScript model file")
        try:
            with warnings.catch_warnings():  # torch deprecates TorchScript; users still ship it
                warnings.simplefilter("ignore", FutureWarning)
                return torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            hint = _keras_hint(path)
            if hint:
                raise ModelError(f"{path}: not a TorchScript model{hint}") from None
            raise ModelError(f"{path}: not a TorchScript model ({first_line(exc)}); for a state_dict set "
                             "format = \"state_dict\" and architecture") from None
    if m.format == "pickle":
        _check_file(path, "pickled model file")
        try:
            net = torch.load(path, map_location="cpu", weights_only=False)  # trust_pickle checked in config
        except Exception as exc:
            raise ModelError(f"{path}: cannot unpickle the model ({type(exc).__name__}: "
                             f"{first_line(exc)})") from None
        if not isinstance(net, nn.Module):
            raise ModelError(f"{path}: expected a pickled torch.nn.Module, got a {type(net).__name__}")
        return net
    if m.format == "torchvision":
        return _torchvision_network(cfg, path)
    # state_dict
    factory = import_object(m.architecture, cfg.base_dir)
    try:
        net = factory(**m.architecture_args)
    except Exception as exc:
        raise ModelError(f"[model].architecture = {m.architecture!r}: calling it with architecture_args "
                         f"{m.architecture_args} failed: {type(exc).__name__}: {first_line(exc)}") from None
    if not isinstance(net, nn.Module):
        raise ModelError(f"[model].architecture = {m.architecture!r} returned a {type(net).__name__}, "
                         "expected a torch.nn.Module")
    _load_weights(net, path, load_state(path, m.weights))
    return net


def _looks_like_probabilities(out: torch.Tensor) -> bool:
    out = out.float()
    return bool((out >= 0).all() and torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-3))


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
        raise ModelError(f"{cfg.resolve_path(m.path)}: the model fails on input of shape [N, "
                         f"{', '.join(map(str, m.input_shape))}] ([model].input_shape): {first_line(exc)}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 4:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(f"{cfg.resolve_path(m.path)}: expected the model to return (N, num_classes) scores, "
                         f"got {shape}")
    if not m.num_classes:  # absent from the config: the model says; the run folder's config records it
        if out.shape[1] < 2:
            raise ModelError(f"{cfg.resolve_path(m.path)}: the model has {out.shape[1]} output; expected one "
                             "score per class (at least 2)")
    elif out.shape[1] != m.num_classes:
        raise ModelError(f"{cfg.resolve_path(m.path)}: the model has {out.shape[1]} outputs but "
                         f"[model].num_classes = {m.num_classes}")
    if m.outputs == "auto":
        log_probs = _looks_like_probabilities(out)
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
