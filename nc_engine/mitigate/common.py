"""What every mitigation method shares: options, the scanned model and its triggers, clean data,
the activation profile of a layer, evaluation, and saving a repaired model that the scanner loads."""

from __future__ import annotations

import copy
import dataclasses
import os
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nc_engine.config.settings import Config, config_to_toml, load_config
from nc_engine.data.load import open_data, stratified_order
from nc_engine.data.source import DataSource
from nc_engine.detectors.neural_cleanse.asr import EVAL_BATCH, attack_success_rate, clean_accuracy
from nc_engine.detectors.neural_cleanse.trigger import stamp
from nc_engine.errors import MitigationError
from nc_engine.files import parse_toml, write_atomic, write_text
from nc_engine.models.keras import KerasNet  # keras itself is imported only when a Keras model loads
from nc_engine.models.load import load_model
from nc_engine.models.scan_model import ScanModel, resolve_device
from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.report import Report

EventHandler = Callable[[ev.Event], None]


@dataclass
class MitigationOptions:
    """Settings of `nc-tui mitigate` (a [mitigate] table in a TOML file, or CLI flags)."""

    labels: list[int] | None = None  # None: the labels the scan flagged
    data: str = ""  # a config whose [data] is clean data; "": the scan's data minus the scan's samples
    samples: int = 10000  # clean images drawn for fine-tuning, ranking and calibration (at most)
    epochs: int = 1
    lr: float = 5e-3  # Adam; lower ones left the real MNIST trigger partly working (docs: Mitigation)
    batch_size: int = 64
    stamp_fraction: float = 0.2
    jitter: int = 0  # unlearn: stamps move by up to this many pixels
    layer: str = ""  # name of an nn.Linear whose input units are profiled; "": the last Linear
    target_asr: float = 0.05
    max_accuracy_drop: float = 0.02
    fpr: float = 0.05
    top_fraction: float = 0.1  # share of the layer's units the filter watches, at least one (paper: 1% of a wide layer)
    seed: int = 0
    device: str = ""  # "": the scan's [scan].device
    rescan: bool = False
    trust_pickle: bool = False  # the run folder's trust_pickle = true counts only when this says it again


