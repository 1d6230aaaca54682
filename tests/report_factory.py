"""Reports and label rows as the verdict code reads them, with the fields a test does not look at filled in."""

from __future__ import annotations

from typing import Any

from nc_engine.verdict.report import Report
from nc_engine.verdict.rows import LabelRow, ScanInfo


def report(verdict: str, flagged: list[int], labels: int = 4, **fields: Any) -> Report:
    """A complete log-L1 report of `labels` labels with no rows, unless `fields` say otherwise."""
    base: dict[str, Any] = {"schema": 2, "complete": True, "median_l1": 20.0, "mad": 0.3, "threshold": 1.11}
    base.update(statistic="log_l1", cutoff_l1=8.0, note="", info=ScanInfo(), labels_planned=list(range(labels)))
    return Report(verdict=verdict, flagged=flagged, labels=fields.pop("labels", []), **{**base, **fields})


def label_row(label: int, **fields: Any) -> LabelRow:
    """An unflagged, converged label at L1 30 with no pictures, unless `fields` say otherwise."""
    base: dict[str, Any] = {"name": str(label), "l1_norm": 30.0, "asr": 1.0, "anomaly_index": 0.2}
    base.update(flagged=False, converged=True, kept_trial=0, steps=10, seconds=1.0, trials=[])
    base.update(mask_png="", pattern_png="", fusion_png="", trigger_npz="")
    return LabelRow(label=label, **{**base, **fields})
