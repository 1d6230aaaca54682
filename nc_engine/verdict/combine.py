"""One verdict from every detector a scan ran: Neural Cleanse's (build_report) and the others'.

A label any detector flags makes the model `backdoored`, and the report says which detector fired. An
`inconclusive` Neural Cleanse verdict stays inconclusive (the model or the data failed a check that
every detector stands on); the other detectors' evidence is recorded beside it either way.
"""

from __future__ import annotations

import dataclasses

from nc_engine.detectors.result import DetectorResult
from nc_engine.verdict.report import Report

NEURAL_CLEANSE = "neural_cleanse"


def with_detectors(report: Report, results: dict[str, DetectorResult]) -> Report:
    """The report with each extra detector's evidence and the verdict they support together."""
    if not results:
        return report
    evidence = {name: result.to_dict() for name, result in results.items()}
    if not report.complete or report.verdict not in ("clean", "backdoored"):
        return dataclasses.replace(report, detectors=evidence)
    fired = ([NEURAL_CLEANSE] if report.flagged else []) + [n for n, r in results.items() if r.flagged]
    flagged = sorted(set(report.flagged) | {k for r in results.values() for k in r.flagged})
    verdict = "backdoored" if flagged else "clean"
    return dataclasses.replace(report, detectors=evidence, fired=fired, flagged=flagged, verdict=verdict)
