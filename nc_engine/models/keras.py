"""Keras models, read natively: Keras 3 on its PyTorch backend (no TensorFlow) loads a `.keras` file or a
legacy `.h5`/`.hdf5` as a torch.nn.Module with real autograd, so search, ASR and mitigation run unchanged.

Files load with safe_mode=True: a Lambda layer (Python code) is refused, never run. The engine feeds
N x C x H x W; Keras image models take N x H x W x C, so the wrapper transposes to the model's own layout.
"""

from __future__ import annotations

import os
import sys
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nc_engine.config.settings import Config
from nc_engine.errors import ModelError, first_line
from nc_engine.files import regular_file_problem
from nc_engine.models.keras_config import model_config, unsafe_reference

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
MIN_KERAS = (3, 12)  # 3.11.3 and 3.12 closed safe_mode bypasses (legacy .h5 Lambda, file reads)


def file_kind(path: Path) -> str:
    """What a model file holds, from its first bytes and zip listing: "keras" (a .keras zip), "hdf5"
    (a legacy Keras .h5), "torch" (a TorchScript or torch.save zip, or a legacy pickle), or ""."""
    try:
        with path.open("rb") as f:
            head = f.read(8)
        if head == HDF5_MAGIC:
            return "hdf5"
        if head[:1] == b"\x80":
            return "torch"
        if head[:4] != b"PK\x03\x04":
            return ""
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (OSError, zipfile.BadZipFile):
        return ""
    if {"config.json", "metadata.json"} <= names:
        return "keras"
    if any(n.endswith(("/data.pkl", "/constants.pkl")) for n in names):
        return "torch"
    return ""


def import_keras(path: Path) -> Any:
    """keras on the torch backend: KERAS_BACKEND=torch before the first import; one error line if keras
    is missing, too old, or was already imported here with another backend."""
    if not _installed("h5py"):  # keras reads the weights of .keras and .h5 files with it
        raise ModelError(
            f'{path}: [model].format = "keras" needs the keras and h5py packages: pip install "nc-tui[keras]"'
        )
    if "keras" not in sys.modules:
        if not _installed("keras"):
            raise ModelError(
                f'{path}: [model].format = "keras" needs the keras and h5py packages: pip install "nc-tui[keras]"'
            )
        previous = os.environ.get("KERAS_BACKEND")
        os.environ["KERAS_BACKEND"] = "torch"  # read once, when keras is first imported
        try:
            import keras
        finally:
            if previous is None:
                os.environ.pop("KERAS_BACKEND", None)
            else:
                os.environ["KERAS_BACKEND"] = previous
    import keras

    backend = keras.backend.backend()
    if backend != "torch":
        raise ModelError(
            f"{path}: keras was already imported in this process with the {backend!r} backend; "
            "nc-tui needs its torch backend (set KERAS_BACKEND=torch before anything imports keras)"
        )
    version = tuple(int(v) for v in keras.__version__.split(".")[:2] if v.isdigit())
    if version < MIN_KERAS:
        raise ModelError(
            f"{path}: keras {keras.__version__} is older than {'.'.join(map(str, MIN_KERAS))}, whose "
            'safe_mode closes known ways for a model file to run code: pip install -U "nc-tui[keras]"'
        )
    return keras


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _is_softmax(fn: Any) -> bool:
    return getattr(fn, "__name__", "") == "softmax"


class KerasNet(nn.Module):
    """A Keras 3 model (torch backend) as a plain module: N x C x H x W in, scores out.

    With `logits`, a final softmax is taken off, so the search sees the model's logits: the log of a
    saturated float32 softmax is a flat -inf (no gradient), while log_softmax of the logits is the same
    log-probability, stable (Keras' own cross-entropy does the same for a softmax output)."""

    def __init__(self, model: Any, channels_last: bool, logits: bool) -> None:
        super().__init__()
        self.keras_model = model  # a torch Module: its variables are this module's parameters
        self.channels_last = channels_last
        self.softmax_layer: Any = None  # a layer whose softmax activation was swapped for the logits
        self.forward_model = model
        if logits:
            self._take_logits(model)

    def _take_logits(self, model: Any) -> None:
        import keras

        last = model.layers[-1] if getattr(model, "layers", None) else None
        if last is None:
            return
        if isinstance(last, keras.layers.Softmax) or (
            isinstance(last, keras.layers.Activation) and _is_softmax(last.activation)
        ):
            self.forward_model = keras.Model(model.inputs, last.input)  # shares the weights
        elif _is_softmax(getattr(last, "activation", None)):
            self.softmax_layer = (last, last.activation)
            last.activation = keras.activations.linear

    @property
    def takes_logits(self) -> bool:
        return self.softmax_layer is not None or self.forward_model is not self.keras_model

    def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True) -> Any:
        """The trainable variables only: Keras keeps batch-norm statistics and seeds as Parameters too,
        which fine-tuning must not move."""
        frozen = {id(v.value) for v in self.keras_model.non_trainable_variables}
        for name, p in super().named_parameters(prefix, recurse, remove_duplicate):
            if id(p) not in frozen:
                yield name, p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import keras

        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        with keras.device(str(x.device)):  # Keras ops otherwise create tensors on its own default device
            return self.forward_model(x, training=self.training)

    def dense_layers(self) -> list[tuple[str, DenseAsLinear]]:
        """The model's plain Dense layers in call order (nested models' as "outer/inner"), seen as Linear
        layers: what prune and filter profile in a Keras model, whose layers torch does not list as modules."""
        import keras

        def walk(model: Any, prefix: str) -> list[tuple[str, DenseAsLinear]]:
            found = []
            for layer in getattr(model, "layers", []):
                if isinstance(layer, keras.Model):
                    found += walk(layer, f"{prefix}{layer.name}/")
                elif (
                    isinstance(layer, keras.layers.Dense)
                    and not getattr(layer, "lora_enabled", False)
                    and getattr(layer, "quantization_mode", None) is None
                ):  # a float kernel of its own
                    found.append((prefix + layer.name, DenseAsLinear(layer)))
            return found

        return walk(self.keras_model, "")

    def save_keras(self, path: Path) -> None:
        """The whole Keras model (with its softmax) as a .keras file."""
        layer, activation = self.softmax_layer or (None, None)
        if layer is not None:
            layer.activation = activation
        try:
            self.keras_model.save(str(path))
        finally:
            if layer is not None:
                import keras

                layer.activation = keras.activations.linear


