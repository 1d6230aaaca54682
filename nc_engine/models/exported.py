"""[model].format = "exported": a torch.export program (.pt2), checked before torch reads it."""

from __future__ import annotations

import io
import keyword
import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nc_engine.config.settings import Config
from nc_engine.errors import ModelError, first_line
from nc_engine.files import parse_json
from nc_engine.models.checks import check_model_file


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
    return {
        aten.dropout.default: 2,
        aten.feature_dropout.default: 2,
        aten.alpha_dropout.default: 2,
        aten.feature_alpha_dropout.default: 2,
        aten.native_dropout.default: 2,
        aten.batch_norm.default: 5,
        aten._native_batch_norm_legit.default: 5,
    }


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


def with_batch(net: nn.Module, batch: Any) -> nn.Module:
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
            entries = parse_json(zf.read(name))["config"].items()
        except Exception:
            return "an unreadable weights/constants config"
        for fqn, meta in entries:
            if not isinstance(meta, dict) or meta.get("use_pickle"):
                return f"{fqn!r} stored as a pickle"
            if "constants" in rel and not str(meta.get("path_name", "")).startswith("tensor_"):
                return f"{fqn!r} stored as a pickled object"
    return None


# torch's deserialiser hands every `expr_str` of the program's JSON to sympy.sympify, which evaluates it
# as Python. These are the functions torch registers for it (serialize.py's sympy_functions) and sympy's
# own that shapes use; anything else called, and any attribute, string, subscript or dunder, is refused.
_SYMPY_CALLS = frozenset(
    "FloorDiv ModularIndexing Where PythonMod Mod CleanDiv CeilToInt FloorToInt CeilDiv LShift RShift PowByNatural "
    "FloatPow FloatTrueDiv IntTrueDiv IsNonOverlappingAndDenseIndicator TruncToFloat TruncToInt RoundToInt "
    "RoundDecimal ToFloat Identity Min Max floor ceiling Abs Eq Ne Lt Le Gt Ge And Or Not Piecewise sqrt Pow Mul Add "
    "Integer Rational Float Symbol Dummy Tuple Equality Unequality GreaterThan LessThan StrictGreaterThan "
    "StrictLessThan BooleanTrue BooleanFalse".split()
)
# torch writes sympy's srepr, as in Symbol('s31', positive=True, integer=True): a quoted name is data, and
# keyword arguments are assumptions
_EXPR_TOKEN = re.compile(
    r"\s+|\d+\.\d+(?:e[+-]?\d+)?|\d+|'[A-Za-z0-9_.+-]*'|[A-Za-z][A-Za-z0-9_]*|\*\*|//|<=|>=|==|!=|[-+*/%(),<>&|~=]"
)


def unsafe_expression(text: str) -> str | None:
    """Why sympify could run code from this shape expression, or None for plain arithmetic on symbols."""
    tokens, at = [], 0
    while at < len(text):
        match = _EXPR_TOKEN.match(text, at)
        if not match:
            return f"the character {text[at]!r}"
        tokens.append(match.group())
        at = match.end()
    words = [t for t in tokens if not t.isspace()]
    for i, word in enumerate(words):
        if "__" in word:
            return f"the name {word!r}"
        if not word[0].isalpha():
            continue
        if keyword.iskeyword(word) and word not in ("True", "False", "None"):
            return f"the name {word!r}"
        if i + 1 < len(words) and words[i + 1] == "(" and word not in _SYMPY_CALLS:
            return f"a call of {word!r}"
    return None


def _expressions(value: Any) -> Iterator[str]:
    """Every `expr_str` in a JSON document (torch sympifies each one)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "expr_str" and isinstance(item, str):
                yield item
            else:
                yield from _expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from _expressions(item)


def _unsafe_members(zf: zipfile.ZipFile) -> tuple[str, str] | None:
    """(why, member) for a duplicate member (this check and torch's reader could read different ones), a
    program description that cannot be read, or a shape expression sympify would run as code; else None."""
    names = [info.filename for info in zf.infolist()]
    twice = next((n for n in names if names.count(n) > 1), None)
    if twice is not None:  # a check reading one copy proves nothing about the copy torch reads
        return "a member stored twice, so what is checked may not be what torch loads", twice
    for name in names:
        if name.endswith(".json") and "/models/" in f"/{name}":
            try:
                document = parse_json(zf.read(name))
            except (ValueError, RecursionError):
                return "a program description that cannot be read, so it cannot be checked", name
            for expression in _expressions(document):
                why = unsafe_expression(expression)
                if why:
                    return f"a shape expression with {why}", name
    return None


def _check_exported_archive(path: Path) -> None:
    """Refuse a .pt2 archive that torch.export.load would unpickle: pickles run code (trust_pickle opts in).

    Mirrors torch 2.14's loader (torch/export/pt2_archive/_package.py): it calls torch.load(weights_only=False)
    for use_pickle weights/constants and legacy .pt weights, pickle.loads for opaque constants, a TorchScript
    unpickler for custom objects, a weights_only=False retry for sample inputs, and loads AOTInductor code.
    """
    reason: str | None
    try:
        with zipfile.ZipFile(path) as zf:
            unsafe = _unsafe_members(zf)
            if unsafe is not None:
                reason, where = unsafe
            elif "version" in zf.namelist():  # the pre-2.8 layout: deserialised with a weights_only=False fallback
                reason, where = "the old pickled torch.export format", "version"
            else:
                found = ((_unpickled_pt2_entry(zf, name), name) for name in zf.namelist())
                reason, where = next(((r, n) for r, n in found if r), (None, ""))
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise ModelError(f"{path}: not a torch.export program ({first_line(exc)})") from None
    if reason:
        raise ModelError(
            f"{path}: the torch.export archive holds {reason} ({where}), "
            f"{'which could run' if 'checked' in reason else 'which runs'} code when it loads; add trust_pickle = true "
            "to [model] only if you trust the file"
        )


def _load_exported(path: Path, trust_pickle: bool = False) -> nn.Module:
    check_model_file(path, "torch.export program (.pt2)")
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
    return with_batch(ExportedModule(module), batch if isinstance(batch, int) else None)


def open_exported(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    return _load_exported(cfg.resolve_path(cfg.model.path), cfg.model.trust_pickle), {}
