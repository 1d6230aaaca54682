"""A label's row in the report: the kept trial's numbers, the outlier test's verdict on it, and all its
trials; and what the scan was (ScanInfo)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, cast

from nc_engine.run.runfolder import trigger_paths
from nc_engine.run.trial import TrialRecord, problem


@dataclass(kw_only=True)
class LabelRow:
    """One label: the kept trial's numbers, the outlier test's verdict on it, and all its trials."""

    label: int
    name: str
    l1_norm: float
    asr: float | None
    anomaly_index: float | None
    flagged: bool
    converged: bool
    kept_trial: int
    steps: int
    seconds: float
    trials: list[TrialRecord]
    mask_png: str
    pattern_png: str
    fusion_png: str
    trigger_npz: str
    stage: str = "full"  # screened scans: "confirmed" (searched at the full budget) or "screened" (not)
    screen_l1: float | None = None  # screened scans: the screening pass's L1 norm
    # what the outlier test divided l1_norm by to take out the class-frequency line (1: nothing)
    frequency_factor: float = 1.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelRow:
        """A row of report.json; a trial entry that is not a trial record raises TypeError. Reports written
        before the rows held whole records listed seven keys per trial: the row gives the label."""
        if not isinstance(data, dict):
            raise TypeError(f"a label row is {type(data).__name__}, expected a table")
        trials = data.get("trials")
        if not isinstance(trials, list):
            return cls(**data)  # the field check names it
        # such reports kept no per-trial seconds: 0 counts nothing (the row's own seconds are kept)
        entries = [{"label": data.get("label"), "seconds": 0.0, **t} if isinstance(t, dict) else t for t in trials]
        for n, entry in enumerate(entries):
            wrong = problem(entry)
            if wrong is not None:
                raise TypeError(f"trials[{n}]: {wrong}")
        return cls(**{**data, "trials": [TrialRecord.from_dict(e) for e in entries]})


@dataclass(kw_only=True)
class ScanInfo:
    """What the scan was: recorded in the report beside the results."""

    clean_accuracy: float = math.nan
    device: str = ""
    strategy: str = ""
    group_size: int = 0
    preset: str = ""
    samples: int = 0
    asr_samples: int = 0
    model: str = ""
    data: str = ""
    class_names: list[str] = field(default_factory=list)
    trials_per_label: int = 1
    seconds: float = 0.0
    images: int = 0  # stamped images processed
    outputs: str = ""  # what the model's outputs were taken to be: logits or probabilities
    label_share: list[float] = field(default_factory=list)  # each class's share of the scanned data's labels


def _asr_key(trial: TrialRecord) -> tuple[float, float]:
    asr = trial.asr
    asr = -1.0 if asr is None or (isinstance(asr, float) and math.isnan(asr)) else asr
    return (asr, -trial.l1_norm)  # highest ASR; ties: smaller L1


def kept_trial(trials: list[TrialRecord]) -> TrialRecord:
    """The trial a label keeps: the highest held-out ASR, ties broken by the smaller trigger."""
    return max(sorted(trials, key=lambda t: t.trial), key=_asr_key)


def label_rows(trials: list[TrialRecord], class_names: list[str]) -> list[LabelRow]:
    """One row per label from its trials: the kept trial's numbers plus the list of all trials."""
    by_label: dict[int, list[TrialRecord]] = {}
    for t in trials:
        by_label.setdefault(t.label, []).append(t)
    rows = []
    for label in sorted(by_label):
        ts = sorted(by_label[label], key=lambda t: t.trial)
        kept = kept_trial(ts)
        rows.append(
            LabelRow(
                label=label,
                name=class_names[label] if label < len(class_names) else str(label),
                l1_norm=kept.l1_norm,
                asr=kept.asr,
                anomaly_index=None,
                flagged=False,
                converged=kept.converged,
                kept_trial=kept.trial,
                steps=sum(t.steps for t in ts),
                seconds=sum(t.seconds for t in ts),
                trials=ts,
                **cast(dict[str, Any], trigger_paths(label)),
            )
        )  # the four *_png/*_npz path fields
    return rows
