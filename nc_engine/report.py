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

import numpy as np

from .class_frequency import aligned, frequency_fit
from .errors import RunFolderError
from .outliers import mad_outliers
from .runfolder import RunFolder, trigger_paths
from .screening import Selection, scale_shift

SCHEMA = 2  # 2: run_dir recorded; 1 (read too): without it
READABLE_SCHEMAS = (1, 2)
CSV_COLUMNS = ["label", "name", "l1_norm", "asr", "anomaly_index", "cutoff_l1", "flagged", "converged", "steps",
               "seconds", "mask_png"]
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
    stage: str = "full"  # screened scans: "confirmed" (searched at the full budget) or "screened" (not)
    screen_l1: float | None = None  # screened scans: the screening pass's L1 norm
    # what the outlier test divided l1_norm by to take out the class-frequency line (1: nothing)
    frequency_factor: float = 1.0


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
    outputs: str = ""  # what the model's outputs were taken to be: logits or probabilities
    label_share: list[float] = field(default_factory=list)  # each class's share of the scanned data's labels


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
    reasons: list[str] = field(default_factory=list)  # why the verdict is inconclusive (or what to doubt)
    screening: dict[str, Any] = field(default_factory=dict)  # screened scans: candidates, references, shift, why
    spread_floor: float = 0.0  # the outlier test divides by max(mad, spread_floor); reports before it had none
    frequency_correction: bool = False  # the index is measured from the class-frequency line (class_frequency.py)
    frequency_slope: float = 0.0  # that line's slope in log L1 per log share; 0: nothing was taken out

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
    def from_dict(cls, data: dict[str, Any], where: str = "the report") -> Report:
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
        report = cls.from_dict(folder.read_report_dict(), str(folder.report_path))
        report.run_dir = str(folder.path.resolve())
        return report

    def csv_columns(self) -> list[str]:
        return list(CSV_COLUMNS)

    def csv_rows(self) -> list[dict[str, Any]]:
        return [{**dataclasses.asdict(r), "cutoff_l1": self.cutoff_of(r)} for r in self.labels]

    def row(self, label: int) -> LabelRow | None:
        return next((r for r in self.labels if r.label == label), None)

    def cutoff_of(self, row: LabelRow) -> float | None:
        """The flagging line for this label's L1 norm (flagged below it): cutoff_l1, the line of a class of
        median share, moved along the class-frequency line as the outlier test moved this label."""
        return None if self.cutoff_l1 is None else self.cutoff_l1 * row.frequency_factor

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
                 info: ScanInfo, run_dir: str = "", faults: list[str] | None = None,
                 selection: Selection | None = None, spread_floor: float = 0.0, saved_running: int = 0,
                 frequency_correction: bool = False) -> Report:
    """The report of the trials so far: `complete` when every planned (label, trial) has finished, or at
    once when `faults` say no search can work on the model (then the verdict is inconclusive). A screened
    scan (`selection` made from its screening pass) is complete once its confirmed labels are.
    `saved_running`: searches a stop saved mid-way, which a resume continues. `frequency_correction`: judge
    labels from the class-frequency line of the scanned data's shares (class_frequency.py)."""
    rows = label_rows([t for t in trials if t.get("stage", "trial") != "screen"], info.class_names)
    done = {r.label for r in rows if len(r.trials) >= info.trials_per_label}
    needed = set(selection.confirmed) if selection else set(labels_planned)
    report = Report(SCHEMA, needed <= done, None, [], None, None, threshold, statistic, None, "",
                    info, labels_planned, rows, run_dir, spread_floor=spread_floor,
                    frequency_correction=frequency_correction)
    if faults:
        report.complete, report.verdict, report.reasons = True, "inconclusive", list(faults)
        report.note = "; ".join(faults)
        return report
    if not report.complete:
        running = f" ({saved_running} more search(es) saved mid-way)" if saved_running else ""
        report.note = (f"unfinished: {len(done & needed)} of {len(needed)} labels done{running}; "
                       f"resume with nc-tui scan --resume {run_dir or 'RUN_DIR'}")
        return report
    if selection is not None:
        screened = label_rows([t for t in trials if t.get("stage") == "screen"], info.class_names)
        report.labels = merge_screened(report, screened, selection)
    decide(report, [r for r in report.labels if r.label in done or r.stage == "screened"])
    return report


def merge_screened(report: Report, screened: list[LabelRow], selection: Selection) -> list[LabelRow]:
    """Confirmed rows as searched; the other labels' screened norms moved onto the confirmed scale."""
    confirmed = {r.label: r for r in report.labels if r.label in selection.confirmed}
    first = {r.label: r.l1_norm for r in screened}
    shift = scale_shift(first, {k: r.l1_norm for k, r in confirmed.items()}, selection.references)
    for label, r in confirmed.items():
        r.stage, r.screen_l1 = "confirmed", first.get(label)
    rest = [r for r in screened if r.label not in confirmed]
    for r in rest:
        r.stage, r.screen_l1, r.l1_norm = "screened", r.l1_norm, r.l1_norm * math.exp(shift)
    report.screening = {"candidates": selection.candidates, "references": selection.references,
                        "second_round": selection.second_round, "log_shift": shift,
                        "why": {str(k): v for k, v in sorted(selection.why.items())}}
    return sorted([*confirmed.values(), *rest], key=lambda r: r.label)