def load_options(path: str | Path, base: MitigationOptions | None = None) -> MitigationOptions:
    """The [mitigate] table of a TOML file; unknown keys and wrong types are one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise MitigationError(f"{path}: options file not found")
    try:
        table = parse_toml(path.read_text(encoding="utf-8")).get("mitigate", {})
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise MitigationError(f"{path}: invalid TOML: {exc}") from None
    opts = copy.deepcopy(base) if base else MitigationOptions()
    known = {f.name: f for f in dataclasses.fields(MitigationOptions)}
    for key, value in table.items():
        if key not in known:
            raise MitigationError(f"{path}: unknown key [mitigate].{key} (known: {', '.join(known)})")
        default = getattr(MitigationOptions(), key)
        if key == "labels":
            if not (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
                raise MitigationError(f"{path}: [mitigate].labels must be a list of integers")
        elif isinstance(default, bool) != isinstance(value, bool) or not isinstance(
            value, type(default) if not isinstance(default, float) else (int, float)
        ):
            kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}[type(default)]
            raise MitigationError(f"{path}: [mitigate].{key} must be {kind}, got {value!r}")
        elif key == "data" and value:  # relative to the options file, as config paths are
            value = str((path.resolve().parent / cast(str, value)).resolve())  # a str: checked above
        setattr(opts, key, float(value) if isinstance(default, float) else value)
    check_options(opts)
    return opts


def check_options(o: MitigationOptions) -> None:
    for name, ok in (
        ("samples", o.samples >= 1),
        ("epochs", o.epochs >= 1),
        ("lr", o.lr > 0),
        ("batch_size", o.batch_size >= 1),
        ("jitter", o.jitter >= 0),
        ("stamp_fraction", 0 < o.stamp_fraction <= 1),
        ("target_asr", 0 < o.target_asr < 1),
        ("max_accuracy_drop", 0 <= o.max_accuracy_drop <= 1),
        ("fpr", 0 < o.fpr < 1),
        ("top_fraction", 0 < o.top_fraction <= 1),
    ):
        if not ok:
            raise MitigationError(f"[mitigate].{name} = {getattr(o, name)!r} is out of range")


@dataclass
class Context:
    """A finished scan, loaded: its config, model, flagged triggers, clean training and held-out data."""

    folder: RunFolder
    cfg: Config
    device: torch.device
    model: ScanModel
    labels: list[int]
    triggers: dict[int, tuple[torch.Tensor, torch.Tensor]]  # label -> (mask HxW, pattern CxHxW) on device
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor  # the scan's held-out ASR samples: never trained on
    y_eval: torch.Tensor


def load_context(run_dir: str | Path, options: MitigationOptions, warn: Callable[[str], None]) -> Context:
    folder = RunFolder.existing(run_dir)
    labels = _labels_to_mitigate(folder, options)
    cfg = folder.config_to_load(options.trust_pickle, "add --trust-pickle")
    device = resolve_device(options.device or cfg.scan.device)
    torch.manual_seed(options.seed)
    model = load_model(cfg, device)
    bad = [lb for lb in labels if not 0 <= lb < model.num_classes]
    if bad:
        raise MitigationError(f"label {bad[0]} is not in 0..{model.num_classes - 1}")
    triggers = {}
    for label in labels:
        arrays = folder.trigger_arrays(label)
        if arrays is None:
            raise MitigationError(
                f"{folder.trigger_file(label)}: reversed trigger of label {label} not found (was it scanned?)"
            )
        triggers[label] = cast(
            tuple[torch.Tensor, torch.Tensor],  # (mask, pattern)
            tuple(torch.as_tensor(a, dtype=torch.float32, device=device) for a in arrays),
        )
    source = open_data(cfg)
    opt_idx, asr_idx = folder.read_samples()
    x_eval, asr_idx = source.load(asr_idx, warn)
    y_eval = torch.as_tensor(source.labels[asr_idx])
    x_train, y_train = _training_images(folder, cfg, source, options, np.concatenate([opt_idx, asr_idx]), warn)
    return Context(
        folder,
        cfg,
        device,
        model,
        labels,
        triggers,
        x_train.to(device),
        y_train.to(device),
        x_eval.to(device),
        y_eval.to(device),
    )


def _labels_to_mitigate(folder: RunFolder, options: MitigationOptions) -> list[int]:
    """The labels given, else the ones a finished scan flagged."""
    report = Report.read(folder.path)
    if not report.complete:
        raise MitigationError(
            f"{folder.path}: the scan is unfinished; resume it first (nc-tui scan --resume {folder.path})"
        )
    folder.check_resumable()
    labels = list(options.labels) if options.labels else list(report.flagged)
    if not labels:
        raise MitigationError(
            f"{folder.path}: the scan flagged no label ({report.verdict}): nothing to mitigate "
            "(use --labels to treat chosen labels as backdoor targets anyway)"
        )
    return labels


def _training_images(
    folder: RunFolder,
    cfg: Config,
    source: DataSource,
    options: MitigationOptions,
    used: np.ndarray,
    warn: Callable[[str], None],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean images to repair with: from --data, else the scan's data minus the samples the scan used."""
    if options.data:
        dcfg = load_config(options.data)
        data = dataclasses.replace(
            dcfg.data,
            path=str(dcfg.resolve_path(dcfg.data.path)),
            labels_path=str(dcfg.resolve_path(dcfg.data.labels_path)) if dcfg.data.labels_path else "",
        )
        train_source = open_data(dataclasses.replace(cfg, data=data))
        pool = np.arange(len(train_source.labels))
    else:
        train_source = source
        pool = np.setdiff1d(np.arange(len(source.labels)), used)
    if len(pool) == 0:
        raise MitigationError(
            f"{folder.path}: no clean samples left beside the scan's; give clean data with --data CONFIG"
        )
    pick = np.sort(pool[stratified_order(train_source.labels[pool], options.seed)[: options.samples]])
    x_train, pick = train_source.load(pick, warn)
    if len(pick) < 100:
        warn(f"only {len(pick)} clean samples for mitigation; results will be noisy")
    return x_train, torch.as_tensor(train_source.labels[pick])


# ---------------------------------------------------------------- evaluation


