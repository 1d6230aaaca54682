"""The verdict rule: the outlier test over the labels' trigger sizes (after the class-frequency
correction), and when no verdict can stand on a scan (the model does not recognise the data, the search
did not work, a label's loss became NaN)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nc_engine.verdict.class_frequency import aligned, frequency_fit
from nc_engine.verdict.outliers import mad_outliers
from nc_engine.verdict.rows import LabelRow, ScanInfo

CHANCE_MARGIN = 0.1  # accuracy within this share of the way from chance to perfect counts as "near chance"
MIN_CONVERGED = 0.5  # below this share of labels reaching the attack threshold, the search did not work


def can_flag(row: LabelRow) -> bool:
    """A label the outlier test may flag: its search converged and, in a screened scan, it was confirmed."""
    return row.converged and row.stage != "screened"


@dataclass(frozen=True)
class Decision:
    """What the outlier test concluded: the report's verdict fields (build_report puts them in)."""

    verdict: str
    flagged: list[int]
    median_l1: float | None
    mad: float | None
    cutoff_l1: float | None
    frequency_slope: float
    reasons: list[str]
    note: str


def decide(
    rows: list[LabelRow],
    info: ScanInfo,
    threshold: float,
    statistic: str,
    spread_floor: float = 0.0,
    frequency_correction: bool = False,
) -> Decision:
    """The MAD test over the finished rows (each row gets its anomaly index, flag and frequency factor),
    and the verdict it supports: backdoored, clean, or inconclusive with its reasons. Never clean when
    the search did not work."""
    eligible = [can_flag(r) for r in rows]
    share = aligned([r.label for r in rows], info.label_share) if frequency_correction else []
    raw = [r.l1_norm for r in rows]
    factors, slope = frequency_fit(raw, share)
    for r, factor in zip(rows, factors, strict=True):
        r.frequency_factor = factor
    result = mad_outliers(
        [v / f for v, f in zip(raw, factors, strict=True)], threshold, eligible, statistic, spread_floor=spread_floor
    )
    for r, index, flag in zip(rows, result.anomaly_index, result.flagged, strict=True):
        r.anomaly_index = index if not result.note else None
        r.flagged = flag
    flagged = [r.label for r in rows if r.flagged]
    blocking = ([result.note] if result.note else []) + search_failures(rows, info)
    reasons = blocking + ([] if flagged else unsearched_labels(rows))
    verdict = "inconclusive" if reasons else ("backdoored" if flagged else "clean")
    return Decision(
        verdict, flagged, result.median, result.mad, result.cutoff or None, slope, reasons, "; ".join(reasons)
    )


# A class holding this many times the median class's share of the scanned data is "frequent". Picked by
# hand, not chosen on the zoo: on GTSRB's test split 17 of 43 classes qualify, real backdoor targets among
# them, so the caution asks for a look and never changes the verdict.
FREQUENT_SHARE = 2.0


def frequent_flagged(rows: list[LabelRow], info: ScanInfo) -> list[LabelRow]:
    """Flagged labels that are among the scanned data's frequent classes. On the zoo's tuning half a GTSRB
    label's share of the training data explains much of its trigger's size, on clean models too
    (evaluation/prior_effect.py): a small trigger for a frequent class is weaker evidence. Not those the
    class-frequency correction moved already (flagged then, they stand out beyond their class's line)."""
    share, median = info.label_share, median_share(info)
    if len(share) != len(info.class_names) or median <= 0:
        return []
    return [r for r in rows if r.flagged and r.frequency_factor == 1.0 and share[r.label] >= FREQUENT_SHARE * median]


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
        reasons.append(
            f"clean accuracy {info.clean_accuracy:.1%} is near chance ({chance:.1%} for {classes} "
            "classes): the model does not recognise these inputs (check [model].mean/std, the input "
            "range and the labels), so trigger sizes mean nothing"
        )
    converged = sum(r.converged for r in rows)
    if rows and converged < MIN_CONVERGED * len(rows):
        reasons.append(
            f"only {converged} of {len(rows)} labels reached the attack success threshold: the search "
            "did not work on this model (try a larger budget, or check the model and data)"
        )
    return reasons


def unsearched_labels(rows: list[LabelRow]) -> list[str]:
    """Labels whose trigger is unknown (NaN loss): with nothing flagged, one of them may be the backdoor."""
    lost = [r.label for r in rows if not r.converged and any(t.stop_reason == "nan" for t in r.trials)]
    if not lost:
        return []
    return [
        f"the loss became NaN for label(s) {', '.join(map(str, lost))} before a trigger was found, so "
        "nothing can be said about them"
    ]
