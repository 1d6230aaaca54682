"""Typed progress events of a scan, and the bus that hands each to every listener in turn.

Listeners are callables taking an event: the run folder's recorder, the console and the app all
subscribe to the same stream. `dispatch` calls a listener object's `on_<kind>` method, the one way
front ends pick the events they care about.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nc_engine.run.inflight import Key
from nc_engine.run.trial import TrialRecord


@dataclass(kw_only=True)
class Event:
    kind = "event"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind}
        for f in dataclasses.fields(self):
            if f.metadata.get("json", True):
                out[f.name] = getattr(self, f.name)
        return out


class _OfOneSearch:
    """Events about one (label, trial, stage) search."""

    label: int
    trial: int
    stage: str

    @property
    def key(self) -> Key:
        return self.label, self.trial, self.stage


@dataclass(kw_only=True)
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
    screening: bool = False  # screen, then confirm: a cheap pass over every label comes first
    continued_searches: int = 0  # searches a stopped run saved mid-way, continued where they stopped
    screen_steps: int = 0  # a screening pass's step limit
    label_share: list[float] = field(default_factory=list)  # each class's share of the scan data (report.py)


@dataclass(kw_only=True)
class ScanWarning(Event):
    kind = "warning"
    message: str


@dataclass(kw_only=True)
class StepProgress(Event, _OfOneSearch):
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
    stage: str = "trial"  # "screen" during a screening pass


@dataclass(kw_only=True)
class JobPlaced(Event, _OfOneSearch):
    """A (label, trial) search handed to a worker of a scan spread over several (nc_engine/compute/backend.py)."""

    kind = "job_placed"
    label: int
    trial: int
    stage: str
    worker: str  # which worker and device, e.g. "w1 cuda:0 (NVIDIA H100) @ node-3"


@dataclass(kw_only=True)
class TrialFinished(Event, _OfOneSearch):
    """One search finished: its record (as the run folder keeps it) and its kept trigger."""

    kind = "trial_finished"
    record: TrialRecord
    mask: np.ndarray | None = field(default=None, metadata={"json": False})  # (H, W) kept mask
    pattern: np.ndarray | None = field(default=None, metadata={"json": False})  # (C, H, W)

    @property
    def label(self) -> int:  # type: ignore[override]
        return self.record.label

    @property
    def trial(self) -> int:  # type: ignore[override]
        return self.record.trial

    @property
    def stage(self) -> str:  # type: ignore[override]
        return self.record.stage

    def to_dict(self) -> dict[str, Any]:
        return {"event": self.kind, **self.record.to_dict()}  # events.jsonl keeps the flat line it had


@dataclass(kw_only=True)
class ScreeningFinished(Event):
    """Every label screened; `confirm` will be searched again at the full budget. `why` says, per label,
    why it was (or was not) chosen."""

    kind = "screening_finished"
    candidates: list[int]
    references: list[int]
    why: dict[int, str]
    images: int
    # a second round: references added because the verdict hung on the scale shift (`references` holds all)
    second_round: list[int] = field(default_factory=list)


@dataclass(kw_only=True)
class DetectorFinished(Event):
    """A detector beyond Neural Cleanse has judged every label; `result` is its record (its to_dict)."""

    kind = "detector_finished"
    name: str
    flagged: list[int]
    summary: str  # one line for the log and the console
    details: list[str] = field(default_factory=list)  # the evidence, for the log
    result: dict[str, Any] = field(default_factory=dict)


@dataclass(kw_only=True)
class SearchesSaved(Event):
    """The searches running when the scan stopped (or, while it runs, every minute) were saved in the run
    folder at a step boundary: a resume continues them there. `searches`: [label, trial, step] each."""

    kind = "searches_saved"
    searches: list[list[int]]
    stage: str = "trial"
    stopping: bool = False  # False: a periodic save while the scan runs on


@dataclass(kw_only=True)
class LabelFinished(Event):
    kind = "label_finished"
    label: int
    name: str
    l1_norm: float
    asr: float | None  # None: the kept trigger's attack rate was NaN
    converged: bool
    steps: int
    seconds: float
    mask_png: str
    done: int  # labels finished so far
    total: int
    mask: np.ndarray | None = field(default=None, metadata={"json": False})  # the kept trial's trigger
    pattern: np.ndarray | None = field(default=None, metadata={"json": False})


@dataclass(kw_only=True)
class ScanFinished(Event):
    kind = "scan_finished"
    run_dir: str
    completed: bool  # False when stopped early: the run folder can be resumed
    verdict: str | None
    flagged: list[int]
    seconds: float
    images: int
    report: Any = field(default=None, metadata={"json": False})  # the final (or partial) report.Report


Listener = Callable[[Event], None]


def dispatch(handler: object, event: Event, prefix: str = "on_") -> None:
    """Call `handler.<prefix><kind>(event)` if the handler has such a method."""
    method = getattr(handler, f"{prefix}{event.kind}", None)
    if method is not None:
        method(event)


class EventBus:
    """Hands each event to every listener, in subscription order; remembers the events emitted before
    a listener joined so a late one (the run folder's recorder) can replay them."""

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self.listeners = list(listeners or [])
        self.history: list[Event] = []
        self.remember = True

    def subscribe(self, listener: Listener, replay: bool = False, first: bool = False) -> None:
        if replay:  # the one late listener has what it missed: nothing needs remembering after this
            for event in self.history:
                listener(event)
            self.history, self.remember = [], False
        self.listeners.insert(0, listener) if first else self.listeners.append(listener)

    def emit(self, event: Event) -> None:
        if self.remember and not isinstance(event, StepProgress):  # steps are many and only matter live
            self.history.append(event)
        for listener in self.listeners:
            listener(event)

    def warn(self, message: str) -> None:
        self.emit(ScanWarning(message=message))
