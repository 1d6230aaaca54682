"""What the max-margin detector found (max_margin.py), and its test, without torch: the report and the UI
read it.

The test is Neural Cleanse's on log L1 norms, turned the other way: the label with the largest margin is
flagged when its log margin stands at least THRESHOLD robust deviations (1.4826 x the median absolute
deviation of every label's log margin) above their median. The paper's own test, a Gamma null fitted to
the other labels with an order-statistic p < 0.05, flagged 3 of the zoo's first 12 clean tuning models
(evaluation/campaigns/max-margin-tuning/notes.md); this statistic and its threshold are the tuning half's
second choice (rule-2.md there), never read off the sealed draw.

The top label is also flagged when its margin is at least LEAD times the median of the other labels' margins
(rule-3.md): on stronger models the ordinary labels' margins spread so widely that a target 8-28x above
their median stayed under the index's threshold, while no clean tuning model's top label stood 3x above.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

NAME = "max_margin"  # its key in the report and its file in the run folder
THRESHOLD = 4.5  # anomaly index of the largest log margin (evaluation/campaigns/max-margin-tuning/rule-2.md)
LEAD = 5.0  # top margin over the others' median (evaluation/campaigns/max-margin-tuning/rule-3.md)
MAD_SCALE = 1.4826  # a normal distribution's standard deviation in MADs, as in Neural Cleanse's test


def margin_index(margins: list[float]) -> tuple[int | None, float | None, str]:
    """(the label with the largest margin, its anomaly index, why there is none): see the module's doc."""
    m = np.array([math.nan if v is None else v for v in margins], dtype=np.float64)
    if len(m) < 4:
        return None, None, f"{len(m)} labels are too few for an outlier test (at least 4)"
    if not np.isfinite(m).all():
        return None, None, "a label's margin is not finite (the model's outputs overflow)"
    if (m <= 0).any():
        return None, None, "a label's largest margin is not positive (the ascent never made it win)"
    logs = np.log(m)
    median = float(np.median(logs))
    spread = MAD_SCALE * float(np.median(np.abs(logs - median)))
    top = int(np.argmax(m))
    if spread <= 1e-12:
        return top, None, "every label reaches the same margin, so none stands out"
    return top, (float(logs[top]) - median) / spread, ""


@dataclass
class MarginResult:
    """One scan's maximum-margin evidence: each label's statistic, and what the test made of it."""

    margins: list[float]  # per label (index = label), the largest margin reached
    flagged: list[int]
    index: float | None  # anomaly index of the largest margin; None when the test cannot decide
    top_label: int | None
    threshold: float
    null_median: float | None  # median of the other labels' margins
    images: int  # images through a forward and backward pass
    seconds: float
    note: str = ""  # why the test could not decide, if it could not
    settings: dict[str, Any] = field(default_factory=dict)
    lead: float | None = None  # the top margin over the others' median
    lead_threshold: float = LEAD

    @property
    def why(self) -> str:
        """Which of the two cuts flagged the top label ("" when none did)."""
        if not self.flagged:
            return ""
        cuts = []
        if self.index is not None and self.index >= self.threshold:
            cuts.append(f"index {self.index:.2f}, cut {self.threshold:g}")
        if self.lead is not None and self.lead >= self.lead_threshold:
            cuts.append(f"{self.lead:.1f}x the others' median, cut {self.lead_threshold:g}x")
        return "; ".join(cuts)

    @classmethod
    def judged(
        cls, margins: list[float], images: int, seconds: float, settings: dict[str, Any], threshold: float = THRESHOLD
    ) -> MarginResult:
        """The margins put to the test."""
        top, index, note = margin_index(margins)
        others = [m for k, m in enumerate(margins) if k != top and m is not None and math.isfinite(m)]
        median = float(np.median(others)) if top is not None and others else None
        lead = margins[top] / median if top is not None and not note and median else None
        by_index = index is not None and index >= threshold
        by_lead = lead is not None and lead >= LEAD
        flagged = [top] if top is not None and (by_index or by_lead) else []
        return cls(
            list(margins), flagged, index, top, threshold, median, images, seconds, note, dict(settings), lead, LEAD
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def per_label(self) -> str:
        """Every label's margin, for the log: the evidence behind the summary."""
        return "max-margin per label: " + ", ".join(f"{k}: {m:.1f}" for k, m in enumerate(self.margins))

    def summary(self) -> str:
        """The finding in one line (log, console, verdict)."""
        if self.note or self.top_label is None or (self.index is None and self.lead is None):
            return f"max-margin: no decision ({self.note or 'no margins'})"
        cuts = f"index {self.threshold:g} or {self.lead_threshold:g}x"
        verdict = f"flagged: {self.why}" if self.flagged else f"not an outlier: below {cuts}"
        lead = f" ({self.lead:.1f}x)" if self.lead is not None else ""
        index = f"anomaly index {self.index:.2f}" if self.index is not None else "no anomaly index"
        return (
            f"max-margin: label {self.top_label} reaches margin {self.margins[self.top_label]:.1f} against a "
            f"median of {self.null_median:.1f} for the others{lead}, {index} ({verdict}; "
            f"{self.images:,} images, {self.seconds:.1f}s)"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarginResult:
        """A saved result, judged again by today's test (a folder from before it kept the Gamma test's)."""
        margins = data.get("margins")
        if not isinstance(margins, list) or not all(v is None or isinstance(v, int | float) for v in margins):
            margins = []
        images, seconds = data.get("images", 0), data.get("seconds", 0.0)
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        return cls.judged(
            [math.nan if v is None else float(v) for v in margins],
            images if isinstance(images, int) else 0,
            float(seconds) if isinstance(seconds, int | float) else 0.0,
            settings or {},
        )
