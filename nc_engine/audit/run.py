"""run_audit: scan every model of a spec into its own run folder, one summary for them all.

Each model's scans live in OUT/<model name>/ (a run folder made by run_scan inside it). A rerun of the
audit skips a model whose run folder holds a complete report and resumes an unfinished one, so a stopped
or killed audit continues where it was. A model whose scan fails on the user's input (a bad file) is
recorded as an error with its one line, and the audit goes on. The summary (audit.csv, audit.json) is
rewritten after each model and at the end, also when stopped, with audit.html: one page for the zoo that
links every model's report.html.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from nc_engine.audit.events import AuditFinished, AuditStarted
from nc_engine.audit.model_steps import error_row, model_finished, start_model
from nc_engine.audit.page import write_audit_page
from nc_engine.audit.spec import AuditModel, AuditSpec
from nc_engine.audit.summary import AuditRow, summary_paths, write_summary
from nc_engine.errors import NCError
from nc_engine.run import events as ev
from nc_engine.run.scan import run_scan
from nc_engine.verdict.report import Report

__all__ = ["AuditResult", "run_audit"]


@dataclass
class AuditResult:
    rows: list[AuditRow]
    complete: bool  # every model has a verdict or an error
    summary_csv: str
    summary_json: str


def run_audit(spec: AuditSpec, on_event: ev.Listener | None = None, stop: threading.Event | None = None) -> AuditResult:
    """Scan the spec's models (skipping finished ones); returns the summary rows, also written to disk.
    Setting `stop` stops the running scan at its next mini-batch, resumable, and starts no other."""
    emit = on_event or (lambda event: None)
    stop = stop or threading.Event()
    rows = [AuditRow(m.name, m.source) for m in spec.models]
    emit(
        AuditStarted(
            spec=str(spec.path),
            out=str(spec.out),
            models=[m.name for m in spec.models],
            sources=[m.source for m in spec.models],
            backend=spec.compute.backend,
        )
    )
    csv_path, json_path = summary_paths(spec.out)
    if spec.compute.backend == "ray":
        from nc_engine.audit.on_ray import require_ray, run_on_ray

        require_ray()  # one line, before anything is written, when the optional extra is missing
    complete = False
    try:
        if spec.compute.backend == "ray":
            run_on_ray(spec, rows, emit, stop, lambda: _save(spec, rows, False))
        else:
            for i, model in enumerate(spec.models):
                if stop.is_set():
                    break
                rows[i] = audit_model(spec, model, i, emit, stop)
                _save(spec, rows, False)
        complete = not stop.is_set() and all(r.verdict not in ("unfinished", "not run") for r in rows)
    finally:
        _save(spec, rows, complete)
    emit(AuditFinished(complete=complete, summary_csv=str(csv_path), summary_json=str(json_path), rows=rows))
    return AuditResult(rows, complete, str(csv_path), str(json_path))


def _save(spec: AuditSpec, rows: list[AuditRow], complete: bool) -> None:
    """audit.csv, audit.json and audit.html, after each model and at the end."""
    write_summary(spec.out, spec.path, rows, complete)
    write_audit_page(spec.out, spec.path, rows, complete)


def audit_model(
    spec: AuditSpec,
    model: AuditModel,
    index: int,
    emit: ev.Listener,
    stop: threading.Event,
    scan: Callable[..., Report] | None = None,
) -> AuditRow:
    """One model: skipped when finished before, resumed when unfinished, else scanned afresh; its
    events go to `emit` between ModelStarted and ModelFinished."""
    total = len(spec.models)
    done, scan_args = start_model(spec, model, index, emit)
    if done is not None:
        return done
    started = time.perf_counter()
    try:
        config, resume = scan_args
        # the audit resumes only folders it made from the user's spec: the spec's trust_pickle stands
        trusted = model.config.model.trust_pickle
        report = (scan or run_scan)(config, emit, stop, resume=resume, trust_pickle=trusted)
        row = AuditRow.of_report(model.name, model.source, report)
    except NCError as exc:
        row = error_row(spec, model, str(exc), time.perf_counter() - started)
    except Exception as exc:  # an engine bug on one model must not lose the rest of the audit
        row = error_row(spec, model, f"internal error: {type(exc).__name__}: {exc}", time.perf_counter() - started)
    model_finished(emit, index, total, row)
    return row
