"""Typed events of an audit, in the style of nc_engine.run.events: the console and the app draw from them.

Between a model's ModelStarted and ModelFinished, the listener also receives that model's own scan
events (ScanStarted, StepProgress, ...), so a front end can show the running scan's progress.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from nc_engine.run.events import Event


@dataclass(kw_only=True)
class AuditStarted(Event):
    kind = "audit_started"
    spec: str
    out: str
    models: list[str]
    sources: list[str]  # each model's config file (or model file, for a `models` spec)
    backend: str = "local"


@dataclass(kw_only=True)
class ModelStarted(Event):
    kind = "model_started"
    index: int  # 0-based position in the spec
    total: int
    name: str
    resume: str = ""  # the unfinished run folder this scan continues, if any


@dataclass(kw_only=True)
class ModelFinished(Event):
    """A model's scan ended: finished (verdict), stopped (verdict "unfinished"), failed ("error"), or
    found finished by an earlier run of the audit (`skipped`)."""

    kind = "model_finished"
    index: int
    total: int
    name: str
    verdict: str
    flagged: list[int]
    reasons: list[str]
    seconds: float
    run_dir: str
    skipped: bool = False
    row: Any = field(default=None, metadata={"json": False})  # the audit_summary.AuditRow


@dataclass(kw_only=True)
class AuditFinished(Event):
    kind = "audit_finished"
    complete: bool  # every model has a verdict or an error; False when stopped
    summary_csv: str
    summary_json: str
    rows: Any = field(default=None, metadata={"json": False})  # list of audit_summary.AuditRow
