"""From finished trials to the report: keep the best trial per label, run the MAD test, decide."""

from __future__ import annotations

import math

from .outliers import mad_outliers
from .runfolder import SCHEMA


def _asr_key(trial: dict) -> tuple[float, float]:
    asr = trial.get("asr")
    asr = -1.0 if asr is None or (isinstance(asr, float) and math.isnan(asr)) else asr
    return (asr, -trial["l1_norm"])  # highest ASR; ties: smaller L1


def label_rows(trials: list[dict], class_names: list[str]) -> list[dict]:
    """One row per label from its trials: the kept trial's numbers plus the list of all trials."""
    by_label: dict[int, list[dict]] = {}
    for t in trials:
        by_label.setdefault(t["label"], []).append(t)
    rows = []
    for label in sorted(by_label):
        ts = sorted(by_label[label], key=lambda t: t["trial"])
        kept = max(ts, key=_asr_key)
        rows.append({
            "label": label,
            "name": class_names[label] if label < len(class_names) else str(label),
            "l1_norm": kept["l1_norm"], "asr": kept["asr"], "anomaly_index": None, "flagged": False,
            "converged": kept["converged"], "kept_trial": kept["trial"],
            "steps": sum(t["steps"] for t in ts), "seconds": sum(t["seconds"] for t in ts),
            "trials": [{k: t[k] for k in ("trial", "seed", "l1_norm", "asr", "steps", "converged",
                                          "stop_reason")} for t in ts],
            "mask_png": f"triggers/label_{label:03d}_mask.png",
            "pattern_png": f"triggers/label_{label:03d}_pattern.png",
            "fusion_png": f"triggers/label_{label:03d}_fusion.png",
            "trigger_npz": f"triggers/label_{label:03d}.npz",
        })
    return rows


def build_report(trials: list[dict], class_names: list[str], labels_planned: list[int], trials_per_label: int,
                 threshold: float, meta: dict, statistic: str = "l1") -> dict:
    """The report.json content. `complete` when every planned (label, trial) has finished."""
    rows = label_rows(trials, class_names)
    done = {r["label"] for r in rows if len(r["trials"]) >= trials_per_label}
    complete = set(labels_planned) <= done
    full = [r for r in rows if r["label"] in done]
    report = {"schema": SCHEMA, "complete": complete, "verdict": None, "flagged": [], "median_l1": None,
              "mad": None, "threshold": threshold, "statistic": statistic, "cutoff_l1": None, "note": "", **meta,
              "labels_planned": labels_planned, "labels": rows}
    if not complete:
        report["note"] = (f"unfinished: {len(done)} of {len(labels_planned)} labels done; "
                          "resume with nc-tui scan --resume RUN_DIR")
        return report
    result = mad_outliers([r["l1_norm"] for r in full], threshold, [r["converged"] for r in full], statistic)
    for r, index, flag in zip(full, result.anomaly_index, result.flagged, strict=True):
        r["anomaly_index"] = index if not result.note else None
        r["flagged"] = flag
    report.update(median_l1=result.median, mad=result.mad, cutoff_l1=result.cutoff or None, note=result.note,
                  flagged=[r["label"] for r in full if r["flagged"]])
    if result.note:
        report["verdict"] = "inconclusive"
    else:
        report["verdict"] = "backdoored" if report["flagged"] else "clean"
    return report


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


TABLE_COLUMNS = ("label", "name", "L1 norm", "ASR", "anomaly", "steps", "status")


def table_rows(report: dict) -> list[dict]:
    """Formatted cells per label, most anomalous first; "flagged" says whether to highlight the row."""
    rows = sorted(report["labels"], key=lambda r: -(r["anomaly_index"] if r["anomaly_index"] is not None
                                                    else -math.inf))
    out = []
    for r in rows:
        status = "FLAGGED" if r["flagged"] else ("not converged" if not r["converged"] else "")
        cells = (str(r["label"]), r["name"], _fmt(r["l1_norm"], ".2f"), _fmt(r["asr"], ".1%"),
                 _fmt(r["anomaly_index"], ".2f"), str(r["steps"]), status)
        out.append({"cells": cells, "flagged": r["flagged"]})
    return out


def table_lines(report: dict) -> list[str]:
    """Plain-text table of labels, ordered by anomaly index (most anomalous first)."""
    widths = (5, 14, 9, 7, 8, 6, 0)
    def line(cells: tuple[str, ...]) -> str:
        return " ".join(c if not w else c[:w].ljust(w) if i == 1 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()
    return [line(TABLE_COLUMNS)] + [line(r["cells"]) for r in table_rows(report)]


def verdict_line(report: dict) -> str:
    if report["verdict"] is None:
        return f"Verdict: none yet ({report['note']})"
    log = report.get("statistic") == "log_l1"
    stats = (f"median L1 {_fmt(report['median_l1'], '.2f')}, MAD{' of log L1' if log else ''} "
             f"{_fmt(report['mad'], '.2f')}; flagged below L1 {_fmt(report.get('cutoff_l1'), '.2f')}")
    if report["verdict"] == "backdoored":
        names = ", ".join(f"{r['label']} ({r['name']})" for r in report["labels"] if r["flagged"])
        return (f"Verdict: BACKDOORED: flagged label(s) {names} with anomaly index > "
                f"{report['threshold']:g} ({stats})")
    if report["verdict"] == "clean":
        return f"Verdict: clean: no label has anomaly index > {report['threshold']:g} ({stats})"
    return f"Verdict: inconclusive: {report['note']}"
