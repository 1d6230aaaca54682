"""The audit's parallel mode: each model's whole scan runs as one Ray task (`[compute] backend = "ray"`),
as many at once as the cluster's CPUs and GPUs allow (`cpus`, `gpus` per model). The driver alone
decides what to skip or resume and writes the summary; each task writes its own model's run folder.
Stopping cancels the tasks: a running scan is interrupted and its run folder stays resumable.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nc_engine.audit.model_steps import error_row, model_finished, start_model
from nc_engine.audit.spec import AuditSpec
from nc_engine.audit.summary import UNFINISHED, AuditRow
from nc_engine.config.settings import ComputeConfig, Config
from nc_engine.errors import ConfigError, NCError
from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.report import Report

POLL_SECONDS = 0.5


def require_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError('[compute] backend = "ray" needs Ray: pip install "nc-tui[ray]"') from None
    return ray


def scan_task(config: Config | None, resume: str | None, trust_pickle: bool = False) -> dict[str, Any]:
    """In a Ray worker: one model's scan; the report as a dict, or the user error's one line."""
    from nc_engine.run.scan import run_scan

    try:
        report = run_scan(config, None, None, resume=resume, trust_pickle=trust_pickle)
    except NCError as exc:
        return {"error": str(exc)}
    return {"report": report.to_dict(), "run_dir": report.run_dir}


def run_on_ray(
    spec: AuditSpec, rows: list[AuditRow], emit: ev.Listener, stop: threading.Event, save: Callable[[], None]
) -> None:
    """Submit every model that still needs a scan, then collect them as they finish (rows filled in place)."""
    ray = require_ray()
    # a Ray scan's start and end: quiet, the console keeps its SIGTERM handler, nothing of Ray outlives it
    from nc_engine.compute.ray_backend import init_ray, shutdown_ray

    started_here = init_ray(ComputeConfig(backend="ray", address=spec.compute.address))
    task = ray.remote(scan_task).options(num_cpus=spec.compute.cpus, num_gpus=spec.compute.gpus, max_retries=1)
    pending: dict[Any, tuple[int, float]] = {}
    try:
        for i, model in enumerate(spec.models):
            done, (config, resume) = start_model(spec, model, i, emit)
            if done is not None:
                rows[i] = done
            else:
                ref = task.remote(config, str(resume) if resume else None, model.config.model.trust_pickle)
                pending[ref] = (i, time.perf_counter())
        _collect(ray, spec, rows, emit, stop, save, pending)
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started_here:
            shutdown_ray()


def _collect(
    ray: Any,
    spec: AuditSpec,
    rows: list[AuditRow],
    emit: ev.Listener,
    stop: threading.Event,
    save: Callable[[], None],
    pending: dict[Any, tuple[int, float]],
) -> None:
    cancelled = False
    while pending:
        if stop.is_set() and not cancelled:
            for ref in pending:
                ray.cancel(ref)  # a running scan gets KeyboardInterrupt: it leaves a resumable run folder
            cancelled = True
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
        for ref in ready:
            index, started = pending.pop(ref)
            rows[index] = _row(ray, spec, index, ref, time.perf_counter() - started)
            model_finished(emit, index, len(spec.models), rows[index])
            save()


def _row(ray: Any, spec: AuditSpec, index: int, ref: Any, seconds: float) -> AuditRow:
    model = spec.models[index]
    try:
        result = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
        return _stopped_row(spec, index)
    except ray.exceptions.RayError as exc:  # a worker that died twice, or an engine bug in the task
        cause = getattr(exc, "cause", None) or exc
        if isinstance(cause, KeyboardInterrupt):
            return _stopped_row(spec, index)
        return error_row(spec, model, f"internal error: {type(cause).__name__}: {cause}", seconds)
    if "error" in result:
        return error_row(spec, model, result["error"], seconds)
    report = Report.from_dict(result["report"], result["run_dir"])
    report.run_dir = result["run_dir"]
    return AuditRow.of_report(model.name, model.source, report)


def _stopped_row(spec: AuditSpec, index: int) -> AuditRow:
    """A cancelled task's model: its run folder's partial report, if the scan had begun one."""
    model = spec.models[index]
    runs = RunFolder.runs_in(spec.model_dir(model))
    if runs:
        try:
            return AuditRow.of_report(model.name, model.source, Report.read(Path(runs[-1].path)))
        except NCError:
            pass
    return AuditRow(model.name, model.source, UNFINISHED)
