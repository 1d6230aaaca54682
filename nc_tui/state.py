"""What the scan screen shows, kept up to date from the engine's thread under a lock."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from nc_engine.run import events as ev
from nc_engine.run.progress import ScanProgress

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
    through `nc_engine.run.events.dispatch`), the UI reads snapshots."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock  # of the ETA's rate
        self.lock = threading.Lock()
        self.labels: dict[int, LabelProgress] = {}
        self.total_jobs = 0
        self.trials = 1
        self.done_jobs = 0
        self.images = 0
        self.progress = ScanProgress(0, 1)

    def on_scan_started(self, e: ev.ScanStarted) -> None:
        with self.lock:
            self.labels = {
                label: LabelProgress(label, e.class_names[label] if label < len(e.class_names) else str(label))
                for label in e.labels
            }
            # a screened scan's confirmations are counted once the screening has chosen them
            self.total_jobs = len(e.labels) * (1 if e.screening else e.trials) - e.resumed_trials
            self.trials = e.trials
            self.done_jobs = 0
            self.progress = ScanProgress(self.total_jobs, e.max_steps, e.screen_steps, self.clock)

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
            self.progress.step(e.key, e.step)

    def on_job_placed(self, e: ev.JobPlaced) -> None:
        with self.lock:
            row = self.labels.get(e.label)
            if row is not None:
                row.worker = e.worker

    def on_trial_finished(self, e: ev.TrialFinished) -> None:
        with self.lock:
            self.done_jobs += 1
            self.progress.finish(e.key, e.record.steps)
            if e.stage == "screen":
                row = self.labels.get(e.label)
                if row is not None:
                    row.state = "screened"

    def on_screening_finished(self, e: ev.ScreeningFinished) -> None:
        with self.lock:
            confirm = set(e.second_round or set(e.candidates) | set(e.references))
            # a second round adds its references to the confirmations counted at the first
            self.total_jobs = (self.total_jobs if e.second_round else self.done_jobs) + len(confirm) * self.trials
            self.progress.set_jobs(self.total_jobs)
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
        """The scan was stopped: searches that were running are saved, and continue on resume."""
        with self.lock:
            for row in self.labels.values():
                if row.state in ("running", "screening"):
                    row.state = "stopped"

    def fraction(self) -> float:
        """Steps done against the steps the scan is expected to take (nc_engine.run.progress)."""
        with self.lock:
            return self.progress.fraction()

    def eta_seconds(self) -> float | None:
        with self.lock:
            return self.progress.eta_seconds()
