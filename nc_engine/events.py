"""Typed progress events that run_scan sends to its caller and writes to events.jsonl."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Event:
    kind = "event"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            if f.metadata.get("json", True):
                out[f.name] = getattr(self, f.name)
        return out


@dataclass
class ScanStarted(Event):
    kind = "scan_started"
    run_dir: str
    labels: list[int]
    class_names: list[str]
    trials: int
    device: str
    strategy: str
    group_size: int
    clean_accuracy: float
    samples: int
    asr_samples: int
    max_steps: int
    resumed_trials: int = 0


@dataclass
class Warning(Event):  # noqa: A001 - the event's name in the stream
    kind = "warning"
    message: str


@dataclass
class StepProgress(Event):
    """One step (a pass over the optimisation samples) of one (label, trial) search."""

    kind = "step"
    label: int
    trial: int
    step: int
    loss: float
    ce: float
    l1: float
    attack_acc: float
    cost: float
    best_l1: float | None
    images: int  # stamped images processed so far by the whole scan
    mask: np.ndarray | None = field(default=None, metadata={"json": False})  # current (H, W) mask


@dataclass
class TrialFinished(Event):
    kind = "trial_finished"
    label: int
    trial: int
    seed: int
    l1_norm: float
    asr: float
    steps: int
    converged: bool
    stop_reason: str
    seconds: float


@dataclass
class LabelFinished(Event):
    kind = "label_finished"
    label: int
    name: str
    l1_norm: float
    asr: float
    converged: bool
    steps: int
    seconds: float
    mask_png: str
    done: int  # labels finished so far
    total: int


@dataclass
class ScanFinished(Event):
    kind = "scan_finished"
    run_dir: str
    completed: bool  # False when stopped early: the run folder can be resumed
    verdict: str | None
    flagged: list[int]
    seconds: float
    images: int
