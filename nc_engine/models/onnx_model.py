"""[model].format = "onnx": an ONNX graph converted to torch (onnx2torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nc_engine.config.settings import Config
from nc_engine.errors import ModelError, first_line
from nc_engine.models.checks import check_model_file
from nc_engine.models.exported import with_batch


def _load_onnx(path: Path) -> nn.Module:
    check_model_file(path, "ONNX model file")
    try:
        import onnx
        import onnx2torch
    except ImportError:
        raise ModelError(
            f'{path}: [model].format = "onnx" needs the onnx and onnx2torch packages: pip install "nc-tui[onnx]"'
        ) from None
    try:
        proto = onnx.load(str(path))
    except Exception as exc:
        raise ModelError(f"{path}: not an ONNX model ({type(exc).__name__}: {first_line(exc)})") from None
    if not proto.graph.node:
        raise ModelError(f"{path}: not an ONNX model (no graph nodes)")
    try:
        net = onnx2torch.convert(proto)
    except Exception as exc:
        raise ModelError(
            f"{path}: onnx2torch cannot convert this ONNX model ({type(exc).__name__}: {first_line(exc)})"
        ) from None
    initialisers = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initialisers]
    if len(inputs) != 1:
        raise ModelError(f"{path}: the ONNX model takes {len(inputs)} inputs; expected one image batch")
    dims = inputs[0].type.tensor_type.shape.dim
    return with_batch(net, dims[0].dim_value if len(dims) == 4 else None)


def open_onnx(cfg: Config) -> tuple[nn.Module, dict[str, Any]]:
    return _load_onnx(cfg.resolve_path(cfg.model.path)), {}
