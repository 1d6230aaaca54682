"""The verdict in one sentence a security engineer can act on: which label, how anomalous, how sure, what
to do next. The statistics behind it stay in formatting.verdict_line (log.txt, the console's details, the
results screen's `d` key)."""

from __future__ import annotations

import os

from nc_engine.detectors.margin_result import NAME as MARGIN_NAME
from nc_engine.detectors.margin_result import MarginResult
from nc_engine.detectors.transform_result import KINDS as TRANSFORM_KINDS
from nc_engine.detectors.transform_result import NAME as TRANSFORM_NAME
from nc_engine.detectors.transform_result import TransformResult

from .decide import can_flag
from .report import Report
from .rows import LabelRow

LIMITS = "Neural Cleanse sees small patches, max-margin a target that wins by far; other triggers can pass"
LIMITS_NC_ONLY = "Neural Cleanse sees small patches; other triggers can pass (docs/detectors.md)"
LIMITS_ALL = (
    "Neural Cleanse sees small patches, max-margin a target that wins by far, the transform search image-wide "
    "blends, signals, filters and warps; other triggers can pass"
)
LIMITS_NC_TRANSFORMS = (
    "Neural Cleanse sees small patches, the transform search image-wide blends, signals, filters and warps; "
    "other triggers can pass"
)


def _limits(margins: bool, transforms: bool) -> str:
    """What the detectors that ran can see, for a clean verdict."""
    if transforms:
        return LIMITS_ALL if margins else LIMITS_NC_TRANSFORMS
    return LIMITS if margins else LIMITS_NC_ONLY


def verdict_sentence(report: Report, next_step: str = "") -> str:
    """One sentence, starting with the verdict in capitals. `next_step` says how to repair a backdoored model
    where the sentence is read (the app: a key); by default, the mitigate command for the run folder."""
    if report.verdict is None:
        return f"NO VERDICT YET: {report.note or 'the scan has not finished'}."
    if report.verdict == "inconclusive":
        return f"INCONCLUSIVE: {report.note.rstrip('.')}; fix that and scan again."
    margins, transforms = _margins(report), _transforms(report)
    if report.verdict == "clean":
        limits = _limits(margins is not None, transforms is not None)
        return f"CLEAN: no label stands out ({_clean_detail(report, margins, transforms)}); {limits}."
    rows = [r for r in report.labels if r.flagged]
    by_margin = margins.flagged if margins is not None else []
    by_transform = transforms.flagged if transforms is not None else []
    # a saved verdict the detectors no longer support at today's cuts still names its labels
    labels = sorted({r.label for r in rows} | set(by_margin) | set(by_transform)) or sorted(report.flagged)
    named = ", ".join(_named(report, k) for k in labels)
    target = "is a likely backdoor target" if len(labels) == 1 else "are likely backdoor targets"
    reasons = [_trigger_reason(report, r) for r in rows]
    if margins is not None and by_margin:
        reasons.append(_margin_reason(margins))
    if transforms is not None and by_transform:
        reasons.append(_transform_reason(transforms))
    votes = [{r.label for r in rows}, set(by_margin), set(by_transform)]
    agreeing = max((sum(k in vote for vote in votes) for k in labels), default=0)
    agree = {2: "; two detectors agree", 3: "; all three detectors agree"}.get(agreeing, "")
    if agreeing == 2 and transforms is None:
        agree = "; both detectors agree"
    step = next_step or f"run `nc-tui mitigate {_shown(report.run_dir)} --method unlearn`"
    return f"BACKDOORED: label {named} {target}: {' and '.join(reasons)}{agree}. Next: {step}."


def _shown(run_dir: str) -> str:
    """The run folder as the user can type it: relative to the working directory when it lies inside."""
    if not run_dir:
        return "RUN"
    relative = os.path.relpath(run_dir)
    return run_dir if relative.startswith("..") else relative


def _named(report: Report, label: int) -> str:
    name = report.name_of(label)
    return str(label) if name == str(label) else f"{label} ({name})"


def _margins(report: Report) -> MarginResult | None:
    evidence = report.detectors.get(MARGIN_NAME)
    return MarginResult.from_dict(evidence) if isinstance(evidence, dict) else None


def _transforms(report: Report) -> TransformResult | None:
    evidence = report.detectors.get(TRANSFORM_NAME)
    return TransformResult.from_dict(evidence) if isinstance(evidence, dict) else None


def _trigger_reason(report: Report, row: LabelRow) -> str:
    """How much smaller the flagged label's reversed trigger is than the median label's."""
    if not report.median_l1 or row.l1_norm <= 0:
        return "its reversed trigger is abnormally small"
    size = f"its reversed trigger is {report.median_l1 / row.l1_norm:.1f}x smaller than the median label's"
    if row.anomaly_index is None:
        return size
    return f"{size} (index {row.anomaly_index:.2f}, cut {report.threshold:g})"


def _margin_reason(margins: MarginResult) -> str:
    lead = f"{margins.lead:.1f}x" if margins.lead is not None else "far"
    return f"its logit margin is {lead} the others' (max-margin {margins.why})"


def _article(words: str) -> str:
    return f"{'an' if words[0] in 'aeiou' else 'a'} {words}"


def _transform_reason(transforms: TransformResult) -> str:
    found = [f for f in transforms.findings if f.flagged and f.lead is not None]
    kinds = " and ".join(f"{_article(TRANSFORM_KINDS[f.kind][0])} {f.lead:.1f}x weaker (label {f.top})" for f in found)
    return f"{kinds} than the median label's turns clean images into it (transform search)"


def _clean_detail(report: Report, margins: MarginResult | None, transforms: TransformResult | None = None) -> str:
    """Where the closest label stood against each detector's cut."""
    ranked = [r for r in report.labels if r.anomaly_index is not None and can_flag(r)]
    parts = []
    if ranked:
        top = max(ranked, key=lambda r: r.anomaly_index or 0.0)
        parts.append(f"closest trigger: label {top.label}, index {top.anomaly_index:.2f}, cut {report.threshold:g}")
    if margins is not None and margins.top_label is not None and margins.lead is not None:
        lead, cut = f"{margins.lead:.1f}x", f"{margins.lead_threshold:g}x"
        parts.append(f"largest margin: label {margins.top_label}, {lead} the others', cut {cut}")
    decided = [f for f in (transforms.findings if transforms else []) if f.lead is not None]
    if decided:
        near = max(decided, key=lambda f: (f.lead or 0.0) / f.cut)
        words = TRANSFORM_KINDS[near.kind][0]
        lead = f"{near.lead:.1f}x the others', cut {near.cut:g}x"
        parts.append(f"weakest transform: label {near.top}, {_article(words)} {lead}")
    return "; ".join(parts) or "no label could be tested"
