"""Scan events as tests feed them to the front ends, with the fields a test does not look at filled in."""

from __future__ import annotations

from typing import Any

from nc_engine.run import events as ev
from nc_engine.run.trial import TrialRecord


def scan_started(**fields: Any) -> ev.ScanStarted:
    """A 10-label batched CPU scan at the default budget, unless `fields` say otherwise."""
    labels = fields.pop("labels", list(range(10)))
    base: dict[str, Any] = {
        "run_dir": "/tmp/run",
        "class_names": [str(k) for k in labels],
        "trials": 1,
        "device": "cpu",
        "strategy": "batched",
        "group_size": 10,
        "clean_accuracy": 0.99,
        "samples": 160,
        "asr_samples": 1000,
        "max_steps": 300,
    }
    return ev.ScanStarted(labels=labels, **{**base, **fields})


def step_progress(label: int, step: int, **fields: Any) -> ev.StepProgress:
    base: dict[str, Any] = {"trial": 0, "loss": 1.0, "ce": 0.1, "l1": 5.0, "attack_acc": 1.0, "cost": 1e-3}
    base.update(best_l1=5.0, images=160 * step)
    return ev.StepProgress(label=label, step=step, **{**base, **fields})


def record(label: int, **fields: Any) -> TrialRecord:
    """A converged full search of `label`, unless `fields` say otherwise."""
    base: dict[str, Any] = {"trial": 0, "seed": 1, "l1_norm": 16.0, "asr": 0.97, "steps": 50}
    base.update(converged=True, stop_reason="converged", seconds=1.0)
    return TrialRecord(label=label, **{**base, **fields})


def trial_finished(label: int, **fields: Any) -> ev.TrialFinished:
    return ev.TrialFinished(record=record(label, **fields))
