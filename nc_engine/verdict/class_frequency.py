"""Class-frequency correction: a frequent class's trigger is small on clean models too.

A classifier trained on imbalanced data leans towards its frequent classes, so fewer pixels flip an image
to one of them. On the zoo's GTSRB tuning half a label's share of the data is rank-correlated 0.35-0.84
with how small its trigger is, on clean and backdoored models alike (evaluation/prior_effect.py), and the
false alarms of the plain test are GTSRB's commonest signs. The correction fits a robust line (Theil-Sen:
the median of pairwise slopes, so a backdoor target or two cannot tilt it) of log L1 against the log share
of each class in the scanned data, and judges every label by its distance from that line instead of from
one common level. The scanned data's class shares stand in for the training set's (on GTSRB their class
ranks agree at 0.99).

It only ever removes the expected direction (frequent -> smaller): a rising line is left alone, since it
has no such explanation and removing it could hide a frequent-class target. It is a no-op when the
classes are (nearly) balanced: with shares within MIN_SHARE_RATIO of each other there is no spread of
frequency to fit a line on, only noise. evaluation/RULES.md measures it on the tuning half.
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


def _spread_enough(x: np.ndarray) -> bool:
    return len(x) >= MIN_LABELS and x.max() - x.min() >= math.log(MIN_SHARE_RATIO)


def _pairwise(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The slopes of every pair of points apart in x, and each pair's two points (i < j)."""
    i, j = np.triu_indices(len(x), 1)
    apart = x[i] != x[j]
    i, j = i[apart], j[apart]
    return (y[j] - y[i]) / (x[j] - x[i]), i, j


def frequency_slope(l1: list[float], share: list[float]) -> float:
    """The Theil-Sen slope (median pairwise slope) of log L1 against log share over all labels present in
    the data, clamped to <= 0; 0.0 when there is nothing to correct (see the module's doc)."""
    present = _present(l1, share)
    x, y = np.log([share[k] for k in present]), np.log([l1[k] for k in present])
    if not present or not _spread_enough(x):
        return 0.0
    return min(float(np.median(_pairwise(x, y)[0])), 0.0)


def _nth_kept(ordered: np.ndarray, removed: np.ndarray, rank: int) -> float:
    """The rank-th smallest (from 0) of the sorted `ordered` once the sorted positions `removed` are taken
    out: the least position p with p = rank + (removed positions <= p), found by iterating from below."""
    position = rank
    while True:
        moved = rank + int(np.searchsorted(removed, position, side="right"))
        if moved == position:
            return float(ordered[position])
        position = moved


def _slopes(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """The slope over all points and each point's slope without it (all clamped to <= 0), from one sort
    of the pairwise slopes: a point's median is read off the sorted list skipping its own pairs, so K
    labels cost about K^2 log K, not K^3 (a 1000-class model), with exactly the medians a refit gives."""
    slopes, i, j = _pairwise(x, y)
    order = np.argsort(slopes, kind="stable")
    ordered, position = slopes[order], np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))
    owner = np.concatenate([i, j])
    grouped = np.concatenate([position, position])[np.argsort(owner, kind="stable")]
    bounds = np.searchsorted(np.sort(owner), np.arange(len(x) + 1))
    out = np.zeros(len(x))
    for k in range(len(x)):
        if not _spread_enough(np.delete(x, k)):
            continue
        removed = np.sort(grouped[bounds[k] : bounds[k + 1]])
        kept = len(ordered) - len(removed)
        middle = _nth_kept(ordered, removed, (kept - 1) // 2)
        if kept % 2 == 0:
            middle = (middle + _nth_kept(ordered, removed, kept // 2)) / 2
        out[k] = min(middle, 0.0)
    return min(float(np.median(slopes)), 0.0), out


def frequency_fit(l1: list[float], share: list[float]) -> tuple[list[float], float]:
    """What each label's L1 norm is divided by to take out the line, exp(slope * (log share - centre)),
    and the line's slope over all labels (0.0 when no label moved). Centred on the median present class
    so a typical class keeps its norm; 1 for absent classes.

    Each label's slope is fitted without that label (leave-one-out): with one frequent class among equal
    ones, every pair that spans a frequency difference involves that class, so a line through all labels
    would be its own trigger and would explain its backdoor away."""
    factors = [1.0] * len(l1)
    present = _present(l1, share)
    x, y = np.log([share[k] for k in present]), np.log([l1[k] for k in present])
    if not present or not _spread_enough(x):
        return factors, 0.0
    whole, own = _slopes(x, y)
    if whole == 0.0:
        return factors, 0.0
    for n, slope in zip(present, own * (x - float(np.median(x))), strict=True):
        factors[n] = math.exp(slope)
    return factors, whole if any(f != 1.0 for f in factors) else 0.0


def frequency_factors(l1: list[float], share: list[float]) -> list[float]:
    """Each label's factor alone (see frequency_fit)."""
    return frequency_fit(l1, share)[0]


def corrected(l1: list[float], share: list[float]) -> tuple[list[float], float]:
    """The L1 norms with the class-frequency line taken out, and the line's slope (0.0: left as they were).
    `share`: each label's share of the scanned data, in the order of `l1` ([]: no correction)."""
    factors, slope = frequency_fit(l1, share)
    return [v / f for v, f in zip(l1, factors, strict=True)], slope


def aligned(labels: list[int], label_share: list[float]) -> list[float]:
    """The shares of `labels`, in their order ([] when the shares are unknown: no correction)."""
    if not label_share:
        return []
    return [label_share[k] if 0 <= k < len(label_share) else 0.0 for k in labels]
