"""What the transform search found (transform_search.py), and its test, without torch: the report and the
UI read it.

Per kind of transform, the label that the weakest transform reaches is flagged when that strength is at
least the kind's cut times smaller than the other labels' median. A label never reached counts at twice the
strongest strength tried (it is only known to need more than the strongest), so where most labels are
never reached the lead is an estimate, at least half its value: a warp that turns every image into one
label while no other label can be reached at all is strong evidence. A kind with no label reached cannot
decide. The cuts were chosen on the development draw (evaluation/campaigns/dev-draw/transform-rule.md),
never on the sealed draw.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

NAME = "transforms"  # its key in the report and its file in the run folder
# kind -> (its name in a sentence, the strongest strength tried, the lead that flags). The cuts are
# transform-rule.md's: 1.5x the largest lead of the development draw's 23 clean models (MNIST SmallCNN,
# CIFAR-10 CompactCNN) in that kind, rounded up to 0.5, at least 2.5 (largest clean leads: blend 1.5x,
# additive 2.0x, filter 12.6x, warp 6.5x).
KINDS = {
    "blend": ("blended image", 1.0, 2.5),
    "additive": ("additive signal", 0.5, 3.5),
    "filter": ("colour filter", 2.0, 19.0),
    "warp": ("warp", 8.0, 10.0),
}


@dataclass(frozen=True)
class KindFinding:
    """One kind's test: the cheapest label, its strength against the others' median, and the cut."""

    kind: str
    top: int | None
    cost: float | None
    median: float | None
    lead: float | None
    cut: float
    flagged: bool
    note: str = ""

    def line(self) -> str:
        words = KINDS[self.kind][0]
        if self.note or self.top is None or self.lead is None:
            return f"{words}: no decision ({self.note or 'no costs'})"
        verdict = "flagged" if self.flagged else f"below the cut of {self.cut:g}x"
        return (
            f"{words}: label {self.top} turns at strength {self.cost:.3g} against a median of {self.median:.3g} "
            f"({self.lead:.1f}x, {verdict})"
        )


WEAKEST = 1e-4  # below every kind's weakest strength tried (0.002-0.05): a smaller saved cost is damage


def _usable(v: object) -> bool:
    return isinstance(v, float | int) and not isinstance(v, bool) and math.isfinite(v) and v >= WEAKEST


def _number(v: object) -> float | None:
    """A saved cost as a float, or None for anything else (a huge integer, a bool, text)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) and f >= WEAKEST else None


def judge_kind(kind: str, costs: list[float | None]) -> KindFinding:
    """The lead test on one kind's per-label costs (see the module's doc)."""
    _, strongest, cut = KINDS[kind]
    if len(costs) < 4:
        return KindFinding(kind, None, None, None, None, cut, False, f"{len(costs)} labels are too few (at least 4)")
    # never reached (or a damaged value: a search's strengths are positive and finite) -> past the strongest
    values = np.array([v if _usable(v) else 2 * strongest for v in costs], dtype=np.float64)
    top = int(np.argmin(values))
    median = float(np.median(np.delete(values, top)))
    if values[top] > strongest:
        return KindFinding(kind, None, None, None, None, cut, False, "no label is reached")
    lead = median / float(values[top])
    return KindFinding(kind, top, float(values[top]), median, lead, cut, lead >= cut)


@dataclass
class TransformResult:
    """One scan's transform-search evidence: each kind's per-label cost and what the test made of it."""

    costs: dict[str, list[float | None]]  # kind -> per label (index = label); None: never reached
    images: int  # images through a forward and backward pass
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    findings: list[KindFinding] = field(default_factory=list)
    flagged: list[int] = field(default_factory=list)

    @classmethod
    def judged(
        cls, costs: dict[str, list[float | None]], images: int, seconds: float, settings: dict[str, Any]
    ) -> TransformResult:
        findings = [judge_kind(kind, values) for kind, values in costs.items() if kind in KINDS]
        flagged = sorted({f.top for f in findings if f.flagged and f.top is not None})
        return cls(dict(costs), images, seconds, dict(settings), findings, flagged)

    def to_dict(self) -> dict[str, Any]:
        return {"costs": self.costs, "images": self.images, "seconds": self.seconds, "settings": self.settings}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TransformResult:
        """A saved result, judged again by today's test; damaged parts read as absent."""
        raw = data.get("costs")
        raw = raw if isinstance(raw, dict) else {}
        costs = {str(k): [_number(x) for x in v] for k, v in raw.items() if isinstance(v, list)}
        images, seconds = data.get("images", 0), _number(data.get("seconds"))
        settings = data.get("settings") if isinstance(data.get("settings"), dict) else {}
        ok_images = isinstance(images, int) and not isinstance(images, bool) and 0 <= images < 2**63
        return cls.judged(costs, images if ok_images else 0, seconds or 0.0, settings or {})

    @property
    def why(self) -> str:
        """The kinds that flagged, in words ("" when none did)."""
        return "; ".join(f.line() for f in self.findings if f.flagged)

    def per_label(self) -> str:
        """Every kind's per-label strength, for the log."""
        return "\n".join(
            f"transform search ({KINDS[kind][0]}) per label: "
            + ", ".join(f"{k}: {'-' if v is None else f'{v:.3g}'}" for k, v in enumerate(values))
            for kind, values in self.costs.items()
            if kind in KINDS
        )

    def summary(self) -> str:
        """The finding in one line (log, console, verdict)."""
        head = f"flagged {self.flagged}" if self.flagged else "no label stands out"
        body = "; ".join(f.line() for f in self.findings)
        return f"transform search: {head} ({body}; {self.images:,} images, {self.seconds:.1f}s)"


def as_dict(finding: KindFinding) -> dict[str, Any]:
    return asdict(finding)