def evaluate(model: nn.Module, ctx: Context) -> dict[str, Any]:
    """Clean accuracy and every flagged label's reversed-trigger ASR on the held-out samples."""
    model.eval()
    asr = {
        label: attack_success_rate(model, ctx.x_eval, ctx.y_eval, m.cpu().numpy(), p.cpu().numpy(), label)
        for label, (m, p) in ctx.triggers.items()
    }
    return {"accuracy": clean_accuracy(model, ctx.x_eval, ctx.y_eval), "asr": asr}


def stamp_others(
    x: torch.Tensor, y: torch.Tensor, trigger: tuple[torch.Tensor, torch.Tensor], label: int
) -> torch.Tensor:
    """The images not already of `label`, stamped with its trigger (what an attack would send)."""
    return stamp(x[y != label], *trigger)


# ---------------------------------------------------------------- the activation profile of a layer


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    return isinstance(module, torch.jit.ScriptModule) and getattr(module, "original_name", "") == "Linear"


def linear_layers(net: nn.Module) -> tuple[str, list[tuple[str, Any]]]:
    """What the model's x @ W.T + b layers are called ("Linear", or "Dense" in a Keras model) and those
    layers by name, in order; each has weight (out, in), bias and register_forward_pre_hook."""
    if isinstance(net, KerasNet):  # its Keras layers are not torch submodules
        return "Dense", net.dense_layers()
    return "Linear", [(name, m) for name, m in net.named_modules() if _is_linear(m)]


class Probe:
    """The input units of one Linear layer of the model (a Dense layer of a Keras model): read them, and
    silence chosen ones.

    Silencing zeroes the layer's weight columns, which is exactly zeroing those inputs, and works on
    TorchScript modules too (they refuse forward hooks); the saved pruned model is what was measured."""

    def __init__(self, model: ScanModel, layer: str = "") -> None:
        self.model = model
        kind, linears = linear_layers(model.net)
        if not linears and kind == "Dense":
            raise MitigationError(
                "the Keras model has no Dense layer to profile (prune and filter read the input "
                "of a Dense layer); repair it with --method unlearn"
            )
        if not linears:
            raise MitigationError(
                "the model has no Linear layer to profile (prune and filter read the input "
                "of a Linear layer; set --layer to one)"
            )
        if layer:
            found = [m for name, m in linears if name == layer]
            if not found:
                raise MitigationError(
                    f"--layer {layer!r} is not a {kind} layer of the model ({kind} layers: "
                    f"{', '.join(n for n, _ in linears)})"
                )
            self.name, self.module = layer, found[0]
        else:
            self.name, self.module = linears[-1]
        self.scripted = isinstance(self.module, torch.jit.ScriptModule)
        self.units = int(self.module.weight.shape[1])
        self.final = False  # set by check_final()

    def describe(self) -> str:
        return f"input of {self.name} ({self.units} units)"

    def _net_input(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.model.mean) / self.model.std

    @torch.no_grad()
    def _read(self, x: torch.Tensor) -> torch.Tensor:
        if not self.scripted:
            got: list[torch.Tensor] = []
            handle = self.module.register_forward_pre_hook(lambda _m, inp: got.append(inp[0].detach()))
            try:
                self.model.net(self._net_input(x))
            finally:
                handle.remove()
            h = got[-1].flatten(1)
            if h.shape[1] != self.units:  # ranking would pick units the weight does not have
                raise MitigationError(
                    f"the input of {self.name} is {tuple(got[-1].shape[1:])} per image, not one "
                    f"vector of its {self.units} input units (a layer applied per position); "
                    "pick another with --layer"
                )
            return h
        # TorchScript: an identity weight makes the layer output its input; valid when the layer's output
        # is the network's output, which check_final verifies.
        w, b = self.module.weight, self.module.bias
        try:
            self.module.weight = nn.Parameter(
                torch.eye(self.units, device=w.device, dtype=w.dtype), requires_grad=False
            )
            self.module.bias = nn.Parameter(
                torch.zeros(self.units, device=w.device, dtype=w.dtype), requires_grad=False
            )
            return self.model.net(self._net_input(x))
        finally:
            self.module.weight, self.module.bias = w, b

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        """(N, units) activations of x (N, C, H, W) in [0, 1], in chunks."""
        outs = [self._read(x[i : i + EVAL_BATCH]) for i in range(0, len(x), EVAL_BATCH)]
        return torch.cat(outs) if outs else torch.zeros((0, self.units), device=x.device)

    @torch.no_grad()
    def head(self, h: torch.Tensor) -> torch.Tensor:
        """Scores from activations; equals the model's output (up to the log of probabilities) when final."""
        return F.linear(h, self.module.weight, self.module.bias)

    @torch.no_grad()
    def check_final(self, x: torch.Tensor) -> bool:
        """Whether the layer's output is the network's output on these inputs (fast pruning curve)."""
        x = x[:64]
        try:
            h = self.activations(x)
        except RuntimeError:
            h = None
        if h is None or h.dim() != 2 or h.shape[1] != self.units:
            self.final = False
        else:
            out = self.model.net(self._net_input(x))
            self.final = out.shape == (len(x), self.module.weight.shape[0]) and bool(
                torch.allclose(out, self.head(h), atol=1e-4, rtol=1e-4)
            )
        if self.scripted and not self.final:
            raise MitigationError(
                f"cannot read the activations of {self.name} in this TorchScript model: its "
                "output is not the model's output (pick the last Linear, or use a state_dict model)"
            )
        return self.final

    @torch.no_grad()
    def silence(self, units: list[int] | np.ndarray) -> torch.Tensor:
        """Zero the weight columns of `units`; returns the previous weight for restore()."""
        saved = self.module.weight.detach().clone()
        if len(units):
            self.module.weight[:, torch.as_tensor(np.asarray(units), dtype=torch.long)] = 0
        return saved

    @torch.no_grad()
    def restore(self, saved: torch.Tensor) -> None:
        self.module.weight.copy_(saved)


