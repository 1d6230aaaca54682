"""The report: finished trials in, one typed row per label, the verdict out (decide.py holds the rule).

`Report` is what the engine returns, writes to report.json and reads back; the console, the app,
mitigation and the benchmarks all consume it. A run folder killed before it wrote its first report.json
gets a partial report rebuilt from its finished trials (rebuilt_report).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nc_engine.detectors.neural_cleanse.screening import Selection, scale_shift
from nc_engine.errors import RunFolderError
from nc_engine.run.runfolder import RunFolder
from nc_engine.run.trial import TrialRecord, full_searches, screened_searches
from nc_engine.verdict.decide import decide
from nc_engine.verdict.field_types import wrong_field
from nc_engine.verdict.rows import LabelRow, ScanInfo, label_rows

SCHEMA = 2  # 2: run_dir recorded; 1 (read too): without it
READABLE_SCHEMAS = (1, 2)
CSV_COLUMNS = [
    "label",
    "name",
    "l1_norm",
    "asr",
    "anomaly_index",
    "cutoff_l1",
    "flagged",
    "converged",
    "steps",
    "seconds",
    "mask_png",
]


@dataclass(kw_only=True)
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
    detectors: dict[str, Any] = field(default_factory=dict)  # detectors besides Neural Cleanse: name -> evidence
    fired: list[str] = field(default_factory=list)  # the detectors that flagged a label (with others run)

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
            rows = [LabelRow.from_dict(row) for row in data["labels"]]
            top = {
                f.name: data[f.name]
                for f in dataclasses.fields(cls)
                if f.name not in ("info", "labels") and f.name in data
            }
            report = cls(**top, info=info, labels=rows)
        except (KeyError, TypeError) as exc:
            raise RunFolderError(f"{where}: not a report written by nc-tui ({type(exc).__name__}: {exc})") from None
        for what, obj in [("", report), ("", info)] + [(f"labels[{n}].", row) for n, row in enumerate(rows)]:
            wrong = wrong_field(obj, skip=("info", "labels"))
            if wrong is not None:
                raise RunFolderError(f"{where}: not a report written by nc-tui ({what}{wrong})")
        return report

    @classmethod
    def read(cls, run: str | Path) -> Report:
        """The report of a run folder; run_dir is where it was found, wherever the folder has moved. A run
        killed before its first report.json gets a partial report rebuilt from its finished trials."""
        folder = RunFolder.existing(run)
        if not folder.has_report() and folder.config_path.is_file():
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


def build_report(
    trials: list[TrialRecord],
    *,
    labels_planned: list[int],
    threshold: float,
    statistic: str,
    info: ScanInfo,
    run_dir: str = "",
    faults: list[str] | None = None,
    selection: Selection | None = None,
    spread_floor: float = 0.0,
    saved_running: int = 0,
    frequency_correction: bool = False,
) -> Report:
    """The report of the trials so far: `complete` when every planned (label, trial) has finished, or at
    once when `faults` say no search can work on the model (then the verdict is inconclusive). A screened
    scan (`selection` made from its screening pass) is complete once its confirmed labels are.
    `saved_running`: searches a stop saved mid-way, which a resume continues. `frequency_correction`: judge
    labels from the class-frequency line of the scanned data's shares (class_frequency.py)."""
    rows = label_rows(full_searches(trials), info.class_names)
    done = {r.label for r in rows if len(r.trials) >= info.trials_per_label}
    needed = set(selection.confirmed) if selection else set(labels_planned)
    report = Report(
        schema=SCHEMA,
        complete=needed <= done,
        verdict=None,
        flagged=[],
        median_l1=None,
        mad=None,
        threshold=threshold,
        statistic=statistic,
        cutoff_l1=None,
        note="",
        info=info,
        labels_planned=labels_planned,
        labels=rows,
        run_dir=run_dir,
        spread_floor=spread_floor,
        frequency_correction=frequency_correction,
    )
    if faults:
        report.complete, report.verdict, report.reasons = True, "inconclusive", list(faults)
        report.note = "; ".join(faults)
        return report
    if not report.complete:
        running = f" ({saved_running} more search(es) saved mid-way)" if saved_running else ""
        report.note = (
            f"unfinished: {len(done & needed)} of {len(needed)} labels done{running}; "
            f"resume with nc-tui scan --resume {run_dir or 'RUN_DIR'}"
        )
        return report
    if selection is not None:
        screened = label_rows(screened_searches(trials), info.class_names)
        report.labels = merge_screened(report, screened, selection)
    finished = [r for r in report.labels if r.label in done or r.stage == "screened"]
    decided = decide(finished, info, threshold, statistic, spread_floor, frequency_correction)
    return dataclasses.replace(report, **dataclasses.asdict(decided))


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
    report.screening = {
        "candidates": selection.candidates,
        "references": selection.references,
        "second_round": selection.second_round,
        "log_shift": shift,
        "why": {str(k): v for k, v in sorted(selection.why.items())},
    }
    return sorted([*confirmed.values(), *rest], key=lambda r: r.label)


# ---- a report rebuilt from a run folder killed before its first report.json


def _started(folder: RunFolder) -> dict[str, Any]:
    """The last scan_started event (the class names, device and clean accuracy of the latest run)."""
    starts = [e for e in folder.read_events() if e.get("event") == "scan_started"]
    return starts[-1] if starts else {}


def _shares(started: dict, classes: int) -> list[float]:
    """The scan data's class shares as the scan started with them; none when absent or malformed."""
    share = started.get("label_share")
    ok = isinstance(share, list) and len(share) == classes and all(isinstance(v, int | float) for v in share)
    return [float(v) for v in share] if ok and isinstance(share, list) else []


def rebuilt_report(folder: RunFolder) -> Report:
    cfg = folder.read_config().resolved()
    started = _started(folder)
    labels = list(range(cfg.model.num_classes)) if cfg.scan.labels == "all" else list(cfg.scan.labels)
    if not labels and isinstance(started.get("labels"), list):
        labels = [int(v) for v in started["labels"]]
    names = started.get("class_names")
    names = [str(n) for n in names] if isinstance(names, list) else []
    accuracy = started.get("clean_accuracy")
    info = ScanInfo(
        clean_accuracy=float(accuracy) if isinstance(accuracy, int | float) else math.nan,
        device=str(started.get("device", "")),
        strategy=cfg.scan.strategy,
        group_size=int(started.get("group_size") or 0),
        preset=cfg.scan.preset,
        samples=int(started.get("samples") or cfg.scan.samples or 0),
        asr_samples=int(started.get("asr_samples") or cfg.scan.asr_samples or 0),
        model=str(cfg.resolve_path(cfg.model.path)),
        data=str(cfg.resolve_path(cfg.data.path)),
        class_names=names,
        trials_per_label=cfg.scan.trials or 1,
        label_share=_shares(started, len(names)),
    )
    run_dir = str(folder.path.resolve())
    trials = folder.trials(cfg.model.input_shape)  # damaged trials are left out, as a resume would
    report = build_report(
        trials,
        labels_planned=labels,
        threshold=cfg.detect.cut(),
        statistic=cfg.detect.statistic,
        info=info,
        run_dir=run_dir,
        spread_floor=cfg.detect.floor(),
        frequency_correction=cfg.detect.frequency_correction,
    )
    report.note = (
        f"rebuilt from {len(trials)} finished trial(s): the scan stopped before writing its report; " + report.note
    )
    return report