class DenseAsLinear:
    """A Keras Dense layer (y = x @ kernel + bias) seen as a torch Linear (y = x @ weight.T + bias).

    `weight` is a transposed view of the kernel's own torch Parameter, so zeroing its columns zeroes
    kernel rows in place: the model saved afterwards as .keras holds exactly what was measured."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    @property
    def weight(self) -> torch.Tensor:
        return self.layer.kernel.value.T

    @property
    def bias(self) -> torch.Tensor | None:
        return self.layer.bias.value if self.layer.bias is not None else None

    def register_forward_pre_hook(self, hook: Any) -> Any:
        """Keras layers are torch modules on this backend and run through nn.Module.__call__, hooks and all."""
        return self.layer.register_forward_pre_hook(hook)


def keras_input_shape(model: Any) -> tuple[list[int] | None, bool]:
    """The model's own [C, H, W] (None where not fixed) and whether it takes channels-last input."""
    try:
        shape = tuple(model.inputs[0].shape)
    except (AttributeError, IndexError, TypeError, ValueError):
        shape = tuple(getattr(model, "input_shape", ()) or ())
    formats = [layer.data_format for layer in getattr(model, "layers", []) if hasattr(layer, "data_format")]
    channels_last = not formats or formats[0] != "channels_first"  # the first image layer's own layout
    if len(shape) != 4:
        return None, channels_last
    c, h, w = (shape[3], shape[1], shape[2]) if channels_last else (shape[1], shape[2], shape[3])
    fixed = all(isinstance(v, int) and v > 0 for v in (c, h, w))
    return ([int(c), int(h), int(w)] if fixed else None), channels_last


def _check_keras_file(path: Path) -> None:
    problem = regular_file_problem(path, "a Keras model file")
    if problem:
        raise ModelError(
            f"{path}: {'Keras model file not found' if problem == 'not found' else problem} ([model].path)"
        )
    if path.suffix.lower() not in KERAS_SUFFIXES:
        raise ModelError(f'{path}: expected a .keras file or a legacy .h5/.hdf5 ([model].format = "keras")')
    kind = file_kind(path)
    if kind == "torch":
        raise ModelError(
            f"{path}: is a PyTorch file (TorchScript or torch.save), not a Keras model; set "
            '[model].format to "torchscript", "state_dict" or "exported"'
        )
    wanted = "keras" if path.suffix.lower() == ".keras" else "hdf5"
    if kind != wanted:
        what = (
            "a .keras zip (config.json, metadata.json, model.weights.h5)"
            if wanted == "keras"
            else "an HDF5 file saved by Keras"
        )
        raise ModelError(f"{path}: not a Keras model file (expected {what})")


def _check_references(path: Path, keras: Any) -> None:
    """Refuse a model config naming anything but Keras' own classes and activations (see keras_config)."""
    try:
        config = model_config(path)
    except (OSError, KeyError, ValueError, RecursionError, zipfile.BadZipFile) as exc:
        problem = f"{type(exc).__name__}: {first_line(exc)}"
        raise ModelError(f"{path}: cannot read the Keras model's config ({problem})") from None
    found = unsafe_reference(config, keras)
    if found is not None:
        raise ModelError(
            f"{path}: the Keras model names {found}, which is not one of Keras' layers or activations; "
            "nc-tui loads only those and runs no other code from a Keras file"
        )


def load_keras(path: Path, outputs: str) -> tuple[nn.Module, dict[str, Any]]:
    """A .keras / .h5 model loaded with safe_mode=True on the CPU, wrapped for N x C x H x W input;
    returns it and the input shape the model records ([C, H, W]), for a config that left it out."""
    _check_keras_file(path)
    keras = import_keras(path)
    _check_references(path, keras)
    try:
        with keras.device("cpu"):
            model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "arbitrary code" in text:
            raise ModelError(
                f"{path}: the Keras model holds Python code (a Lambda layer or a custom function); "
                "nc-tui loads Keras files with safe_mode=True and runs no code from them"
            ) from None
        raise ModelError(f"{path}: cannot load the Keras model ({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(model, nn.Module) or len(getattr(model, "outputs", None) or [None]) != 1:
        raise ModelError(f"{path}: expected a Keras model with one image input and one output")
    own, channels_last = keras_input_shape(model)
    net = KerasNet(model, channels_last, logits=outputs != "probabilities")
    return net, ({"input_shape": own} if own else {})


def open_keras(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    """A Keras model (keras itself is imported only here, when one loads)."""
    return load_keras(cfg.resolve_path(cfg.model.path), cfg.model.outputs)
