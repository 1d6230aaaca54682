"""What every model format checks first: the file is there and regular, and a Keras file given as another
format is named as such."""

from __future__ import annotations

from pathlib import Path

from nc_engine.errors import ModelError
from nc_engine.files import regular_file_problem


def check_model_file(path: Path, what: str) -> None:
    """An existing regular model file, or one ModelError line naming it."""
    problem = regular_file_problem(path, f"a {what}")
    if problem:
        raise ModelError(f"{path}: {f'{what} not found' if problem == 'not found' else problem} ([model].path)")


def keras_hint(path: Path) -> str:
    """The end of an error line for a Keras file given as another format (its bytes say so)."""
    from nc_engine.models.keras import file_kind  # reads bytes only; keras is not imported

    return '; it is a Keras model: set [model].format = "keras"' if file_kind(path) in ("keras", "hdf5") else ""
