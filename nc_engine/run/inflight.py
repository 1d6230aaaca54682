"""Searches still running when a scan stops: each slot's whole state (trigger parameters, Adam moments,
schedule counters, best so far) as float arrays plus JSON scalars, so a resume continues it exactly
where it stopped. Mini-batch orders need no saving: they depend only on (job seed, step).

A checkpoint read back from disk is hostile: `from_arrays` checks every array's shape, dtype and range
and every scalar's type before anything is used, and says in one line what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nc_engine.files import parse_json

VERSION = 1
MASK_ARRAYS = ("raw_mask", "m_mask", "v_mask", "best_mask")  # (H, W)
PATTERN_ARRAYS = ("raw_pattern", "m_pattern", "v_pattern", "best_pattern")  # (C, H, W)
SCHEDULE_INTS = ("set_counter", "up_counter", "down_counter", "early_stop_counter", "steps")
SCHEDULE_BOOLS = ("up_flag", "down_flag")
SCHEDULE_FLOATS = ("cost", "best_l1", "early_stop_best")  # the last two are inf until a step succeeds
JOB_INTS = ("label", "trial", "seed", "slot", "group", "samples", "batch_size", "max_steps")
MAX_META_BYTES = 1 << 16

Key = tuple[int, int, str]  # (label, trial, stage)


class CheckpointProblem(ValueError):
    """Why a saved running search cannot be continued (the search then starts again)."""


@dataclass
class SlotCheckpoint:
    """One running search at a step boundary."""

    label: int
    trial: int
    seed: int
    stage: str
    slot: int  # its row in the group when saved: a resume refills the rows in this order
    group: int  # the group size then
    samples: int  # the budget it ran under: optimisation samples, mini-batch, step limit
    batch_size: int
    max_steps: int
    adam_t: float  # Adam's step count (mini-batches so far)
    seconds: float  # search time before the stop
    schedule: dict[str, Any]  # the CostSchedule's fields but its rules and history
    best_history: np.ndarray  # float64 (steps,)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)  # float32, MASK_ARRAYS and PATTERN_ARRAYS

    @property
    def key(self) -> Key:
        return self.label, self.trial, self.stage

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What goes into the .npz: the arrays, and the scalars as UTF-8 JSON bytes (never a pickle)."""
        meta = {
            "version": VERSION,
            "stage": self.stage,
            "adam_t": self.adam_t,
            "seconds": self.seconds,
            **{k: getattr(self, k) for k in JOB_INTS},
            **{k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in self.schedule.items()},
        }
        text = json.dumps(meta).encode("utf-8")
        return {
            **{k: np.asarray(v, np.float32) for k, v in self.arrays.items()},
            "best_history": np.asarray(self.best_history, np.float64),
            "meta": np.frombuffer(text, dtype=np.uint8),
        }

    @classmethod
    def from_arrays(cls, data: Mapping[str, np.ndarray], input_shape: list[int]) -> SlotCheckpoint:
        """Rebuild and check a checkpoint read from disk; raises CheckpointProblem."""
        meta = _meta(data)
        c, h, w = input_shape
        arrays = {}
        for name in MASK_ARRAYS + PATTERN_ARRAYS:
            shape = (h, w) if name in MASK_ARRAYS else (c, h, w)
            arrays[name] = _float_array(data, name, shape, np.float32)
        for name in ("v_mask", "v_pattern"):
            if (arrays[name] < 0).any():
                raise CheckpointProblem(f"{name} has negative entries (Adam's second moment cannot)")
        for name in ("best_mask", "best_pattern"):
            if ((arrays[name] < 0) | (arrays[name] > 1)).any():
                raise CheckpointProblem(f"{name} is outside [0, 1]")
        steps = meta["steps"]
        history = _float_array(data, "best_history", (steps,), np.float64, finite=False)
        schedule = {k: meta[k] for k in SCHEDULE_INTS + SCHEDULE_BOOLS + SCHEDULE_FLOATS}
        if steps and (np.isnan(history).any() or history[-1] != schedule["best_l1"]):
            raise CheckpointProblem("best_history does not end at best_l1")
        return cls(
            meta["label"],
            meta["trial"],
            meta["seed"],
            meta["stage"],
            meta["slot"],
            meta["group"],
            meta["samples"],
            meta["batch_size"],
            meta["max_steps"],
            meta["adam_t"],
            meta["seconds"],
            schedule,
            history,
            arrays,
        )

    def misfit(self, seed: int, samples: int, batch_size: int, max_steps: int) -> str | None:
        """Why this checkpoint cannot continue a search with this seed and budget, or None."""
        if self.seed != seed:
            return f"saved for seed {self.seed}, the search now has seed {seed}"
        if (self.samples, self.batch_size, self.max_steps) != (samples, batch_size, max_steps):
            return (
                f"saved with {self.samples} samples, batch {self.batch_size}, {self.max_steps} steps; the "
                f"search now has {samples}, {batch_size}, {max_steps}"
            )
        batches = max(1, samples // batch_size)
        if self.schedule["steps"] >= max_steps or self.adam_t != self.schedule["steps"] * batches:
            return (
                f"step {self.schedule['steps']} and Adam step {self.adam_t:g} do not fit {batches} mini-batches a step"
            )
        return None


@dataclass
class Carry:
    """How a search hands its running slots over a stop, and takes them back on resume."""

    restored: dict[Key, SlotCheckpoint]  # what a previous run saved, by (label, trial, stage)
    save: Callable[[list[SlotCheckpoint], bool], None]  # writes the running slots; True: the scan is stopping
    warn: Callable[[str], None]  # a checkpoint that does not fit its search: said once, search restarted
    every: float = 0.0  # seconds between saves while running (0: only when stopped)
    where: Callable[[Key], str] = str  # names a checkpoint's file in warnings


def _meta(data: Mapping[str, np.ndarray]) -> dict[str, Any]:
    if "meta" not in data:
        raise CheckpointProblem("no meta record")
    raw = np.asarray(data["meta"])
    if raw.dtype != np.uint8 or raw.ndim != 1 or raw.size > MAX_META_BYTES:
        raise CheckpointProblem("meta is not a UTF-8 JSON record")
    try:
        meta = parse_json(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointProblem(f"meta is not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("version") != VERSION:
        raise CheckpointProblem(f"meta is not a version-{VERSION} record")
    for k in JOB_INTS + SCHEDULE_INTS:
        if type(meta.get(k)) is not int or meta[k] < 0:
            raise CheckpointProblem(f"meta {k!r} is not a whole number >= 0")
    for k in SCHEDULE_BOOLS:
        if type(meta.get(k)) is not bool:
            raise CheckpointProblem(f"meta {k!r} is not true/false")
    for k in SCHEDULE_FLOATS + ("adam_t", "seconds"):
        v: Any = meta.get(k)
        if v is None and k in ("best_l1", "early_stop_best"):
            meta[k] = math.inf
        elif type(v) not in (int, float) or not math.isfinite(v) or v < 0:
            raise CheckpointProblem(f"meta {k!r} is not a finite number >= 0")
        else:
            meta[k] = float(v)
    if meta.get("stage") not in ("trial", "screen"):
        raise CheckpointProblem("meta 'stage' is not 'trial' or 'screen'")
    return meta


def _float_array(
    data: Mapping[str, np.ndarray], name: str, shape: tuple[int, ...], dtype: type, finite: bool = True
) -> np.ndarray:
    if name not in data:
        raise CheckpointProblem(f"no array {name!r}")
    a = np.asarray(data[name])
    if a.shape != shape or a.dtype != dtype:
        raise CheckpointProblem(f"{name} is {a.dtype} {a.shape}, expected {np.dtype(dtype)} {shape}")
    if finite and not np.isfinite(a).all():
        raise CheckpointProblem(f"{name} holds NaN or infinite values")
    return a