# ---------------------------------------------------------------- saving the repaired model


def save_repaired(ctx: Context, net: nn.Module, out: Path) -> tuple[Path, Path]:
    """The repaired network as TorchScript (or a state_dict beside the original architecture) and a
    config.toml next to it that scans it; the input model is never touched."""
    net = net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    cfg = ctx.cfg
    if cfg.model.format == "keras":
        path, fmt = _save_keras(net, out / "model.keras"), "keras"
    else:
        path, fmt = _save_torch(ctx, net, out)
    # weights = "auto": the repaired state_dict is a torch.save file even when the original was safetensors
    model = dataclasses.replace(cfg.model, path=str(path.resolve()), format=fmt, weights="auto")
    if fmt in ("torchscript", "keras"):
        model = dataclasses.replace(model, architecture="", architecture_args={})
    output = dataclasses.replace(cfg.output, dir=str((out / "rescan").resolve()))
    cfg = dataclasses.replace(cfg, model=model, output=output, source=str(ctx.folder.config_path))
    config_path = out / "config.toml"
    write_text(config_path, config_to_toml(cfg))
    return path, config_path


def _save_keras(net: nn.Module, path: Path) -> Path:
    """A repaired Keras model back as .keras (softmax and all), written beside and renamed into place."""
    if not hasattr(net, "save_keras"):
        raise MitigationError("expected a Keras model to save as .keras")
    partial = path.with_name(f".partial-{path.name}")  # keras picks the writer by the .keras suffix
    try:
        cast(Any, net).save_keras(partial)  # a KerasNet: checked above
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def _save_torch(ctx: Context, net: nn.Module, out: Path) -> tuple[Path, str]:
    """TorchScript (scripted, else traced), else a state_dict beside the original architecture."""
    cfg = ctx.cfg
    path = out / "model.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            scripted = net if isinstance(net, torch.jit.ScriptModule) else torch.jit.script(net)
            write_atomic(path, lambda f: torch.jit.save(scripted, f))
            fmt = "torchscript"
        except Exception:
            try:
                example = torch.zeros((2, *cfg.model.input_shape), device=ctx.device)
                traced = torch.jit.trace(net, example)
                write_atomic(path, lambda f: torch.jit.save(traced, f))
                fmt = "torchscript"
            except Exception:
                if cfg.model.format not in ("state_dict", "torchvision", "timm"):
                    raise MitigationError(
                        f"cannot save the repaired {cfg.model.format} model as TorchScript "
                        "(torch.jit.script and trace both failed)"
                    ) from None
                path = out / "model_state.pt"
                write_atomic(path, lambda f: torch.save(net.state_dict(), f))
                fmt = cfg.model.format
    return path, fmt
