"""The MAD outlier test over the labels' reversed-trigger L1 norms (notes section 3)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_CONSTANT = 1.4826  # makes MAD a consistent estimator of the std for normal data


@dataclass
class OutlierResult:
    median: float
    mad: float
    anomaly_index: list[float]  # per input value, (median - l1) / MAD; 0.0 everywhere when MAD == 0
    flagged: list[bool]
    note: str = ""  # why the test could not decide, if it could not


def mad_outliers(l1: list[float], threshold: float = 2.0, eligible: list[bool] | None = None
                 ) -> OutlierResult:
    """Anomaly index of each L1 norm; flagged = l1 <= median and index > threshold (and eligible).

    `eligible` lets labels whose search never reached the attack threshold count in the statistics
    without ever being flagged.
    """
    values = np.asarray(l1, dtype=np.float64)
    eligible = [True] * len(values) if eligible is None else eligible
    if len(values) < 3:
        return OutlierResult(float(np.median(values)) if len(values) else 0.0, 0.0, [0.0] * len(values),
                             [False] * len(values), "fewer than 3 labels: no outlier test possible")
    median = float(np.median(values))
    mad = MAD_CONSTANT * float(np.median(np.abs(values - median)))
    if mad <= 1e-12 * max(1.0, abs(median)):
        return OutlierResult(median, 0.0, [0.0] * len(values), [False] * len(values),
                             "MAD is 0 (at least half the L1 norms are equal): no outlier test possible")
    index = (median - values) / mad
    flagged = [bool(v <= median and a > threshold and ok) for v, a, ok in zip(values, index, eligible,
                                                                              strict=True)]
    return OutlierResult(median, mad, index.tolist(), flagged)
