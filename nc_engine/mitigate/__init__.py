"""Mitigation of a backdoor a scan found: unlearning, neuron pruning, or an input filter.

    run_mitigation(RUN_DIR, "unlearn" | "prune" | "filter", MitigationOptions(), on_event)

writes RUN_DIR/mitigation/<method>/ (report.json, events.jsonl, and the repaired model with a
config.toml that scans it, or detector.json for the filter) and returns the report.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from .. import events as ev
from ..errors import MitigationError
from ..runfolder import EventLog, write_json
from . import events
from .common import Context, EventHandler, MitigationOptions, check_options, evaluate, load_context, load_options
from .filter import build_filter, filter_images, load_detector
from .prune import prune
from .unlearn import stamp_batch, unlearn

METHODS = ("unlearn", "prune", "filter")

__all__ = ["METHODS", "MitigationOptions", "events", "filter_images", "load_detector", "load_options",
           "run_mitigation", "stamp_batch", "table_lines"]


def _rescan(config_path: str, emit: EventHandler) -> dict[str, Any]:
    from ..config import load_config
    from ..scan import run_scan

    def forward(e: ev.Event) -> None:
        if isinstance(e, ev.Warning):
            emit(e)
        elif isinstance(e, ev.LabelFinished):
            emit(events.Stage(f"re-scan: label {e.label} L1 {e.l1_norm:.2f} ({e.done}/{e.total})"))

    emit(events.Stage(f"re-scanning the repaired model ({config_path})"))
    report = run_scan(load_config(config_path), forward)
    return {"run_dir": report["run_dir"], "verdict": report["verdict"], "flagged": report["flagged"],
            "labels": [{"label": r["label"], "l1_norm": r["l1_norm"], "anomaly_index": r["anomaly_index"],
                        "flagged": r["flagged"]} for r in report["labels"]]}


def run_mitigation(run_dir: str | Path, method: str, options: MitigationOptions | None = None,
                   on_event: EventHandler | None = None) -> dict[str, Any]:
    """Repair the model of a finished scan (or build an input filter for it); returns the report."""
    started = time.perf_counter()
    options = options or MitigationOptions()
    if method not in METHODS:
        raise MitigationError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    check_options(options)
    if options.rescan and method == "filter":
        raise MitigationError("--rescan re-scans a repaired model; the filter leaves the model as it is")
    handlers: list[EventHandler] = [on_event] if on_event else []

    def emit(event: ev.Event) -> None:
        for handle in handlers:
            handle(event)

    ctx: Context = load_context(run_dir, options, lambda m: emit(ev.Warning(m)))
    out = ctx.run / "mitigation" / method
    out.mkdir(parents=True, exist_ok=True)
    log = EventLog(out / "events.jsonl")
    handlers.append(lambda e: log.write(e.to_dict()))
    try:
        emit(events.MitigationStarted(str(ctx.run), method, ctx.labels, str(ctx.device), len(ctx.x_train),
                                      len(ctx.x_eval)))
        before = evaluate(ctx.model, ctx)
        emit(events.Stage(f"before: clean accuracy {before['accuracy']:.2%}, reversed-trigger ASR "
                          + ", ".join(f"label {k} {v:.1%}" for k, v in before["asr"].items())))
        result = {"unlearn": unlearn, "prune": prune, "filter": build_filter}[method](ctx, options, out, emit)
        after = result.pop("after")
        report: dict[str, Any] = {
            "method": method, "run_dir": str(ctx.run), "labels": ctx.labels, "device": str(ctx.device),
            "train_images": len(ctx.x_train), "eval_images": len(ctx.x_eval),
            "clean_accuracy": {"before": before["accuracy"], "after": after["accuracy"]},
            "asr": {str(k): {"before": before["asr"][k], "after": after["asr"][k]} for k in ctx.labels},
            **result, "options": {k: v for k, v in vars(options).items()}}
        report["seconds"] = time.perf_counter() - started
        if options.rescan:
            report["rescan"] = _rescan(result["config_path"], emit)
        path = out / "report.json"
        write_json(path, report)
        emit(events.MitigationFinished(method, str(path), report["seconds"]))
    finally:
        log.close()
    report["report_path"] = str(path)
    return report


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def table_lines(report: dict[str, Any]) -> list[str]:
    """The before/after table of a mitigation report, as plain text lines."""
    after_name = "after (accepted)" if report["method"] == "filter" else "after"
    rows = [("", "before", after_name)]
    acc = report["clean_accuracy"]
    rows.append(("clean accuracy", _pct(acc["before"]), _pct(acc["after"])))
    for label, v in report["asr"].items():
        rows.append((f"ASR, label {label} trigger", _pct(v["before"]), _pct(v["after"])))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    m = report["method"]
    if m == "unlearn":
        lines.append(f"fine-tuned on {report['train_images']} clean images ({report['stamped_images']} stamped)")
    elif m == "prune":
        lines.append(f"pruned {len(report['pruned_units'])} of {report['layer_units']} units of the input of "
                     f"{report['layer']} ({report['pruned_fraction']:.0%}): {report['stop_reason']}")
        lines.append("curve: " + "; ".join(f"{c['fraction']:.0%} acc {c['accuracy']:.1%} ASR "
                                           + "/".join(f"{v:.0%}" for v in c["asr"].values())
                                           for c in report["curve"]))
    else:
        lines.append(f"false positives on clean held-out images {report['fpr']:.1%} (target "
                     f"{report['fpr_target']:.0%}); false negatives on stamped images "
                     + ", ".join(f"label {k} {v:.1%}" for k, v in report["fnr"].items()))
        lines.append(f"detector: {report['detector']}")
    if "model_path" in report:
        lines.append(f"repaired model: {report['model_path']} (scan it with {report['config_path']})")
    if "rescan" in report:
        rs = report["rescan"]
        lines.append(f"re-scan: {rs['verdict']}, flagged {rs['flagged'] or 'none'}; anomaly index "
                     + ", ".join(f"{r['label']}: {r['anomaly_index']:.2f}" if r["anomaly_index"] is not None
                                 else f"{r['label']}: -" for r in rs["labels"]))
    lines.append(f"{report['seconds']:.1f}s")
    return lines
