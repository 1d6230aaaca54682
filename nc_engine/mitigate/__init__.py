"""Mitigation of a backdoor a scan found: unlearning, neuron pruning, or an input filter.

    run_mitigation(RUN_DIR, "unlearn" | "prune" | "filter", MitigationOptions(), on_event)

writes RUN_DIR/mitigation/<method>/ (<method>-2/ ... for later runs: never overwritten) with report.json,
events.jsonl, and the repaired model with a config.toml that scans it (unless the repair was rejected for
losing too much clean accuracy), or detector.json for the filter; returns the report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nc_engine.errors import MitigationError
from nc_engine.mitigate import events
from nc_engine.mitigate.common import (
    Context,
    EventHandler,
    MitigationOptions,
    check_options,
    evaluate,
    load_context,
    load_options,
)
from nc_engine.mitigate.filter import build_filter, filter_images, load_detector
from nc_engine.mitigate.prune import prune
from nc_engine.mitigate.unlearn import stamp_batch, unlearn
from nc_engine.run import events as ev
from nc_engine.run.runfolder import RunFolder
from nc_engine.verdict.formatting import mitigation_lines

METHODS = ("unlearn", "prune", "filter")

__all__ = [
    "METHODS",
    "MitigationOptions",
    "events",
    "filter_images",
    "load_detector",
    "load_options",
    "run_mitigation",
    "stamp_batch",
    "table_lines",
]


def _rescan(config_path: str, emit: EventHandler) -> dict[str, Any]:
    from nc_engine.config.settings import load_config
    from nc_engine.run.scan import run_scan

    class Forward:  # the re-scan's warnings and finished labels, as mitigation stages
        def on_warning(self, e: ev.ScanWarning) -> None:
            emit(e)

        def on_label_finished(self, e: ev.LabelFinished) -> None:
            emit(events.Stage(message=f"re-scan: label {e.label} L1 {e.l1_norm:.2f} ({e.done}/{e.total})"))

    emit(events.Stage(message=f"re-scanning the repaired model ({config_path})"))
    forward = Forward()
    report = run_scan(load_config(config_path), lambda e: ev.dispatch(forward, e))
    return {
        "run_dir": report.run_dir,
        "verdict": report.verdict,
        "flagged": report.flagged,
        "labels": [
            {"label": r.label, "l1_norm": r.l1_norm, "anomaly_index": r.anomaly_index, "flagged": r.flagged}
            for r in report.labels
        ],
    }


def _check_request(method: str, options: MitigationOptions) -> None:
    if method not in METHODS:
        raise MitigationError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    check_options(options)
    if options.rescan and method == "filter":
        raise MitigationError("--rescan re-scans a repaired model; the filter leaves the model as it is")


def run_mitigation(
    run_dir: str | Path, method: str, options: MitigationOptions | None = None, on_event: EventHandler | None = None
) -> dict[str, Any]:
    """Repair the model of a finished scan (or build an input filter for it); returns the report."""
    started = time.perf_counter()
    options = options or MitigationOptions()
    _check_request(method, options)
    handlers: list[EventHandler] = [on_event] if on_event else []

    def emit(event: ev.Event) -> None:
        for handle in handlers:
            handle(event)

    ctx: Context = load_context(run_dir, options, lambda m: emit(ev.ScanWarning(message=m)))
    out = ctx.folder.mitigation_dir(method)
    log = RunFolder.mitigation_events(out)
    handlers.append(lambda e: log.write(e.to_dict()))
    try:
        emit(
            events.MitigationStarted(
                run_dir=str(ctx.folder.path),
                method=method,
                labels=ctx.labels,
                device=str(ctx.device),
                train_images=len(ctx.x_train),
                eval_images=len(ctx.x_eval),
            )
        )
        before = evaluate(ctx.model, ctx)
        emit(
            events.Stage(
                message=f"before: clean accuracy {before['accuracy']:.2%}, reversed-trigger ASR "
                + ", ".join(f"label {k} {v:.1%}" for k, v in before["asr"].items())
            )
        )
        result = {"unlearn": unlearn, "prune": prune, "filter": build_filter}[method](ctx, options, out, emit)
        after = result.pop("after")
        report: dict[str, Any] = {
            "method": method,
            "run_dir": str(ctx.folder.path),
            "labels": ctx.labels,
            "device": str(ctx.device),
            "train_images": len(ctx.x_train),
            "eval_images": len(ctx.x_eval),
            "clean_accuracy": {"before": before["accuracy"], "after": after["accuracy"]},
            "asr": {str(k): {"before": before["asr"][k], "after": after["asr"][k]} for k in ctx.labels},
            **result,
            "options": {k: v for k, v in vars(options).items()},
        }
        report["seconds"] = time.perf_counter() - started
        if options.rescan and "config_path" in result:  # a rejected repair saved no model to scan
            report["rescan"] = _rescan(result["config_path"], emit)
        path = RunFolder.write_mitigation_report(out, report)
        emit(events.MitigationFinished(method=method, report_path=str(path), seconds=report["seconds"]))
    finally:
        log.close()
    report["report_path"] = str(path)
    return report


def table_lines(report: dict[str, Any]) -> list[str]:
    """The before/after table of a mitigation report, as plain text lines."""
    return mitigation_lines(report)
