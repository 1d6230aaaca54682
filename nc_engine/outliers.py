"""The MAD outlier test over the labels' reversed-trigger L1 norms (notes section 3).

Two statistics: "l1", the paper's (anomaly index on the L1 norms themselves), and "log_l1", the same
test on log L1. L1 norms are positive and spread multiplicatively (a clean model's easy labels need
triggers a few times smaller than its hard ones), so on the raw scale one easy label inflates or
deflates the MAD; on the log scale "k times smaller than typical" counts the same for every model.
benchmarks/RESULTS.md measures both on the zoo: at equal false-positive rates log_l1 finds more.
"""

from __future__ import annotations

from dataclasses import dataclass

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


STATISTICS = ("log_l1", "l1")
DEFAULT_THRESHOLD = {"log_l1": 3.5, "l1": 2.0}  # log_l1: chosen on the zoo; l1: the paper's


def mad_outliers(l1: list[float], threshold: float = 2.0, eligible: list[bool] | None = None,
                 statistic: str = "l1") -> OutlierResult:
    """Anomaly index of each L1 norm; flagged = l1 <= median and index > threshold (and eligible).

    `eligible` lets labels whose search never reached the attack threshold count in the statistics
    without ever being flagged.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    values = np.asarray(l1, dtype=np.float64)
    if statistic == "log_l1":
        values = np.log(np.maximum(values, 1e-6))  # a mask of all zeros cannot succeed; guard anyway
    back = np.exp if statistic == "log_l1" else (lambda v: v)
    eligible = [True] * len(values) if eligible is None else eligible
    if len(values) < 3:
        median = float(back(np.median(values))) if len(values) else 0.0
        return OutlierResult(median, 0.0, 0.0, [0.0] * len(values), [False] * len(values),
                             "fewer than 3 labels: no outlier test possible")
    median = float(np.median(values))
    mad = MAD_CONSTANT * float(np.median(np.abs(values - median)))
    if mad <= 1e-12 * max(1.0, abs(median)):
        return OutlierResult(float(back(median)), 0.0, 0.0, [0.0] * len(values), [False] * len(values),
                             "MAD is 0 (at least half the L1 norms are equal): no outlier test possible")
    index = (median - values) / mad
    flagged = [bool(v <= median and a > threshold and ok) for v, a, ok in zip(values, index, eligible,
                                                                              strict=True)]
    return OutlierResult(float(back(median)), mad, float(back(median - threshold * mad)), index.tolist(), flagged)
