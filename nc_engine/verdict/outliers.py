"""The MAD outlier test over the labels' reversed-trigger L1 norms (the paper's section IV-C).

Two statistics: "l1", the paper's (anomaly index on the L1 norms themselves), and "log_l1", the same
test on log L1. L1 norms are positive and spread multiplicatively (a clean model's easy labels need
triggers a few times smaller than its hard ones), so on the raw scale one easy label inflates or
deflates the MAD; on the log scale "k times smaller than typical" counts the same for every model.
evaluation/campaigns/main-gpu/RESULTS.md measures both on the zoo: at equal false-positive rates log_l1 finds more.

Leave-one-out (`leave_one_out=True`, `anomaly_scores`): each label is judged against the median and MAD
of the other labels, so a backdoor target's own tiny norm cannot widen the MAD it is measured by.
`family_wise` rescales indices for the number of labels (Sidak). evaluation/RULES.md chooses between
these rules on one half of the zoo and reports them on the other.

Spread floor (`spread_floor`, log_l1 only): the index divides by max(MAD, floor). A clean model whose
labels happen to need near-equal triggers has a tiny MAD of log L1 (0.08 on one zoo model), and then a
label only 40% below the median scores 6 MADs; the floor says how far labels of a clean model scatter
anyway, so "anomalous" means smaller than that scatter too. RULES.md chooses it on the tuning half.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

MAD_CONSTANT = 1.4826  # makes MAD a consistent estimator of the std for normal data


@dataclass
class OutlierResult:
    median: float  # of the L1 norms (log_l1: exp of the median log L1)
    mad: float  # in the statistic's units (log_l1: of log L1)
    cutoff: float  # labels with an L1 norm below this (and eligible) are flagged
    anomaly_index: list[float]  # per input value, (median - l1) / MAD; 0.0 everywhere when MAD == 0
    flagged: list[bool]
    note: str = ""  # why the test could not decide, if it could not
    spread: float = 0.0  # what the index divides by: max(mad, spread floor)


STATISTICS = ("log_l1", "l1")
# log_l1: threshold and floor chosen on the zoo's tuning half (evaluation/RULES.md); l1: the paper's, no floor
DEFAULT_THRESHOLD = {"log_l1": 1.11, "l1": 2.0}
DEFAULT_SPREAD_FLOOR = {"log_l1": 0.7, "l1": 0.0}


def _on_scale(l1: list[float], statistic: str) -> np.ndarray:
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    values = np.asarray(l1, dtype=np.float64)
    if statistic == "log_l1":
        values = np.log(np.maximum(values, 1e-6))  # a mask of all zeros cannot succeed; guard anyway
    return values


def _median_mad(values: np.ndarray, floor: float = 0.0) -> tuple[float, float]:
    """Median and MAD; `floor` only lifts a nonzero MAD (a MAD of 0 stays 0: no test is possible)."""
    median = float(np.median(values))
    mad = MAD_CONSTANT * float(np.median(np.abs(values - median)))
    return median, (max(mad, floor) if not _mad_is_zero(mad, median) else mad)


def _mad_is_zero(mad: float, median: float) -> bool:
    return mad <= 1e-12 * max(1.0, abs(median))


def anomaly_scores(
    l1: list[float], statistic: str = "l1", leave_one_out: bool = False, spread_floor: float = 0.0
) -> list[float]:
    """Per-label anomaly index (median - value) / MAD on the statistic's scale; higher = more anomalous.

    With `leave_one_out` each label's median and MAD come from the other labels only: a lone small norm
    otherwise sits inside the spread it is judged by (with 10 labels it moves the MAD noticeably).
    0.0 wherever no test is possible (fewer than 3 labels, or a MAD of 0), as in `mad_outliers`.
    `spread_floor`: the smallest spread the index divides by (see the module's doc).
    """
    values = _on_scale(l1, statistic)
    if len(values) < 3:
        return [0.0] * len(values)
    if not leave_one_out:
        median, mad = _median_mad(values, spread_floor)
        return [0.0] * len(values) if _mad_is_zero(mad, median) else ((median - values) / mad).tolist()
    scores = []
    for k in range(len(values)):
        median, mad = _median_mad(np.delete(values, k), spread_floor)
        scores.append(0.0 if _mad_is_zero(mad, median) else float((median - values[k]) / mad))
    return scores


def family_wise(scores: list[float]) -> list[float]:
    """Indices rescaled so one threshold means the same chance of a false alarm for any number of labels.

    Each index z is read as a normal tail probability p, made family-wise over the K labels (Sidak:
    1 - (1 - p)^K) and mapped back to a z. A 43-label model has more chances than a 10-label one for some
    clean label to land far out; without this, one threshold is stricter on the fewer labels.
    """
    k = len(scores)
    out = []
    for z in scores:
        p = 0.5 * math.erfc(z / math.sqrt(2))  # upper-tail probability, exact far out (erfc, not 1 - cdf)
        p_family = -math.expm1(k * math.log1p(-min(p, 1 - 1e-16)))
        if p_family <= 0.0:  # p underflowed (z > ~37): the correction is negligible there
            out.append(float(z))
        else:
            out.append(-NormalDist().inv_cdf(min(p_family, 1 - 1e-16)))
    return out


def mad_outliers(
    l1: list[float],
    threshold: float = 2.0,
    eligible: list[bool] | None = None,
    statistic: str = "l1",
    *,
    leave_one_out: bool = False,
    spread_floor: float = 0.0,
) -> OutlierResult:
    """Anomaly index of each L1 norm; flagged = l1 <= median and index > threshold (and eligible).

    `eligible` lets labels whose search never reached the attack threshold count in the statistics
    without ever being flagged. `leave_one_out`: see `anomaly_scores`; the result's median and MAD are
    still those of all labels, and its cutoff is the flagging line for the smallest norm. `spread_floor`:
    the index divides by max(MAD, floor); the result's `mad` is the MAD measured, `spread` the divisor.
    """
    if leave_one_out:
        return _loo_outliers(l1, threshold, eligible, statistic, spread_floor)
    values = _on_scale(l1, statistic)
    back = np.exp if statistic == "log_l1" else (lambda v: v)
    eligible = [True] * len(values) if eligible is None else eligible
    if len(values) < 3:
        return _too_few(values, back)
    median, mad = _median_mad(values)
    if _mad_is_zero(mad, median):
        return OutlierResult(
            float(back(median)),
            0.0,
            0.0,
            [0.0] * len(values),
            [False] * len(values),
            "MAD is 0 (at least half the L1 norms are equal): no outlier test possible",
        )
    spread = max(mad, spread_floor)
    index = (median - values) / spread
    flagged = [bool(v <= median and a > threshold and ok) for v, a, ok in zip(values, index, eligible, strict=True)]
    return OutlierResult(
        float(back(median)), mad, float(back(median - threshold * spread)), index.tolist(), flagged, spread=spread
    )


def _too_few(values: np.ndarray, back: Callable) -> OutlierResult:
    median = float(back(np.median(values))) if len(values) else 0.0
    return OutlierResult(
        median, 0.0, 0.0, [0.0] * len(values), [False] * len(values), "fewer than 3 labels: no outlier test possible"
    )


def _loo_outliers(
    l1: list[float], threshold: float, eligible: list[bool] | None, statistic: str, floor: float
) -> OutlierResult:
    values = _on_scale(l1, statistic)
    back = math.exp if statistic == "log_l1" else float
    eligible = [True] * len(values) if eligible is None else eligible
    if len(values) < 3:
        return _too_few(values, back)
    median, mad = _median_mad(values)
    index = anomaly_scores(l1, statistic, leave_one_out=True, spread_floor=floor)
    if not any(index):
        return OutlierResult(
            float(back(median)),
            mad,
            0.0,
            index,
            [False] * len(values),
            "MAD of the other labels is 0 for every label: no outlier test possible",
        )
    flagged = [bool(v <= median and a > threshold and ok) for v, a, ok in zip(values, index, eligible, strict=True)]
    low_median, low_mad = _median_mad(np.delete(values, int(np.argmin(values))), floor)
    return OutlierResult(float(back(median)), mad, float(back(low_median - threshold * low_mad)), index, flagged)
