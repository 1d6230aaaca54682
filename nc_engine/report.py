"""The report: finished trials in, one typed row per label, the MAD test and the verdict out.

`Report` is what the engine returns, writes to report.json and reads back; the console, the app,
mitigation and the benchmarks all consume it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RunFolderError
from .outliers import mad_outliers
from .runfolder import RunFolder, trigger_paths

SCHEMA = 2  # 2: run_dir recorded; 1 (read too): without it
READABLE_SCHEMAS = (1, 2)
CSV_COLUMNS = ["label", "name", "l1_norm", "asr", "anomaly_index", "flagged", "converged", "steps", "seconds",
               "mask_png"]
TRIAL_KEYS = ("trial", "seed", "l1_norm", "asr", "steps", "converged", "stop_reason")


@dataclass
class LabelRow:
    """One label: the kept trial's numbers, the outlier test's verdict on it, and all its trials."""

    label: int
    name: str
    l1_norm: float
    asr: float | None
    anomaly_index: float | None
    flagged: bool
    converged: bool
    kept_trial: int
    steps: int
    seconds: float
    trials: list[dict]
    mask_png: str
    pattern_png: str
    fusion_png: str
    trigger_npz: str


@dataclass
class ScanInfo:
    """What the scan was: recorded in the report beside the results."""

    clean_accuracy: float = math.nan
    device: str = ""
    strategy: str = ""
    group_size: int = 0
    preset: str = ""
    samples: int = 0
    asr_samples: int = 0
    model: str = ""
    data: str = ""
    class_names: list[str] = field(default_factory=list)
    trials_per_label: int = 1
    seconds: float = 0.0
    images: int = 0  # stamped images processed


@dataclass
class Report:
    schema: int
    complete: bool
    verdict: str | None  # backdoored | clean | inconclusive; None while unfinished
    flagged: list[int]
    median_l1: float | None
    mad: float | None
    threshold: float
    statistic: str
    cutoff_l1: float | None
    note: str
    info: ScanInfo
    labels_planned: list[int]
    labels: list[LabelRow]
    run_dir: str = ""

    def to_dict(self) -> dict[str, Any]:
        """report.json's content: the info's keys sit at the top level, in the order they always had."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "info":
                out.update(dataclasses.asdict(value))
            elif f.name == "labels":
                out["labels"] = [dataclasses.asdict(r) for r in value]
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "report.json") -> Report:
        """Read back what to_dict wrote; a missing key or a wrong shape is one RunFolderError line."""
        if data.get("schema") not in READABLE_SCHEMAS:
            raise RunFolderError(f"{where}: report schema {data.get('schema')!r}, expected one of {READABLE_SCHEMAS}")
        try:
            info = ScanInfo(**{f.name: data[f.name] for f in dataclasses.fields(ScanInfo) if f.name in data})
            rows = [LabelRow(**row) for row in data["labels"]]
            top = {f.name: data[f.name] for f in dataclasses.fields(cls)
                   if f.name not in ("info", "labels") and f.name in data}
            return cls(**top, info=info, labels=rows)
        except (KeyError, TypeError) as exc:
            raise RunFolderError(f"{where}: not a report written by nc-tui ({type(exc).__name__}: {exc})") from None

    @classmethod
    def read(cls, run: str | Path) -> Report:
        """The report of a run folder; run_dir is where it was found, wherever the folder has moved. A run
        killed before its first report.json gets a partial report rebuilt from its finished trials."""
        folder = RunFolder.existing(run)
        if not folder.has_report() and folder.config_path.is_file():
            from .recover import rebuilt_report  # recover builds on this module

            return rebuilt_report(folder)
        report = cls.from_dict(folder.read_report_dict(), str(folder.file("report.json")))
        report.run_dir = str(folder.path.resolve())
        return report

    def csv_columns(self) -> list[str]:
        return list(CSV_COLUMNS)

    def csv_rows(self) -> list[dict[str, Any]]:
        return [dataclasses.asdict(r) for r in self.labels]

    def row(self, label: int) -> LabelRow | None:
        return next((r for r in self.labels if r.label == label), None)

    def name_of(self, label: int) -> str:
        names = self.info.class_names
        return names[label] if label < len(names) else str(label)


def _asr_key(trial: dict) -> tuple[float, float]:
    asr = trial.get("asr")
    asr = -1.0 if asr is None or (isinstance(asr, float) and math.isnan(asr)) else asr
    return (asr, -trial["l1_norm"])  # highest ASR; ties: smaller L1


def kept_trial(trials: list[dict]) -> dict:
    """The trial a label keeps: the highest held-out ASR, ties broken by the smaller trigger."""
    return max(sorted(trials, key=lambda t: t["trial"]), key=_asr_key)


def label_rows(trials: list[dict], class_names: list[str]) -> list[LabelRow]:
    """One row per label from its trials: the kept trial's numbers plus the list of all trials."""
    by_label: dict[int, list[dict]] = {}
    for t in trials:
        by_label.setdefault(t["label"], []).append(t)
    rows = []
    for label in sorted(by_label):
        ts = sorted(by_label[label], key=lambda t: t["trial"])
        kept = kept_trial(ts)
        rows.append(LabelRow(
            label=label, name=class_names[label] if label < len(class_names) else str(label),
            l1_norm=kept["l1_norm"], asr=kept["asr"], anomaly_index=None, flagged=False,
            converged=kept["converged"], kept_trial=kept["trial"],
            steps=sum(t["steps"] for t in ts), seconds=sum(t["seconds"] for t in ts),
            trials=[{k: t[k] for k in TRIAL_KEYS} for t in ts], **trigger_paths(label)))
    return rows


def build_report(trials: list[dict], labels_planned: list[int], threshold: float, statistic: str,
                 info: ScanInfo, run_dir: str = "") -> Report:
    """The report of the trials so far: `complete` when every planned (label, trial) has finished."""
    rows = label_rows(trials, info.class_names)
    done = {r.label for r in rows if len(r.trials) >= info.trials_per_label}
    report = Report(SCHEMA, set(labels_planned) <= done, None, [], None, None, threshold, statistic, None, "",
                    info, labels_planned, rows, run_dir)
    if not report.complete:
        report.note = (f"unfinished: {len(done)} of {len(labels_planned)} labels done; "
                       f"resume with nc-tui scan --resume {run_dir or 'RUN_DIR'}")
        return report
    decide(report, [r for r in rows if r.label in done])
    return report


def decide(report: Report, rows: list[LabelRow]) -> None:
    """The MAD test over the finished rows, and the verdict it supports."""
    result = mad_outliers([r.l1_norm for r in rows], report.threshold, [r.converged for r in rows],
                          report.statistic)
    for r, index, flag in zip(rows, result.anomaly_index, result.flagged, strict=True):
        r.anomaly_index = index if not result.note else None
        r.flagged = flag
    report.median_l1, report.mad, report.cutoff_l1 = result.median, result.mad, result.cutoff or None
    report.note = result.note
    report.flagged = [r.label for r in rows if r.flagged]
    if result.note:
        report.verdict = "inconclusive"
    else:
        report.verdict = "backdoored" if report.flagged else "clean"
