"""Numbers, ETAs and tables as text: one place for log.txt, the console and the terminal app alike."""

from __future__ import annotations

import math
from typing import Any

from nc_engine.detectors.result import read_result
from nc_engine.verdict.decide import can_flag, frequent_flagged, median_share
from nc_engine.verdict.report import Report
from nc_engine.verdict.rows import LabelRow

TABLE_COLUMNS = ("label", "name", "L1 norm", "ASR", "anomaly", "steps", "status")
DEGENERATE_AREA = 0.5  # a mask covering more than this share of the image is no trigger, whatever its ASR


def fmt_num(value: float | None, spec: str) -> str:
    """`value` in `spec`, or "-" for a missing or NaN number."""
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def fmt_eta(seconds: float | None, at_most: bool = False) -> str:
    """`at_most`: the estimate is an upper bound (a scan's: running searches counted to their step limit)."""
    if seconds is None or not math.isfinite(seconds):
        return "ETA --"
    seconds = int(seconds)
    return f"ETA {'<= ' if at_most else ''}{seconds // 60}:{seconds % 60:02d}"


def is_degenerate(row: LabelRow, area: int | None = None) -> bool:
    """A search that found no real trigger: its mask covers most of the image (`area`: H*W pixels), or it
    ran to the step limit without converging. Such an L1 says nothing about a backdoor."""
    kept = next((t for t in row.trials if t.trial == row.kept_trial), None)
    too_big = area is not None and area > 0 and row.l1_norm > DEGENERATE_AREA * area
    return too_big or (not row.converged and kept is not None and kept.stop_reason == "max_steps")


def table_rows(report: Report, area: int | None = None) -> list[dict[str, Any]]:
    """Formatted cells per label, most anomalous first; "flagged" says whether to highlight the row.
    `area` (the mask's H*W, when known) lets a mask covering most of the image show as degenerate."""
    rows = sorted(report.labels, key=lambda r: -(r.anomaly_index if r.anomaly_index is not None else -math.inf))
    by_others = _flagged_by_others(report)
    out = []
    for r in rows:
        degenerate = is_degenerate(r, area)
        status = (
            "FLAGGED"
            if r.flagged
            else f"FLAGGED ({by_others[r.label]})"
            if r.label in by_others
            else "degenerate"
            if degenerate
            else "not converged"
            if not r.converged
            else "screened"
            if r.stage == "screened"
            else ""
        )
        cells = (
            str(r.label),
            r.name,
            fmt_num(r.l1_norm, ".2f"),
            fmt_num(r.asr, ".1%"),
            fmt_num(r.anomaly_index, ".2f"),
            str(r.steps),
            status,
        )
        out.append(
            {"label": r.label, "cells": cells, "flagged": r.flagged or r.label in by_others, "degenerate": degenerate}
        )
    return out


SHORT_NAMES = {"max_margin": "margin", "transforms": "transform"}


def _flagged_by_others(report: Report) -> dict[int, str]:
    """Labels in the verdict that only other detectors flagged -> their short names ("margin", ...)."""
    own = {r.label for r in report.labels if r.flagged}
    names: dict[int, list[str]] = {}
    for name, evidence in report.detectors.items():
        result = read_result(name, evidence)
        for label in result.flagged if result is not None else []:
            names.setdefault(label, []).append(SHORT_NAMES.get(name, name))
    return {k: ", ".join(names.get(k, ["another detector"])) for k in set(report.flagged) - own}


