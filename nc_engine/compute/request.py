"""What a compute backend is asked to search: one request, the same for every backend."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from nc_engine.detectors.neural_cleanse.schedule import SearchSettings
from nc_engine.detectors.neural_cleanse.search import Job, StepStats, TrialOutcome
from nc_engine.run.inflight import Carry


@dataclass(frozen=True)
class SearchRequest:
    """The model and its optimisation samples, the (label, trial) jobs with their settings and group size,
    and the scan's stop flag, listeners (on_step, on_done) and saved running searches (`carry`)."""

    model: nn.Module
    x_opt: torch.Tensor
    jobs: list[Job]
    settings: SearchSettings
    group_size: int
    stop: threading.Event
    on_step: Callable[[StepStats, int], None]
    on_done: Callable[[TrialOutcome], None]
    carry: Carry | None = None
