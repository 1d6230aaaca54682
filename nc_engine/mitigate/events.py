"""Progress events of a mitigation; the scan's Warning event is reused for warnings."""

from __future__ import annotations

from dataclasses import dataclass

from nc_engine.run.events import Event
from nc_engine.run.events import ScanWarning as ScanWarning  # re-exported for callers of this module


@dataclass(kw_only=True)
class MitigationStarted(Event):
    kind = "mitigation_started"
    run_dir: str
    method: str
    labels: list[int]
    device: str
    train_images: int
    eval_images: int


@dataclass(kw_only=True)
class Stage(Event):
    """A step worth a line: what is being done now, and a number or two."""

    kind = "stage"
    message: str


@dataclass(kw_only=True)
class TrainProgress(Event):
    kind = "train_progress"
    epoch: int
    batch: int
    batches: int
    loss: float


@dataclass(kw_only=True)
class PruneStep(Event):
    kind = "prune_step"
    units: int
    fraction: float
    accuracy: float
    asr: dict[int, float]


@dataclass(kw_only=True)
class MitigationFinished(Event):
    kind = "mitigation_finished"
    method: str
    report_path: str
    seconds: float
