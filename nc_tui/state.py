"""What the scan screen shows, kept up to date from the engine's thread under a lock."""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from nc_engine import events as ev

HISTORY = 400  # steps of loss / L1 kept per label for the charts


@dataclass
class LabelProgress:
    label: int
    name: str
    state: str = "waiting"  # waiting | screening | screened | confirming | running | done | not converged | stopped
    trial: int = 0
    step: int = 0
    cost: float = 0.0
    l1: float = math.nan
    best_l1: float | None = None
    attack_acc: float = math.nan
    asr: float | None = None
    loss_history: list[float] = field(default_factory=list)
    l1_history: list[float] = field(default_factory=list)
    mask: np.ndarray | None = None
    worker: str = ""  # where its search runs, in a scan spread over Ray workers


class ScanState:
    """Thread-safe store of per-label progress; the worker writes (a listener of the engine's events,
    through `nc_engine.events.dispatch`), the UI reads snapshots."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.labels: dict[int, LabelProgress] = {}
        self.total_jobs = 0
        self.trials = 1
        self.done_jobs = 0
        self.max_steps = 1
        self.finished_steps: list[int] = []
        self.started = time.perf_counter()
        self.images = 0

    def on_scan_started(self, e: ev.ScanStarted) -> None:
        with self.lock:
            self.labels = {label: LabelProgress(label, e.class_names[label] if label < len(e.class_names)
                                                else str(label)) for label in e.labels}
            # a screened scan's confirmations are counted once the screening has chosen them
            self.total_jobs = len(e.labels) * (1 if e.screening else e.trials) - e.resumed_trials
            self.trials = e.trials
            self.done_jobs = 0
            self.max_steps = e.max_steps
            self.finished_steps = []
            self.started = time.perf_counter()

    def on_step(self, e: ev.StepProgress) -> None:
        with self.lock:
            row = self.labels.get(e.label)
            if row is None:
                return
            if row.trial != e.trial or row.state == "waiting":
                row.loss_history.clear()
                row.l1_history.clear()
            row.state, row.trial, row.step = "screening" if e.stage == "screen" else "running", e.trial, e.step
            row.cost, row.l1, row.best_l1, row.attack_acc = e.cost, e.l1, e.best_l1, e.attack_acc
            row.loss_history.append(e.loss)
            row.l1_history.append(e.l1)
            del row.loss_history[:-HISTORY], row.l1_history[:-HISTORY]
            row.mask = e.mask
            self.images = e.images

    def on_job_placed(self, e: ev.JobPlaced) -> None:
        with self.lock:
            row = self.labels.get(e.label)
            if row is not None:
                row.worker = e.worker

    def on_trial_finished(self, e: ev.TrialFinished) -> None:
        with self.lock:
            self.done_jobs += 1
            if e.stage == "screen":
                row = self.labels.get(e.label)
                if row is not None:
                    row.state = "screened"
            else:
                self.finished_steps.append(e.steps)

    def on_screening_finished(self, e: ev.ScreeningFinished) -> None:
        with self.lock:
            confirm = set(e.candidates) | set(e.references)
            self.total_jobs = self.done_jobs + len(confirm) * self.trials
            for label in confirm:
                if label in self.labels:
                    self.labels[label].state = "confirming"

    def on_label_finished(self, e: ev.LabelFinished) -> None:
        with self.lock:
            row = self.labels.get(e.label)
            if row is not None:
                row.state = "done" if e.converged else "not converged"
                row.best_l1, row.asr, row.step = e.l1_norm, e.asr, e.steps

    def stopped(self) -> None:
        """The scan was stopped: searches that were running start again on resume."""
        with self.lock:
            for row in self.labels.values():
                if row.state in ("running", "screening"):
                    row.state = "stopped"

    def fraction(self) -> float:
        """Finished searches plus the running ones' share of a typical search."""
        with self.lock:
            typical = (sum(self.finished_steps) / len(self.finished_steps)) if self.finished_steps else 60.0
            typical = max(1.0, min(typical, self.max_steps))
            partial = sum(min(r.step / typical, 0.95) for r in self.labels.values()
                          if r.state in ("running", "screening"))
            return min(1.0, (self.done_jobs + partial) / max(1, self.total_jobs))

    def eta_seconds(self) -> float | None:
        frac = self.fraction()
        if frac <= 0.02:
            return None
        return (time.perf_counter() - self.started) * (1 - frac) / frac
