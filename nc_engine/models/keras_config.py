"""What a Keras file's model config may name, checked before Keras reads it. safe_mode refuses Lambda
layers, but Keras still imports any `keras.*` module a config names and calls what it finds there: an
activation set to `keras.datasets.mnist.load_data` ran at the first forward pass. Only Keras' own layer,
initializer, regularizer, constraint and model classes, and its activation functions, pass."""

from __future__ import annotations

import importlib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nc_engine.files import parse_json

# the modules a saved model's config names for its parts (Keras 3 writes these; legacy .h5 writes none)
CLASS_MODULES = (
    "keras",
    "keras.layers",
    "keras.initializers",
    "keras.regularizers",
    "keras.constraints",
    "keras.src.models.functional",
    "keras.src.models.sequential",
)
ACTIVATION_MODULES = ("keras.activations", "keras.src.activations.activations")


def _nodes(config: Any) -> Iterator[tuple[str, Any, dict | None]]:
    """Every (key, value, the dict holding it) of a JSON tree, iteratively: a hostile file may nest deeply."""
    stack: list[tuple[str, Any, dict | None]] = [("", config, None)]
    while stack:
        key, value, parent = stack.pop()
        yield key, value, parent
        if isinstance(value, dict):
            stack.extend((str(k), v, value) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((key, v, parent) for v in value)


def _activation_names(keras: Any) -> set[str]:
    return {n for n in dir(keras.activations) if not n.startswith("_") and callable(getattr(keras.activations, n))}


def _is_class_in(module: str, name: Any) -> bool:
    if module not in CLASS_MODULES or not isinstance(name, str) or name.startswith("_"):
        return False
    return isinstance(getattr(importlib.import_module(module), name, None), type)  # Keras' own modules only


def unsafe_reference(config: Any, keras: Any) -> str | None:
    """The first thing in a model config that is not one of Keras' own classes or activations, as text
    (module.name); None when everything is."""
    activations = _activation_names(keras)
    if isinstance(config, dict):  # loaded with compile=False, Keras drops the model's own compile_config
        config = {k: v for k, v in config.items() if k != "compile_config"}
    for key, value, _ in _nodes(config):
        if key == "activation" and isinstance(value, str) and value not in activations:
            return f"activation {value!r}"
        if not isinstance(value, dict) or "class_name" not in value or "module" not in value:
            continue
        module, name = value["module"], value["class_name"]
        if name == "function" or value.get("registered_name") == "function":
            function = value.get("config")
            if module not in ACTIVATION_MODULES or function not in activations:
                return f"function {module}.{function}"
        elif not (isinstance(module, str) and _is_class_in(module, name)):
            return f"{module}.{name}"
    return None


def model_config(path: Path) -> Any:
    """The model config a .keras zip (config.json) or a legacy .h5 (its model_config attribute) holds;
    None when there is none to read. Raises ValueError for a file Keras would not read either."""
    if path.suffix.lower() == ".keras":
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if len(names) != len(set(names)):  # the check and Keras must read the same config.json
                raise ValueError("the zip holds two members of one name")
            text = zf.read("config.json")
    else:
        import h5py  # type: ignore[import-untyped]  # installed with keras, no stubs

        with h5py.File(path, "r") as f:
            text = f.attrs.get("model_config")
        if text is None:
            return None
    return parse_json(text)
