"""An audit's summary: one row per model, written as audit.csv and audit.json (atomically) after each
model and at the end, and as a plain-text table for the console."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nc_engine.files import parse_json, write_csv, write_json
from nc_engine.run.runfolder import writing
from nc_engine.verdict.formatting import fmt_num
from nc_engine.verdict.report import Report

SUMMARY_CSV, SUMMARY_JSON = "audit.csv", "audit.json"
COLUMNS = ["model", "config", "verdict", "flagged", "reasons", "accuracy", "seconds", "run_folder"]
# verdicts beyond a scan's own three: an unreadable model, a stopped scan, a model the audit has not reached
ERROR, UNFINISHED, NOT_RUN = "error", "unfinished", "not run"


@dataclass
class AuditRow:
    model: str
    config: str
    verdict: str = NOT_RUN
    flagged: list[int] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    accuracy: float | None = None  # clean accuracy on the scan samples
    seconds: float = 0.0
    run_folder: str = ""

    @classmethod
    def of_report(cls, model: str, config: str, report: Report) -> AuditRow:
        accuracy = report.info.clean_accuracy
        return cls(
            model,
            config,
            report.verdict if report.complete and report.verdict else UNFINISHED,
            list(report.flagged),
            list(report.reasons),
            None if accuracy is None or math.isnan(accuracy) else accuracy,
            report.info.seconds,
            report.run_dir,
        )

    def csv_row(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row["flagged"] = " ".join(map(str, self.flagged))
        row["reasons"] = "; ".join(self.reasons)
        row["accuracy"] = "" if self.accuracy is None else f"{self.accuracy:.4f}"
        row["seconds"] = f"{self.seconds:.1f}"
        return row


def summary_paths(out: Path) -> tuple[Path, Path]:
    return out / SUMMARY_CSV, out / SUMMARY_JSON


def write_summary(out: Path, spec: Path, rows: list[AuditRow], complete: bool) -> None:
    csv_path, json_path = summary_paths(out)
    with writing(out, "the audit summary"):  # a full disk or a read-only folder: one line naming it
        out.mkdir(parents=True, exist_ok=True)
        write_csv(csv_path, COLUMNS, [r.csv_row() for r in rows])
        write_json(
            json_path, {"spec": str(spec), "complete": complete, "models": [dataclasses.asdict(r) for r in rows]}
        )


def read_summary(out: Path) -> dict[str, Any]:
    """audit.json as written (for tests and scripts)."""
    return parse_json(summary_paths(out)[1].read_text(encoding="utf-8"))


def verdict_text(row: AuditRow) -> str:
    return row.verdict.upper() if row.verdict in ("backdoored", "clean", "inconclusive", ERROR) else row.verdict


def summary_lines(rows: list[AuditRow]) -> list[str]:
    """The summary as a plain table, then the reasons of every inconclusive or failed model."""
    width = max([5, *(len(r.model) for r in rows)])
    lines = [f"{'model'.ljust(width)}  verdict       flagged    accuracy  seconds  run folder"]
    for r in rows:
        flagged = " ".join(map(str, r.flagged)) or "-"
        lines.append(
            f"{r.model.ljust(width)}  {verdict_text(r):12}  {flagged[:9]:9}  "
            f"{fmt_num(r.accuracy, '.1%'):>8}  {r.seconds:7.1f}  {r.run_folder or '-'}"
        )
    for r in rows:
        for reason in r.reasons:
            lines.append(f"{r.model}: {reason}")
    return lines
