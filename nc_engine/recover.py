"""A partial report for a run folder killed before it wrote its first report.json: rebuilt from the
finished trials with the run's own config, and the class names and clean accuracy its events recorded."""

from __future__ import annotations

import math
from typing import Any

from .report import Report, ScanInfo, build_report
from .runfolder import RunFolder


def _started(folder: RunFolder) -> dict[str, Any]:
    """The last scan_started event (the class names, device and clean accuracy of the latest run)."""
    starts = [e for e in folder.read_events() if e.get("event") == "scan_started"]
    return starts[-1] if starts else {}


def _shares(started: dict, classes: int) -> list[float]:
    """The scan data's class shares as the scan started with them; none when absent or malformed."""
    share = started.get("label_share")
    ok = isinstance(share, list) and len(share) == classes and all(isinstance(v, int | float) for v in share)
    return [float(v) for v in share] if ok else []


def rebuilt_report(folder: RunFolder) -> Report:
    cfg = folder.read_config().resolved()
    started = _started(folder)
    labels = (list(range(cfg.model.num_classes)) if cfg.scan.labels == "all" else list(cfg.scan.labels))
    if not labels and isinstance(started.get("labels"), list):
        labels = [int(v) for v in started["labels"]]
    names = started.get("class_names")
    names = [str(n) for n in names] if isinstance(names, list) else []
    accuracy = started.get("clean_accuracy")
    info = ScanInfo(clean_accuracy=float(accuracy) if isinstance(accuracy, int | float) else math.nan,
                    device=str(started.get("device", "")), strategy=cfg.scan.strategy,
                    group_size=int(started.get("group_size") or 0), preset=cfg.scan.preset,
                    samples=int(started.get("samples") or cfg.scan.samples or 0),
                    asr_samples=int(started.get("asr_samples") or cfg.scan.asr_samples or 0),
                    model=str(cfg.resolve_path(cfg.model.path)), data=str(cfg.resolve_path(cfg.data.path)),
                    class_names=names, trials_per_label=cfg.scan.trials or 1, label_share=_shares(started, len(names)))
    run_dir = str(folder.path.resolve())
    trials = folder.trials(cfg.model.input_shape)  # damaged trials are left out, as a resume would
    report = build_report(trials, labels, cfg.detect.threshold or 0.0, cfg.detect.statistic, info, run_dir,
                          spread_floor=cfg.detect.spread_floor or 0.0,
                          frequency_correction=cfg.detect.frequency_correction)
    report.note = f"rebuilt from {len(trials)} finished trial(s): the scan stopped before writing its report; " \
        + report.note
    return report
