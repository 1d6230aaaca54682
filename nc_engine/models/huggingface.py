"""[model].format = "huggingface": a transformers image classifier saved to a folder, loaded offline."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nc_engine.config.settings import Config
from nc_engine.errors import ModelError, first_line
from nc_engine.files import JsonFileProblem, escapes_folder, read_json_object


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


def _check_contained(folder: Path) -> None:
    """Every file transformers would read stays inside the folder: its own files, and each shard a
    *.index.json names. A Hugging Face cache's snapshot links into its blobs, which is allowed."""
    allowed = folder.parent.parent if folder.parent.name == "snapshots" else None
    names = [p.name for p in folder.iterdir()]
    for index in folder.glob("*.index.json"):
        weight_map = _read_json(index).get("weight_map", {})
        shards = list(weight_map.values()) if isinstance(weight_map, dict) else None
        if shards is None or not all(isinstance(s, str) for s in shards):
            raise ModelError(f'{index}: expected "weight_map" to map tensor names to shard file names')
        names += shards
    for name in dict.fromkeys(names):
        problem = escapes_folder(folder, name, allowed)
        if problem is not None:
            raise ModelError(problem)


def _huggingface_network(folder: Path) -> tuple[nn.Module, dict[str, Any]]:
    """A save_pretrained folder, loaded offline (local files only, no remote code, safetensors when present)."""
    if not folder.is_dir():
        raise ModelError(
            f"{folder}: expected a folder written by save_pretrained (config.json and weights) ([model].path)"
        )
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder}: no config.json; expected a folder written by save_pretrained ([model].path)")
    _check_contained(folder)
    config = _read_json(folder / "config.json")
    if importlib.util.find_spec("transformers") is None:
        raise ModelError(
            f'{folder}: [model].format = "huggingface" needs the transformers package: pip install "nc-tui[hf]"'
        )
    try:
        with _hub_offline():
            from transformers import AutoModelForImageClassification

            net, info = AutoModelForImageClassification.from_pretrained(
                str(folder),
                local_files_only=True,
                trust_remote_code=False,
                output_loading_info=True,
                use_safetensors=True if any(folder.glob("*.safetensors")) else None,
            )
    except Exception as exc:
        raise ModelError(
            f"{folder}: cannot load a Hugging Face image classifier ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    missing = list(info.get("missing_keys") or [])
    if missing:  # transformers fills them with random values and only warns: the scan would be of noise
        raise ModelError(
            f"{folder}: the weights lack {len(missing)} of the classifier's tensors ("
            f"{', '.join(missing[:3])}); expected a folder saved from an image-classification model"
        )
    return HubLogits(net), _hub_preprocessing(folder, config)


def open_huggingface(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    return _huggingface_network(cfg.resolve_path(cfg.model.path))
