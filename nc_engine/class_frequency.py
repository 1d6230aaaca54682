"""Class-frequency correction: a frequent class's trigger is small on clean models too.

A classifier trained on imbalanced data leans towards its frequent classes, so fewer pixels flip an image
to one of them. On the zoo's GTSRB tuning half a label's share of the data is rank-correlated 0.35-0.84
with how small its trigger is, on clean and backdoored models alike (benchmarks/prior_effect.py), and the
false alarms of the plain test are GTSRB's commonest signs. The correction fits a robust line (Theil-Sen:
the median of pairwise slopes, so a backdoor target or two cannot tilt it) of log L1 against the log share
of each class in the scanned data, and judges every label by its distance from that line instead of from
one common level. The scanned data's class shares stand in for the training set's (on GTSRB their class
ranks agree at 0.99).

It only ever removes the expected direction (frequent -> smaller): a rising line is left alone, since it
has no such explanation and removing it could hide a frequent-class target. It is a no-op when the
classes are (nearly) balanced: with shares within MIN_SHARE_RATIO of each other there is no spread of
frequency to fit a line on, only noise. benchmarks/RULES.md measures it on the tuning half.
"""

from __future__ import annotations

import math

import numpy as np

# Correct only when the commonest present class holds at least this many times the rarest one's share.
# MNIST's test split spans 1.27x, CIFAR-10's 1x, GTSRB's 12.5x: any value between them chooses the same.
MIN_SHARE_RATIO = 2.0
MIN_LABELS = 5  # fewer points than this give no usable line


def _present(l1: list[float], share: list[float]) -> list[int]:
    if len(share) != len(l1):
        return []
    return [k for k, s in enumerate(share) if s > 0 and l1[k] > 0 and math.isfinite(l1[k])]


def _theil_sen(x: np.ndarray, y: np.ndarray) -> float:
    """The median pairwise slope, clamped to <= 0; 0.0 with too few points or too little spread in x."""
    if len(x) < MIN_LABELS or x.max() - x.min() < math.log(MIN_SHARE_RATIO):
        return 0.0
    i, j = np.triu_indices(len(x), 1)
    apart = x[i] != x[j]
    return min(float(np.median((y[j] - y[i])[apart] / (x[j] - x[i])[apart])), 0.0)


def frequency_slope(l1: list[float], share: list[float]) -> float:
    """The line's slope over all labels present in the data: log L1 per log share (<= 0; 0.0 when there is
    nothing to correct, see the module's doc). What the report shows; each label is judged by its own."""
    present = _present(l1, share)
    if not present:
        return 0.0
    return _theil_sen(np.log([share[k] for k in present]), np.log([l1[k] for k in present]))


def frequency_factors(l1: list[float], share: list[float]) -> list[float]:
    """What each label's L1 norm is divided by to take out the line: exp(slope * (log share - centre)),
    centred on the median present class so a typical class keeps its norm; 1 for absent classes.

    Each label's slope is fitted without that label (leave-one-out): with one frequent class among equal
    ones, every pair that spans a frequency difference involves that class, so a line through all labels
    would be its own trigger and would explain its backdoor away."""
    present = _present(l1, share)
    factors = [1.0] * len(l1)
    if frequency_slope(l1, share) == 0.0:
        return factors
    x, y = np.log([share[k] for k in present]), np.log([l1[k] for k in present])
    centre = float(np.median(x))
    for n, k in enumerate(present):
        factors[k] = math.exp(_theil_sen(np.delete(x, n), np.delete(y, n)) * (x[n] - centre))
    return factors


def corrected(l1: list[float], share: list[float]) -> tuple[list[float], float]:
    """The L1 norms with the class-frequency line taken out, and the line's slope (0.0: left as they were).
    `share`: each label's share of the scanned data, in the order of `l1` ([]: no correction)."""
    factors = frequency_factors(l1, share)
    return [v / f for v, f in zip(l1, factors, strict=True)], frequency_slope(l1, share)


def aligned(labels: list[int], label_share: list[float]) -> list[float]:
    """The shares of `labels`, in their order ([] when the shares are unknown: no correction)."""
    if not label_share:
        return []
    return [label_share[k] if 0 <= k < len(label_share) else 0.0 for k in labels]