def table_lines(report: Report, area: int | None = None) -> list[str]:
    """Plain-text table of labels, ordered by anomaly index (most anomalous first)."""
    widths = (5, 14, 9, 7, 8, 6, 0)

    def line(cells: tuple[str, ...]) -> str:
        return " ".join(
            c if not w else c[:w].ljust(w) if i == 1 else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return [line(TABLE_COLUMNS)] + [line(r["cells"]) for r in table_rows(report, area)]


def verdict_line(report: Report) -> str:
    """The verdict in one line: Neural Cleanse's finding, then each other detector's."""
    return _neural_cleanse_line(report) + "".join(f"; {line}" for line in detector_lines(report))


def detector_lines(report: Report) -> list[str]:
    """One line per detector besides Neural Cleanse that the scan ran."""
    results = (read_result(name, evidence) for name, evidence in report.detectors.items())
    return [result.summary() for result in results if result is not None]


def _neural_cleanse_line(report: Report) -> str:
    if report.verdict is None:
        return f"Verdict: none yet ({report.note})"
    log = report.statistic == "log_l1"
    floored = report.mad is not None and report.spread_floor > report.mad
    spread = f" (floor {report.spread_floor:g} used)" if floored else ""
    stats = (
        f"median L1 {fmt_num(report.median_l1, '.2f')}, MAD{' of log L1' if log else ''} "
        f"{fmt_num(report.mad, '.2f')}{spread}; flagged below L1 {fmt_num(report.cutoff_l1, '.2f')}"
        f"{frequency_note(report)}"
    )
    if report.verdict == "backdoored" and not any(r.flagged for r in report.labels):  # another detector's
        fired = ", ".join(report.fired)
        return (
            f"Verdict: BACKDOORED: {fired} flagged label(s) {', '.join(map(str, report.flagged))}; Neural "
            f"Cleanse: no label has anomaly index > {report.threshold:g} ({stats})"
        )
    if report.verdict == "backdoored":
        names = ", ".join(f"{r.label} ({r.name}{own_line(report, r)})" for r in report.labels if r.flagged)
        return (
            f"Verdict: BACKDOORED: flagged label(s) {names} with anomaly index > "
            f"{report.threshold:g} ({stats}){frequent_caution(report)}"
        )
    if report.verdict == "clean":
        return f"Verdict: clean: no label has anomaly index > {report.threshold:g} ({stats}{closest(report)})"
    return f"Verdict: inconclusive: {report.note}"


def frequency_note(report: Report) -> str:
    """How the class-frequency correction moved the line, when it did (class_frequency.py)."""
    if report.frequency_slope == 0.0:
        return ""
    return (
        f"; median and line are a median-share class's, the line lower for frequent classes and higher for "
        f"rare ones (class-frequency correction: on this model a class's trigger L1 goes "
        f"x{2**report.frequency_slope:.2f} per doubling of its share of the data)"
    )


def own_line(report: Report, row: LabelRow) -> str:
    """A flagged label's own flagging line, when the class-frequency correction moved it."""
    cut = report.cutoff_of(row)
    if row.frequency_factor == 1.0 or cut is None:
        return ""
    return f"; L1 {row.l1_norm:.1f}, its line {cut:.1f}"


def frequent_caution(report: Report) -> str:
    """A flagged label that is one of the data's frequent classes: clean models give those small triggers."""
    frequent = frequent_flagged(report.labels, report.info)
    if not frequent:
        return ""
    names = ", ".join(
        f"{r.label} ({r.name}, {report.info.label_share[r.label]:.1%} of the scan data)" for r in frequent
    )
    return (
        f". Caution: label(s) {names} {'is a frequent class' if len(frequent) == 1 else 'are frequent classes'}"
        f" (median class {median_share(report.info):.1%}); clean models also give frequent classes small "
        "triggers, so inspect the reversed trigger; the verdict stands"
    )


def closest(report: Report) -> str:
    """The label a clean verdict came closest to flagging: a backdoor the test missed most often ranks
    first while staying under the threshold (evaluation/campaigns/cpu-test-half/RESULTS.md), so say where
    it stood."""
    ranked = [(r.anomaly_index, r) for r in report.labels if r.anomaly_index is not None and can_flag(r)]
    if not ranked:
        return ""
    index, top = max(ranked, key=lambda pair: pair[0])
    return f"; closest to the threshold: label {top.label} ({top.name}), index {index:.2f}"


def label_line(label: int, name: str, l1_norm: float, asr: float | None, steps: int, converged: bool) -> str:
    """A finished label in one line (log.txt, console, app log)."""
    return f"label {label} ({name}) done: L1 {l1_norm:.2f}, ASR {fmt_num(asr, '.1%')}, {steps} steps" + (
        "" if converged else ", NOT converged"
    )


def saved_line(searches: list[list[int]]) -> str:
    """The running searches a stopped scan saved: a resume continues each from its step."""
    steps = ", ".join(f"{label}:{step}" for label, _, step in searches[:12]) + (" ..." if len(searches) > 12 else "")
    return (
        f"saved {len(searches)} running search(es) at their last whole step (label:step {steps}); "
        "a resume continues them there"
    )


def mitigation_lines(report: dict[str, Any]) -> list[str]:
    """The before/after table of a mitigation report, and what the method did, as plain text lines."""
    after_name = "after (accepted)" if report["method"] == "filter" else "after"
    rows = [("", "before", after_name)]
    acc = report["clean_accuracy"]
    rows.append(("clean accuracy", fmt_num(acc["before"], ".1%"), fmt_num(acc["after"], ".1%")))
    for label, v in report["asr"].items():
        rows.append((f"ASR, label {label} trigger", fmt_num(v["before"], ".1%"), fmt_num(v["after"], ".1%")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    ]
    return lines + _method_lines(report) + [f"{report['seconds']:.1f}s"]


def _method_lines(report: dict[str, Any]) -> list[str]:
    m, lines = report["method"], []
    if m == "unlearn":
        lines.append(
            f"fine-tuned on {report['train_images']} clean images ({report['stamped_images']} stamped)"
            + (
                f", lr backed off to {report['lr']:g} after {len(report['attempts']) - 1} drop(s) too large"
                if len(report.get("attempts", [])) > 1
                else ""
            )
        )
        if report.get("accepted") is False:
            lines.append(f"NOT REPAIRED: {report['rejected']}")
    elif m == "prune":
        lines.append(
            f"pruned {len(report['pruned_units'])} of {report['layer_units']} units of the input of "
            f"{report['layer']} ({report['pruned_fraction']:.0%}): {report['stop_reason']}"
        )
        lines.append(
            "curve: "
            + "; ".join(
                f"{c['fraction']:.0%} acc {c['accuracy']:.1%} ASR " + "/".join(f"{v:.0%}" for v in c["asr"].values())
                for c in report["curve"]
            )
        )
    else:
        lines.append(
            f"false positives on clean held-out images {report['fpr']:.1%} (target "
            f"{report['fpr_target']:.0%}); false negatives on stamped images "
            + ", ".join(f"label {k} {v:.1%}" for k, v in report["fnr"].items())
        )
        lines.append(f"detector: {report['detector']}")
    if "model_path" in report:
        lines.append(f"repaired model: {report['model_path']} (scan it with {report['config_path']})")
    if "rescan" in report:
        rs = report["rescan"]
        lines.append(
            f"re-scan: {rs['verdict']}, flagged {rs['flagged'] or 'none'}; anomaly index "
            + ", ".join(f"{r['label']}: {fmt_num(r['anomaly_index'], '.2f')}" for r in rs["labels"])
        )
    return lines
