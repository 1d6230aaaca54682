"""A loaded model as bytes for Ray workers, and back: sent once through the object store.

TorchScript modules cannot be pickled, so each one (anywhere in the model) travels as its own
torch.jit archive; the rest is pickled with Ray's cloudpickle, by value for an architecture loaded
from the user's file (the workers cannot import it). The bytes come from this scan's own driver,
which loaded the model under the config's trust settings.
"""

from __future__ import annotations

import io
import pickle
import sys
import warnings
from typing import Any

import torch
from ray import cloudpickle
from torch import nn

from nc_engine.errors import ComputeError, first_line

USER_MODULE_PREFIX = "nc_user_arch_"  # models.import_object's names for "file.py:Name" modules


def _script_from_bytes(data: bytes) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():  # torch deprecates TorchScript; users still ship it
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(io.BytesIO(data), map_location="cpu")


class _Pickler(cloudpickle.Pickler):
    def reducer_override(self, obj: object) -> Any:
        if isinstance(obj, torch.jit.ScriptModule):
            buffer = io.BytesIO()
            torch.jit.save(obj, buffer)
            return _script_from_bytes, (buffer.getvalue(),)
        return super().reducer_override(obj)


class _PickleModule:
    """What torch.save needs of a pickle module: a Pickler (tensors go through torch's own storage)."""

    Pickler = _Pickler
    Unpickler = pickle.Unpickler
    load = staticmethod(pickle.load)
    __name__ = "nc_engine.compute.ray_parcel"


def pack_model(model: nn.Module) -> bytes:
    """The model (on any device) as bytes; one line when it cannot travel."""
    for name, module in list(sys.modules.items()):
        if name.startswith(USER_MODULE_PREFIX):
            cloudpickle.register_pickle_by_value(module)
    buffer = io.BytesIO()
    try:
        torch.save(model, buffer, pickle_module=_PickleModule)
    except Exception as exc:
        raise ComputeError(
            f"this model cannot be sent to Ray workers ({type(exc).__name__}: "
            f"{first_line(exc)}); "
            'scan it with [compute].backend = "local"'
        ) from None
    return buffer.getvalue()


def unpack_model(data: bytes) -> nn.Module:
    """A packed model, on the CPU."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
