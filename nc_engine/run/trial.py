"""One finished (label, trial, stage) search, as the scan, the run folder and the report all hold it.

A search ends with a TrialOutcome (its arrays and numbers); the scan adds the held-out attack rate and
makes it a TrialRecord. The same frozen record is what the TrialFinished event carries, what a trial's
JSON file holds, what a resume reads back and what a report row lists.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from nc_engine.run.inflight import Key

STAGES = ("trial", "screen")  # a search at the full budget, or a screening pass
# the keys every trial JSON has held; "stage" came later, and a file without it is a full search
TRIAL_KEYS = ("label", "trial", "seed", "l1_norm", "asr", "steps", "converged", "stop_reason", "seconds")
# what each key holds; a NaN attack rate is written as null, while the kept trigger's L1 and the seconds
# are always numbers (a null there is a damaged file, and that trial runs again)
_INT, _NUMBER = (int,), (int, float)
TRIAL_TYPES: dict[str, tuple[type, ...]] = {
    "label": _INT,
    "trial": _INT,
    "seed": _INT,
    "l1_norm": _NUMBER,
    "asr": (int, float, type(None)),
    "steps": _INT,
    "converged": (bool,),
    "stop_reason": (str,),
    "seconds": _NUMBER,
    "stage": (str,),
}


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    label: int
    trial: int
    seed: int
    l1_norm: float  # sum of the kept mask
    asr: float | None  # held-out attack success rate of the kept trigger; None when it was NaN
    steps: int
    converged: bool  # some step reached the attack success threshold
    stop_reason: str  # early_stop | converged | max_steps | nan
    seconds: float
    stage: str = "trial"

    @property
    def key(self) -> Key:
        return self.label, self.trial, self.stage

    @property
    def screened(self) -> bool:
        return self.stage == "screen"

    def to_dict(self) -> dict[str, Any]:
        """A trial JSON's content, keys in the order they have always been written."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrialRecord:
        """The record of a trial JSON that `problem` passed."""
        return cls(**{k: data[k] for k in TRIAL_KEYS}, stage=data.get("stage", "trial"))


def problem(data: Any) -> str | None:
    """Why a trial JSON's content is not a trial record, or None (bools are not numbers)."""
    if not isinstance(data, dict) or any(k not in data for k in TRIAL_KEYS):
        return f"not a trial result (expected the keys {', '.join(TRIAL_KEYS)})"
    for key, kinds in TRIAL_TYPES.items():
        value = data.get(key, "")
        if key in data and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            return f"not a trial result ({key} = {str(value)[:40]!r} is of the wrong type)"
    if data.get("stage", "trial") not in STAGES:
        return f"not a trial result (stage {str(data['stage'])[:40]!r}, expected one of {', '.join(STAGES)})"
    return None


def full_searches(trials: list[TrialRecord]) -> list[TrialRecord]:
    return [t for t in trials if not t.screened]


def screened_searches(trials: list[TrialRecord]) -> list[TrialRecord]:
    return [t for t in trials if t.screened]
