"""One model's steps in an audit, the same whether it is scanned here or in a Ray task: what an earlier
run left (skip it, or resume it), its error row, and the events that say it started and finished."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from nc_engine.audit.events import ModelFinished, ModelStarted
from nc_engine.audit.spec import AuditModel, AuditSpec
from nc_engine.audit.summary import ERROR, AuditRow
from nc_engine.config.settings import Config
from nc_engine.errors import NCError
from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.report import Report


def previous_runs(parent: Path) -> tuple[Report | None, RunFolder | None]:
    """What earlier runs of the audit left for a model: the report of a finished scan (newest first), or
    else the newest unfinished run folder that can be resumed."""
    runs = RunFolder.runs_in(parent)
    for folder in reversed(runs):
        if folder.has_report():
            try:
                report = Report.read(folder.path)
            except NCError:
                continue  # a damaged report: that folder is resumed or rescanned instead
            if report.complete:
                return report, None
    return None, next((f for f in reversed(runs) if f.is_resumable()), None)


def start_model(
    spec: AuditSpec, model: AuditModel, index: int, emit: ev.Listener
) -> tuple[AuditRow | None, tuple[Config | None, Path | None]]:
    """Say the model starts; returns its row when an earlier run finished it (said too), else what to
    scan: a new config writing into the model's folder, or the unfinished run folder to resume."""
    parent = spec.model_dir(model)
    if model.problem:  # this model alone cannot be scanned: its row says why
        emit(ModelStarted(index=index, total=len(spec.models), name=model.name, resume=""))
        row = AuditRow(model.name, model.source, ERROR, [], [model.problem])
        model_finished(emit, index, len(spec.models), row)
        return row, (None, None)
    done, unfinished = previous_runs(parent)
    emit(
        ModelStarted(
            index=index, total=len(spec.models), name=model.name, resume=str(unfinished.path) if unfinished else ""
        )
    )
    if done is not None:
        row = AuditRow.of_report(model.name, model.source, done)
        model_finished(emit, index, len(spec.models), row, skipped=True)
        return row, (None, None)
    if unfinished is not None:
        return None, (None, unfinished.path)
    output = dataclasses.replace(model.config.output, dir=str(parent))
    return None, (dataclasses.replace(model.config, output=output), None)


def error_row(spec: AuditSpec, model: AuditModel, message: str, seconds: float) -> AuditRow:
    runs = RunFolder.runs_in(spec.model_dir(model))
    return AuditRow(model.name, model.source, ERROR, [], [message], None, seconds, str(runs[-1].path) if runs else "")


def model_finished(emit: ev.Listener, index: int, total: int, row: AuditRow, skipped: bool = False) -> None:
    emit(
        ModelFinished(
            index=index,
            total=total,
            name=row.model,
            verdict=row.verdict,
            flagged=row.flagged,
            reasons=row.reasons,
            seconds=row.seconds,
            run_dir=row.run_folder,
            skipped=skipped,
            row=row,
        )
    )
