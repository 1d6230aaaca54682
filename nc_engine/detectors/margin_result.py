"""What the max-margin detector found (max_margin.py), without torch: the report and the UI read it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

NAME = "max_margin"  # its key in the report and its file in the run folder


@dataclass
class MarginResult:
    """One scan's maximum-margin evidence: each label's statistic, and what the test made of it."""

    margins: list[float]  # per label (index = label), the largest margin reached
    flagged: list[int]
    p_value: float | None  # of the largest margin; None when no null could be fitted
    top_label: int | None
    alpha: float
    null_median: float | None  # median of the other labels' margins
    images: int  # images through a forward and backward pass
    seconds: float
    note: str = ""  # why the test could not decide, if it could not
    settings: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def per_label(self) -> str:
        """Every label's margin, for the log: the evidence behind the summary."""
        return "max-margin per label: " + ", ".join(f"{k}: {m:.1f}" for k, m in enumerate(self.margins))

    def summary(self) -> str:
        """The finding in one line (log, console, verdict)."""
        if self.note or self.top_label is None or self.p_value is None:
            return f"max-margin: no decision ({self.note or 'no margins'})"
        verdict = "flagged" if self.flagged else "not an outlier"
        return (
            f"max-margin: label {self.top_label} reaches margin {self.margins[self.top_label]:.1f} against a "
            f"median of {self.null_median:.1f} for the others, p {self.p_value:.2g} ({verdict} at "
            f"{self.alpha:g}; {self.images:,} images, {self.seconds:.1f}s)"
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MarginResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
