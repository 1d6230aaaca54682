"""Screen, then confirm: every label searched at a cheap budget, then only the candidates (and a few
ordinary labels as references) searched again at the full budget.

Why references: a screened trigger is larger than the one the full budget would find, so screened and
confirmed norms are not on one scale. The references (the ordinary labels nearest the screened median)
are searched at both budgets; the median of their log ratio moves every unconfirmed label's norm onto the
confirmed scale before the outlier test, and only confirmed labels can be flagged. A label whose screened
search never reached the attack threshold is always confirmed: the screen has not measured it, and a
backdoor target the screen has not yet found looks like any other unfinished label (a third-party GTSRB
model's target was lost that way when only the found triggers were ranked). When the flagged
labels differ between the references' smallest, median and largest ratio, the verdict hangs on the
shift, and a second round confirms as many references again. Confirmed labels use the same seeds as a
plain scan, so their numbers are exactly what a plain scan would report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from nc_engine.verdict.class_frequency import aligned, corrected
from nc_engine.verdict.outliers import mad_outliers

MIN_CANDIDATES = 2  # the smallest screened triggers are always confirmed, whatever their index
SCREEN_SEED_OFFSET = 10_000  # screening jobs draw seeds apart from the confirmation's (= a plain scan's)


@dataclass
class Selection:
    """Which labels the confirmation searches again, and why each was (or was not) chosen."""

    candidates: list[int]
    references: list[int]
    why: dict[int, str] = field(default_factory=dict)
    second_round: list[int] = field(default_factory=list)  # references added when the shift decided the verdict

    @property
    def confirmed(self) -> list[int]:
        return sorted(set(self.candidates) | set(self.references))


def screening_wanted(mode: str, labels: int, min_labels: int) -> bool:
    """ "auto" screens only when there are enough labels for it to save work."""
    return mode == "on" or (mode == "auto" and labels >= min_labels)


def subset_indices(n: int, k: int) -> np.ndarray:
    """k of n optimisation samples spread evenly over them: the samples are sorted by index, and many
    datasets are stored class by class, so the first k would hold few classes."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int))


def choose(
    l1: dict[int, float],
    converged: dict[int, bool],
    statistic: str,
    threshold: float,
    margin: float,
    references: int,
    spread_floor: float = 0.0,
    share: list[float] | None = None,
) -> Selection:
    """Candidates: converged labels whose screened anomaly index is within `margin` of the threshold,
    plus the MIN_CANDIDATES smallest triggers; references: the ordinary labels nearest the median.
    `share`: each label's share of the scanned data, to judge from the class-frequency line (None: not)."""
    labels = sorted(l1)
    values, _ = corrected([l1[k] for k in labels], aligned(labels, share or []))
    test = mad_outliers(
        values, max(0.0, threshold - margin), [converged[k] for k in labels], statistic, spread_floor=spread_floor
    )
    if test.note:  # no sound screening statistic (too few labels, MAD 0): confirm every label
        return Selection(labels, [], {k: f"confirmed: screening could not rank ({test.note})" for k in labels})
    index = dict(zip(labels, test.anomaly_index, strict=True))
    why = {
        k: f"candidate: screened anomaly index {index[k]:.2f}, within {margin:g} of the threshold {threshold:g}"
        for k, flag in zip(labels, test.flagged, strict=True)
        if flag
    }
    smallest = sorted((k for k in labels if converged[k]), key=lambda k: l1[k])[:MIN_CANDIDATES]
    for k in smallest:
        why.setdefault(k, f"candidate: among the {MIN_CANDIDATES} smallest screened triggers (index {index[k]:.2f})")
    for k in labels:  # the screen ranked only the labels it found a trigger for
        if not converged[k]:
            why.setdefault(
                k,
                "candidate: its screened search never reached the attack threshold, so its screened size says nothing",
            )
    candidates = sorted(why)
    picks = median_references(l1, [k for k in labels if k not in why], references)
    rest = sorted((k for k in labels if k not in why), key=lambda k: l1[k])
    for k in picks:
        why[k] = (
            f"reference for the median: screened L1 {l1[k]:.1f}, rank {rest.index(k) + 1} of {len(rest)} "
            "ordinary labels"
        )
    for k in rest:
        why.setdefault(k, f"not confirmed: screened anomaly index {index[k]:.2f}, far below the threshold")
    return Selection(candidates, picks, why)


def median_references(l1: dict[int, float], ordinary: list[int], count: int) -> list[int]:
    """The `count` ordinary labels whose screened norms lie nearest the screened median (on the log scale).

    Why there: the shift they measure moves the median, and the index is measured from the median; the
    floored spread hardly depends on it. Labels near the median are also the least unusual ones."""
    if not ordinary or count <= 0:
        return []
    centre = float(np.median(np.log([max(v, 1e-6) for v in l1.values()])))
    near = sorted(ordinary, key=lambda k: (abs(math.log(max(l1[k], 1e-6)) - centre), k))
    return sorted(near[:count])


def log_ratios(screened: dict[int, float], confirmed: dict[int, float], references: list[int]) -> list[float]:
    """log(confirmed / screened norm) of each reference searched at both budgets."""
    return [
        math.log(confirmed[k] / screened[k])
        for k in references
        if k in confirmed and screened.get(k, 0) > 0 and confirmed[k] > 0
    ]


def scale_shift(screened: dict[int, float], confirmed: dict[int, float], references: list[int]) -> float:
    """Median log ratio confirmed/screened over the references: what moves a screened norm onto the
    confirmed scale (0 when no reference has both)."""
    ratios = log_ratios(screened, confirmed, references)
    return float(np.median(ratios)) if ratios else 0.0


def shift_decides(
    screened: dict[int, float],
    confirmed: dict[int, float],
    converged: dict[int, bool],
    selection: Selection,
    statistic: str,
    threshold: float,
    spread_floor: float = 0.0,
    share: list[float] | None = None,
) -> bool:
    """Whether the verdict hangs on the scale shift: the labels flagged with the references' median log
    ratio differ from those flagged with their smallest or their largest. Then more references are due."""
    ratios = log_ratios(screened, confirmed, selection.references)
    if len(ratios) < 2:
        return False
    labels = sorted(screened)
    ok = [k in confirmed and converged.get(k, False) for k in labels]
    flagged = []
    for shift in (min(ratios), float(np.median(ratios)), max(ratios)):
        values = [confirmed[k] if k in confirmed else screened[k] * math.exp(shift) for k in labels]
        values, _ = corrected(values, aligned(labels, share or []))
        test = mad_outliers(values, threshold, ok, statistic, spread_floor=spread_floor)
        flagged.append(tuple(k for k, f in zip(labels, test.flagged, strict=True) if f))
    return len(set(flagged)) > 1


def widen(selection: Selection, screened: dict[int, float], count: int) -> Selection:
    """The selection with `count` more references, the ordinary labels next nearest the screened median."""
    ordinary = [k for k in screened if k not in selection.confirmed]
    more = median_references(screened, ordinary, count)
    why = dict(selection.why)
    for k in more:
        why[k] = f"reference, second round (the verdict depended on the scale shift): screened L1 {screened[k]:.1f}"
    return Selection(selection.candidates, sorted(selection.references + more), why, second_round=more)