CHANCE_MARGIN = 0.1  # accuracy within this share of the way from chance to perfect counts as "near chance"
MIN_CONVERGED = 0.5  # below this share of labels reaching the attack threshold, the search did not work


def can_flag(row: LabelRow) -> bool:
    """A label the outlier test may flag: its search converged and, in a screened scan, it was confirmed."""
    return row.converged and row.stage != "screened"


def decide(report: Report, rows: list[LabelRow]) -> None:
    """The MAD test over the finished rows, and the verdict it supports: backdoored, clean, or
    inconclusive with its reasons. Never clean when the search did not work."""
    eligible = [can_flag(r) for r in rows]
    share = aligned([r.label for r in rows], report.info.label_share) if report.frequency_correction else []
    raw = [r.l1_norm for r in rows]
    factors, report.frequency_slope = frequency_fit(raw, share)
    for r, factor in zip(rows, factors, strict=True):
        r.frequency_factor = factor
    result = mad_outliers([v / f for v, f in zip(raw, factors, strict=True)], report.threshold, eligible,
                          report.statistic, spread_floor=report.spread_floor)
    for r, index, flag in zip(rows, result.anomaly_index, result.flagged, strict=True):
        r.anomaly_index = index if not result.note else None
        r.flagged = flag
    report.median_l1, report.mad, report.cutoff_l1 = result.median, result.mad, result.cutoff or None
    report.flagged = [r.label for r in rows if r.flagged]
    blocking = ([result.note] if result.note else []) + search_failures(rows, report.info)
    doubts = [] if report.flagged else unsearched_labels(rows)
    report.reasons = blocking + doubts
    report.note = "; ".join(report.reasons)
    if report.reasons:
        report.verdict = "inconclusive"
    else:
        report.verdict = "backdoored" if report.flagged else "clean"


# A class holding this many times the median class's share of the scanned data is "frequent". Picked by
# hand, not chosen on the zoo: on GTSRB's test split 17 of 43 classes qualify, real backdoor targets among
# them, so the caution asks for a look and never changes the verdict.
FREQUENT_SHARE = 2.0


def frequent_flagged(report: Report) -> list[LabelRow]:
    """Flagged labels that are among the scanned data's frequent classes. On the zoo's tuning half a GTSRB
    label's share of the training data explains much of its trigger's size, on clean models too
    (benchmarks/prior_effect.py): a small trigger for a frequent class is weaker evidence. Not those the
    class-frequency correction moved already (flagged then, they stand out beyond their class's line)."""
    share, median = report.info.label_share, median_share(report.info)
    if len(share) != len(report.info.class_names) or median <= 0:
        return []
    return [r for r in report.labels
            if r.flagged and r.frequency_factor == 1.0 and share[r.label] >= FREQUENT_SHARE * median]


def median_share(info: ScanInfo) -> float:
    """The median share among the classes present in the scanned data (0 when unknown: reports from
    before it was recorded); an absent class would pull the median down and make others look frequent."""
    present = [v for v in info.label_share if v > 0]
    return float(np.median(present)) if present else 0.0


def search_failures(rows: list[LabelRow], info: ScanInfo) -> list[str]:
    """Reasons no verdict stands on this scan, whatever was flagged."""
    reasons = []
    classes = max(len(info.class_names), 2)
    chance = 1 / classes
    floor = chance + CHANCE_MARGIN * (1 - chance)
    if info.clean_accuracy < floor:  # NaN accuracy fails the comparison: no data, no claim
        reasons.append(f"clean accuracy {info.clean_accuracy:.1%} is near chance ({chance:.1%} for {classes} "
                       "classes): the model does not recognise these inputs (check [model].mean/std, the input "
                       "range and the labels), so trigger sizes mean nothing")
    converged = sum(r.converged for r in rows)
    if rows and converged < MIN_CONVERGED * len(rows):
        reasons.append(f"only {converged} of {len(rows)} labels reached the attack success threshold: the search "
                       "did not work on this model (try a larger budget, or check the model and data)")
    return reasons


def unsearched_labels(rows: list[LabelRow]) -> list[str]:
    """Labels whose trigger is unknown (NaN loss): with nothing flagged, one of them may be the backdoor."""
    lost = [r.label for r in rows if not r.converged and any(t["stop_reason"] == "nan" for t in r.trials)]
    if not lost:
        return []
    return [f"the loss became NaN for label(s) {', '.join(map(str, lost))} before a trigger was found, so "
            "nothing can be said about them"]
