"""Outlier rules chosen on the zoo's tuning half and reported on its test half (writes RULES.md).

    python -m evaluation.decision_rules [--results FILE.jsonl] [--rebuild FILE.jsonl] [--max-fpr 0.05]
                                        [--markdown evaluation/RULES.md]

No scan runs: every rule is a function of a scan's per-label L1 norms (and which searches converged),
which the evaluation's records hold, so each rule judges the same searches. The split is
evaluation/zoo_split.json (evaluation/zoo_split.py), by model. The main numbers are the `default`
preset's scans in --results (three seeds per model, each scan counted); other presets and the rebuilt
zoo are secondary, at the thresholds chosen on the main tuning scans.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evaluation.evaluate_report import flaggable, judged_l1, scored
from evaluation.zoo_split import SPLIT_FILE, family, load_split
from nc_engine.verdict.outliers import DEFAULT_SPREAD_FLOOR, DEFAULT_THRESHOLD, anomaly_scores, family_wise

CAMPAIGNS = Path(__file__).parent / "campaigns"
MAIN_PRESET = "default"
Rule = Callable[[list[float]], list[float]]
# name -> (per-label score, how the engine computes it)
RULES: dict[str, tuple[Rule, str]] = {
    "l1": (lambda v: anomaly_scores(v, "l1"), 'mad_outliers(statistic="l1") (the paper)'),
    "log_l1": (lambda v: anomaly_scores(v, "log_l1"), 'mad_outliers(statistic="log_l1")'),
    "l1_loo": (
        lambda v: anomaly_scores(v, "l1", leave_one_out=True),
        'mad_outliers(statistic="l1", leave_one_out=True)',
    ),
    "log_l1_loo": (
        lambda v: anomaly_scores(v, "log_l1", leave_one_out=True),
        'mad_outliers(statistic="log_l1", leave_one_out=True)',
    ),
    "log_l1_loo_fw": (
        lambda v: family_wise(anomaly_scores(v, "log_l1", leave_one_out=True)),
        'family_wise(anomaly_scores(statistic="log_l1", leave_one_out=True))',
    ),
}
# The spread-floor rules: the floor is chosen on the tuning half from this grid, with the threshold.
FLOORS = [round(0.1 * k, 1) for k in range(1, 11)]
FLOOR_FAMILIES = {"log_l1_floor": False, "log_l1_loo_floor": True}  # name -> leave_one_out


def floor_rule(floor: float, leave_one_out: bool) -> tuple[Rule, str]:
    """MAD of log L1 with the spread floored: (median - log l1) / max(MAD, floor)."""
    how = f'mad_outliers(statistic="log_l1", spread_floor={floor}' + (", leave_one_out=True)" if leave_one_out else ")")
    return (lambda v: anomaly_scores(v, "log_l1", leave_one_out=leave_one_out, spread_floor=floor)), how


@dataclass(frozen=True)
class FrequencyCorrected:
    """A rule applied to the norms judged from the class-frequency line, as the engine does by default since
    the correction was built (nc_engine.verdict.class_frequency; older records get their scan data's shares)."""

    rule: Rule

    def __call__(self, l1: list[float]) -> list[float]:
        return self.rule(l1)


# Thresholds fixed before this split existed, shown for reference (3.5 was chosen on the whole zoo).
FIXED = [("l1", 2.0, "the paper's"), ("log_l1", 3.5, "the engine's default before the floor")]
GRID = [0.5 + 0.5 * k for k in range(12)]  # thresholds of the ROC tables


@dataclass
class Scan:
    model: str
    kind: str  # patch / blend / noise / clean
    seed: int
    score: float  # backdoored: the target's score (-inf if not eligible); clean: the highest eligible score


def eligible(l1: list[float], flags: list[bool] | None) -> list[bool]:
    """Labels a rule may flag: those the engine may flag (`flags`: converged, confirmed) and at or below the
    median norm (a large norm is no trigger)."""
    median = statistics.median(l1)
    return [v <= median and (flags is None or bool(flags[k])) for k, v in enumerate(l1)]


def scan_score(record: dict, rule: Rule) -> float:
    """The scan's score under a rule: above the threshold = found (backdoored) or false alarm (clean)."""
    l1 = judged_l1(record, isinstance(rule, FrequencyCorrected))
    scores, ok = rule(l1), eligible(l1, flaggable(record))
    if record["backdoor"]:
        target = record["target"]
        return scores[target] if ok[target] else -math.inf
    return max((s for s, e in zip(scores, ok, strict=True) if e), default=-math.inf)


def to_scans(records: list[dict], rule: Rule) -> list[Scan]:
    return [Scan(r["model"], r["kind"], r["seed"], scan_score(r, rule)) for r in records]


def rate(scores: list[float], threshold: float) -> float | None:
    return sum(s > threshold for s in scores) / len(scores) if scores else None


def auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a backdoored scan's score > a clean scan's), ties half: the area under the ROC."""
    if not pos or not neg:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def roc(pos: list[float], neg: list[float]) -> list[tuple[float, float, float]]:
    """(threshold, FPR, TPR) at every distinct score (flagged = score > threshold), plus flag-everything."""
    cuts = sorted({s for s in pos + neg if math.isfinite(s)})
    return [(t, rate(neg, t) or 0.0, rate(pos, t) or 0.0) for t in [-math.inf, *cuts]]


def choose_threshold(pos: list[float], neg: list[float], max_fpr: float) -> float:
    """The threshold of highest TPR with FPR <= max_fpr, placed mid-way in the interval of thresholds that
    give that TPR (not on a clean scan's score, which would be the least margin the tuning half allows)."""
    feasible = [t for t in [-math.inf, *sorted(set(neg))] if (rate(neg, t) or 0.0) <= max_fpr]
    low = feasible[0]  # TPR only falls as the threshold rises, so the lowest feasible one is the best
    above = [p for p in pos if p > low and math.isfinite(p)]
    if not math.isfinite(low):  # the cap allows flagging every clean scan: flag everything
        finite = [s for s in pos + neg if math.isfinite(s)]
        return min(finite) - 1.0 if finite else 0.0
    if not above:
        return low
    high = min(above)
    middle = (low + high) / 2
    return round(middle, 2) if low <= round(middle, 2) < high else middle


def stability(scans: list[Scan], threshold: float) -> tuple[int, int]:
    """(models with the same outcome on every seed, models with several seeds)."""
    outcomes = defaultdict(set)
    for s in scans:
        outcomes[s.model].add(s.score > threshold)
    seeds = Counter(s.model for s in scans)
    multi = [m for m in outcomes if seeds[m] > 1]
    return sum(len(outcomes[m]) == 1 for m in multi), len(multi)


def classes(scans: list[Scan]) -> tuple[list[float], list[float], list[float]]:
    """Scores of (patch, blend + noise, clean) scans."""
    return (
        [s.score for s in scans if s.kind == "patch"],
        [s.score for s in scans if s.kind in ("blend", "noise")],
        [s.score for s in scans if s.kind == "clean"],
    )


@dataclass
class Numbers:
    """One rule at one threshold on one set of scans: counts, so every rate can say what it is out of."""

    patch: tuple[int, int]  # (target flagged, scans)
    other: tuple[int, int]  # blend + noise
    clean: tuple[int, int]  # (flagged, scans)
    auc_patch: float | None
    auc_other: float | None
    stable: tuple[int, int]  # (models with one outcome over seeds, models with several seeds)


def numbers(scans: list[Scan], threshold: float) -> Numbers:
    patch, other, clean = classes(scans)

    def hits(scores: list[float]) -> tuple[int, int]:
        return sum(s > threshold for s in scores), len(scores)

    return Numbers(
        hits(patch), hits(other), hits(clean), auc(patch, clean), auc(other, clean), stability(scans, threshold)
    )


@dataclass
class RuleResult:
    name: str
    threshold: float
    how: str  # chosen on tuning, or fixed beforehand
    tuning: Numbers
    test: Numbers
    tuning_scans: list[Scan]
    test_scans: list[Scan]
    rule: Rule
    engine: str  # how the engine computes it


@dataclass
class FloorChoice:
    """One floor of a spread-floor family at its tuning-chosen threshold: tuning numbers only."""

    family: str
    floor: float
    threshold: float
    tuning: Numbers


def by_half(records: list[dict], split: dict[str, str]) -> dict[str, list[dict]]:
    unknown = sorted({r["model"] for r in records} - set(split))
    if unknown:
        raise ValueError(f"models missing from the split: {', '.join(unknown)}; regenerate evaluation/zoo_split.json")
    return {half: [r for r in records if split[r["model"]] == half] for half in ("tuning", "test")}


def judged(
    name: str, rule: Rule, engine: str, halves: dict[str, list[dict]], threshold: float | None, how: str, max_fpr: float
) -> RuleResult:
    """A rule on both halves; its threshold chosen on the tuning half unless given."""
    tuning, test = to_scans(halves["tuning"], rule), to_scans(halves["test"], rule)
    if threshold is None:
        patch, _, clean = classes(tuning)
        threshold = choose_threshold(patch, clean, max_fpr)
    return RuleResult(
        name, threshold, how, numbers(tuning, threshold), numbers(test, threshold), tuning, test, rule, engine
    )


def tuning_key(n: Numbers) -> tuple:
    """The tuning-half criterion: most patch targets flagged, then AUC (to 3 places), then fewer false alarms."""
    return n.patch[0], round(n.auc_patch or 0.0, 3), -n.clean[0]


def choose_floor(halves: dict[str, list[dict]], family: str, max_fpr: float) -> tuple[float, list[FloorChoice]]:
    """The family's floor, on the tuning half only: the best `tuning_key`, then the smallest floor (the one
    that leaves the measured MAD in charge most often)."""
    grid = []
    for floor in FLOORS:
        rule, _ = floor_rule(floor, FLOOR_FAMILIES[family])
        patch, _, clean = classes(to_scans(halves["tuning"], rule))
        threshold = choose_threshold(patch, clean, max_fpr)
        grid.append(FloorChoice(family, floor, threshold, numbers(to_scans(halves["tuning"], rule), threshold)))
    best = max(grid, key=lambda c: (*tuning_key(c.tuning), -c.floor))
    return best.floor, grid


def analyse(records: list[dict], split: dict[str, str], max_fpr: float) -> tuple[list[RuleResult], list[FloorChoice]]:
    """Every rule at its tuning-chosen threshold (floors too), then the fixed reference thresholds."""
    halves = by_half(records, split)
    out = [judged(name, rule, how, halves, None, "tuning", max_fpr) for name, (rule, how) in RULES.items()]
    grids = []
    for name, loo in FLOOR_FAMILIES.items():
        floor, grid = choose_floor(halves, name, max_fpr)
        grids += grid
        rule, how = floor_rule(floor, loo)
        out.append(judged(f"{name}({floor})", rule, how, halves, None, "tuning", max_fpr))
    for name, threshold, why in FIXED:
        out.append(judged(name, RULES[name][0], RULES[name][1], halves, threshold, why, max_fpr))
    floor = DEFAULT_SPREAD_FLOOR["log_l1"]
    rule, how = floor_rule(floor, False)
    out.append(
        judged(
            f"log_l1_floor({floor})",
            rule,
            how,
            halves,
            DEFAULT_THRESHOLD["log_l1"],
            "the engine's default before the class-frequency correction",
            max_fpr,
        )
    )
    out.append(
        judged(
            f"log_l1_floor({floor})+freq",
            FrequencyCorrected(rule),
            f"{how}, frequency_correction",
            halves,
            DEFAULT_THRESHOLD["log_l1"],
            "the engine's default",
            max_fpr,
        )
    )
    return out, grids


def recommend(results: list[RuleResult]) -> RuleResult:
    """On tuning numbers only: most patch targets flagged, then the higher patch AUC, then fewer false alarms."""
    tuned = [r for r in results if r.how == "tuning"]
    return max(tuned, key=lambda r: tuning_key(r.tuning))


def main_records(path: Path, preset: str = MAIN_PRESET) -> list[dict]:
    return scored([r for r in load(path) if r["preset"] == preset])


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def frac(counts: tuple[int, int]) -> str:
    hits, n = counts
    return f"{hits}/{n} ({100 * hits / n:.0f}%)" if n else "-"


def fmt_auc(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def label(r: RuleResult) -> str:
    return f"{r.name} > {r.threshold:.2f}" + ("" if r.how == "tuning" else f" ({r.how})")


def split_rows(split: dict[str, str], records: list[dict]) -> list[str]:
    """Models per family and half; in brackets how many are scored (the backdoor took)."""
    kept = {r["model"] for r in records}
    count = Counter((family(m), h) for m, h in split.items())
    live = Counter((family(m), h) for m, h in split.items() if m in kept)
    lines = [
        "| data | network | kind | tuning half: models (scored) | test half: models (scored) |",
        "|---|---|---|---|---|",
    ]
    for fam in sorted({family(m) for m in split}):
        lines.append(
            f"| {' | '.join(fam)} | {count[fam, 'tuning']} ({live[fam, 'tuning']}) | "
            f"{count[fam, 'test']} ({live[fam, 'test']}) |"
        )
    for what, test in (("backdoored", lambda f: f[2] != "clean"), ("clean", lambda f: f[2] == "clean")):
        cells = [
            f"{sum(v for (f, h), v in count.items() if h == half and test(f))} "
            f"({sum(v for (f, h), v in live.items() if h == half and test(f))})"
            for half in ("tuning", "test")
        ]
        lines.append(f"| **all** | | **{what}** | {cells[0]} | {cells[1]} |")
    return lines


def tuning_rows(results: list[RuleResult]) -> list[str]:
    lines = [
        "| rule | computed in the engine by | threshold | tuning half: patch AUC | tuning half: blend+noise "
        "AUC | tuning half: patch target flagged | tuning half: clean flagged |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        how = "chosen on tuning" if r.how == "tuning" else "fixed"
        lines.append(
            f"| {label(r)} | `{r.engine}` | {r.threshold:.2f} ({how}) | "
            f"{fmt_auc(r.tuning.auc_patch)} | {fmt_auc(r.tuning.auc_other)} | {frac(r.tuning.patch)} | "
            f"{frac(r.tuning.clean)} |"
        )
    return lines


def test_rows(results: list[RuleResult]) -> list[str]:
    lines = [
        "| rule | test half: patch target flagged | test half: blend+noise target flagged | "
        "test half: clean flagged | test half: patch AUC | test half: blend+noise AUC | "
        "test half: same outcome over seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        n = r.test
        lines.append(
            f"| {label(r)} | {frac(n.patch)} | {frac(n.other)} | {frac(n.clean)} | {fmt_auc(n.auc_patch)} | "
            f"{fmt_auc(n.auc_other)} | {frac(n.stable)} |"
        )
    return lines


def roc_rows(results: list[RuleResult], half: str) -> list[str]:
    """Patch TPR / clean FPR of each rule at a grid of thresholds: the ROC curves, sampled."""
    tuned = [r for r in results if r.how == "tuning"]
    lines = ["| threshold | " + " | ".join(f"{r.name}: TPR / FPR" for r in tuned) + " |", "|---|" + "---|" * len(tuned)]
    for t in GRID:
        cells = []
        for r in tuned:
            patch, _, clean = classes(r.tuning_scans if half == "tuning" else r.test_scans)
            tpr, fpr = rate(patch, t), rate(clean, t)
            cells.append("-" if tpr is None or fpr is None else f"{100 * tpr:.0f}% / {100 * fpr:.0f}%")
        lines.append(f"| {t:.1f} | " + " | ".join(cells) + " |")
    return lines


def secondary_rows(
    sources: list[tuple[str, list[dict]]], results: list[RuleResult], split: dict[str, str]
) -> list[str]:
    """Other presets and the rebuilt zoo, test half only, at the thresholds from the main tuning scans."""
    lines = [
        "| scans | rule (threshold from the main tuning scans) | test half: patch target flagged | "
        "test half: blend+noise | test half: clean flagged | test half: patch AUC | "
        "test half: same outcome over seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, records in sources:
        test = by_half(records, split)["test"]
        for r in results:
            n = numbers(to_scans(test, r.rule), r.threshold)
            lines.append(
                f"| {name} | {label(r)} | {frac(n.patch)} | {frac(n.other)} | {frac(n.clean)} | "
                f"{fmt_auc(n.auc_patch)} | {frac(n.stable) if n.stable[1] else '(one seed)'} |"
            )
    return lines


def meaning(
    results: list[RuleResult], best: RuleResult, split: dict[str, str], records: list[dict], max_fpr: float
) -> list[str]:
    """The reading of the tables, built from their numbers (the wording is fixed, the numbers are not)."""
    current = next(r for r in results if r.how != "tuning" and r.name == "log_l1")
    engine = next(r for r in results if r.how == "the engine's default")
    test_models = {r["model"]: r["kind"] for r in records if split[r["model"]] == "test"}
    n_patch = sum(k == "patch" for k in test_models.values())
    n_clean = sum(k == "clean" for k in test_models.values())
    ranked = sorted((r for r in results if r.how == "tuning"), key=lambda r: -(r.test.auc_patch or 0.0))
    tuned = [r for r in results if r.how == "tuning"]
    over = [r.name for r in tuned if r.test.clean[1] and r.test.clean[0] / r.test.clean[1] > max_fpr]
    drops = [
        f"{r.name} {fmt_auc(r.tuning.auc_patch)} -> {fmt_auc(r.test.auc_patch)}" for r in results if r.how == "tuning"
    ]
    return [
        f"The rule picked on the tuning half is **{best.name} > {best.threshold:.2f}** (criterion: most tuning-half "
        f"patch targets flagged with at most the FPR cap of tuning-half clean scans flagged, then the higher "
        f"tuning-half AUC). On the test half, which played no part in choosing it, it flagged the target in "
        f"{frac(best.test.patch)} patch scans and {frac(best.test.other)} blended/noise scans, flagged "
        f"{frac(best.test.clean)} clean scans and gave the same outcome over the seeds for "
        f"{frac(best.test.stable)} models; its test-half patch AUC is {fmt_auc(best.test.auc_patch)}. "
        f"The engine's default is now {label(engine)}: on the test half "
        f"{frac(engine.test.patch)} patch targets, {frac(engine.test.clean)} clean scans flagged, "
        f"{frac(engine.test.stable)} models stable over seeds. The default before it, "
        f"{current.name} > {current.threshold:.2f}, was chosen on the whole zoo and so has seen the test half; "
        f"it gets {frac(current.test.patch)}, {frac(current.test.clean)} and {frac(current.test.stable)} there.",
        "",
        f"Patch AUC, tuning half -> test half: {'; '.join(drops)}. By test-half patch AUC the rules rank "
        f"{', '.join(r.name for r in ranked)}. A rule whose AUC holds up on the test half separates backdoored "
        "from clean models on models it was not chosen on. "
        f"{len(over)} of the {len(tuned)} thresholds chosen on the tuning half flag more than {max_fpr:.0%} of the "
        f"test half's clean scans ({', '.join(over) or 'none'}): a cap met on the tuning half's few clean models "
        "puts the threshold at the edge of their scores, and other clean models reach past it.",
        "",
        f"How far to trust this: the test half holds {n_patch} scored patch models and {n_clean} clean ones. "
        "The seeds of one model share its weights, so the scans are not independent: one model is worth about "
        f"{100 / max(n_patch, 1):.0f} points of the patch rate and {100 / max(n_clean, 1):.0f} of the clean "
        "rate, and rules that differ by a model or two on the test half are not shown to differ. The blended "
        "and noise backdoors are too few in either half to choose anything on; their columns are for reading only.",
    ]


def floor_rows(grid: list[FloorChoice]) -> list[str]:
    lines = [
        "| family | floor | threshold (chosen on tuning) | tuning half: patch target flagged | "
        "tuning half: clean flagged | tuning half: patch AUC |",
        "|---|---|---|---|---|---|",
    ]
    for c in grid:
        lines.append(
            f"| {c.family} | {c.floor} | {c.threshold:.2f} | {frac(c.tuning.patch)} | "
            f"{frac(c.tuning.clean)} | {fmt_auc(c.tuning.auc_patch)} |"
        )
    return lines


def fresh_rows(name: str, records: list[dict], results: list[RuleResult]) -> list[str]:
    """Families built after the rule was chosen: every scan is out of sample, at the fixed thresholds."""
    lines = [
        "| scans | rule | patch target flagged | blend+noise target flagged | clean flagged | patch AUC | "
        "same outcome over seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r.how == "tuning" and not r.name.startswith("log_l1_floor"):
            continue
        n = numbers(to_scans(records, r.rule), r.threshold)
        lines.append(
            f"| {name} | {label(r)} | {frac(n.patch)} | {frac(n.other)} | {frac(n.clean)} | "
            f"{fmt_auc(n.auc_patch)} | {frac(n.stable) if n.stable[1] else '(one seed)'} |"
        )
    return lines


def write_markdown(
    path: Path,
    analysed: tuple[list[RuleResult], list[FloorChoice]],
    split: dict[str, str],
    records: list[dict],
    secondary: list[tuple[str, list[dict]]],
    max_fpr: float,
    source: str,
    strict: tuple[float, list[RuleResult]] | None = None,
    fresh: tuple[str, list[dict]] | None = None,
    draws: dict[str, str] | None = None,
) -> None:
    """RULES.md. `split`: the first draw's, where the rule is chosen; `draws`: the later draws' split, for
    the rebuilt zoos' rows only."""
    results, grid = analysed
    best = recommend(results)
    text = [
        "# Outlier rules: chosen on one half of the zoo, reported on the other",
        "",
        f"Written by `evaluation/decision_rules.py` from `{source}`; do not edit by hand. No new scans: each rule "
        "judges the same searches from their per-label L1 norms.",
        "",
        "## The split",
        "",
        f"By model, never by seed: the list is `{SPLIT_FILE.relative_to(SPLIT_FILE.parents[1])}`, written by "
        "`evaluation/zoo_split.py` (a salted hash of each name, dealt alternately within each data x network x "
        "kind family). A backdoored model is scored only if its real trigger worked (ASR >= 90%); the "
        "numbers in brackets are the scored models of the main scans.",
        "",
        *split_rows(split, records),
        "",
        "## How a rule is judged",
        "",
        "A rule gives each label a score (higher = more anomalous). Labels that may be flagged: converged and "
        "at or below the median L1. A clean scan is a false positive when its highest eligible score exceeds "
        "the threshold; a backdoored scan counts as found only when its true target is eligible and exceeds it. "
        f"Main scans: preset `{MAIN_PRESET}`, every seed, each scan counted. Threshold criterion, on the tuning "
        f"half only: the highest patch TPR with clean FPR <= {max_fpr:.0%}, placed mid-way between the lowest "
        "threshold meeting the cap and the next patch target score above it. The last rows are thresholds "
        "fixed beforehand, for reference; `+freq` judges the norms from the class-frequency line, as the engine "
        "does by default now (on balanced or nearly balanced data it changes nothing: MNIST and CIFAR-10).",
        "",
        "## Tuning half (where thresholds are chosen)",
        "",
        *tuning_rows(results),
        "",
        "## Test half (not used for any choice)",
        "",
        *test_rows(results),
        "",
        "## What it means",
        "",
        *meaning(results, best, split, records, max_fpr),
        "",
        "## How the spread floors were chosen (tuning half only)",
        "",
        "Each floor of the grid at its own tuning-chosen threshold; the floor kept is the best by the criterion "
        "above, ties to the smallest floor (the one that leaves the measured MAD in charge most often). The "
        "idea of a floor came from reading the scans of both halves (a clean model's MAD of log L1 can be "
        "as small as 0.08); the floor's value and the threshold were chosen here, on the tuning half alone.",
        "",
        *floor_rows(grid),
        "",
        "## ROC curves, sampled: patch TPR / clean FPR against the threshold",
        "",
        "Tuning half:",
        "",
        *roc_rows(results, "tuning"),
        "",
        "Test half:",
        "",
        *roc_rows(results, "test"),
        "",
    ]
    if strict:
        cap, strict_results = strict
        text += [
            f"## Sensitivity: thresholds chosen on the tuning half with an FPR cap of {cap:.0%}",
            "",
            "The same criterion with a stricter cap (thresholds still chosen on the tuning half only), to show "
            "how much of the test half's false positives come from the cap rather than the statistic. "
            "Not used to pick the rule above. First table: tuning half; second: test half.",
            "",
            "| rule | threshold | tuning half: patch target flagged | tuning half: clean flagged |",
            "|---|---|---|---|",
            *[
                f"| {r.name} | {r.threshold:.2f} | {frac(r.tuning.patch)} | {frac(r.tuning.clean)} |"
                for r in strict_results
                if r.how == "tuning"
            ],
            "",
            *test_rows([r for r in strict_results if r.how == "tuning"]),
            "",
        ]
    if secondary:
        text += [
            "## Other presets and the rebuilt zoos (test half only)",
            "",
            *secondary_rows(secondary, results, {**split, **(draws or {})}),
            "",
        ]
    if fresh and fresh[1]:
        text += [
            "## Families added after the rule was chosen (all out of sample)",
            "",
            "Models of families the zoo did not have when the floor and threshold were chosen (MNIST "
            "dense-only MLPs; a SmallCNN shipped with its normalisation and softmax inside), trained and "
            "scanned afterwards with the default preset; none of them played any part in a choice.",
            "",
            *fresh_rows(*fresh, results),
            "",
        ]
    path.write_text("\n".join(text), encoding="utf-8")


def secondary_sources(
    results_path: Path, rebuilds: list[list[Path]], newer: list[list[Path]] | None = None
) -> list[tuple[str, list[dict]]]:
    """Rows of other presets and rebuilt zoos; a rebuild given as several files (a+b: the zoo's two draws
    scanned on one build) is one source, and a scan found in two of them is refused. `newer[i]`: files of
    scans made again (a+b<c: c's scans take the place of the same model, preset and seed in a or b)."""
    out = []
    for i, paths in enumerate([[results_path], *rebuilds]):
        files = [(path, load(path)) for path in paths]
        keys = Counter((r["model"], r["preset"], r["seed"]) for _, records in files for r in records)
        twice = sorted(k for k, n in keys.items() if n > 1)
        if twice:
            raise ValueError(f"{' + '.join(p.name for p in paths)}: scans recorded twice, e.g. {twice[0]}")
        again = [(path, load(path)) for path in ((newer or [])[i - 1] if 0 < i <= len(newer or []) else [])]
        replaced = {(r["model"], r["preset"], r["seed"]) for _, records in again for r in records}
        files = [
            (path, [r for r in records if (r["model"], r["preset"], r["seed"]) not in replaced])
            for path, records in files
        ] + again
        for preset in sorted({r["preset"] for _, records in files for r in records}):
            if paths == [results_path] and preset == MAIN_PRESET:
                continue
            parts = [(path, scored([r for r in records if r["preset"] == preset])) for path, records in files]
            name = " + ".join(
                f"`{path.name}` seeds {','.join(str(s) for s in sorted({r['seed'] for r in got}))}"
                for path, got in parts[: len(parts) - len(again)]
                if got
            )
            if again:
                name += (
                    " with "
                    + " + ".join(f"`{path.name}`" for path, got in parts[len(parts) - len(again) :] if got)
                    + " in place of the scans it repeats"
                )
            out.append((f"{name} `{preset}`", [r for _, got in parts for r in got]))
    return out


def print_table(results: list[RuleResult]) -> None:
    print(
        f"{'rule':<46} {'tuning AUC':>10} {'test TPR patch':>16} {'test FPR clean':>16} {'test AUC':>9} "
        f"{'test stable':>12}"
    )
    for r in results:
        print(
            f"{label(r):<46} {fmt_auc(r.tuning.auc_patch):>10} {frac(r.test.patch):>16} {frac(r.test.clean):>16} "
            f"{fmt_auc(r.test.auc_patch):>9} {frac(r.test.stable):>12}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Choose the outlier rule on the tuning half, report the test half.")
    parser.add_argument("--results", type=Path, default=CAMPAIGNS / "main-gpu" / "evaluation.jsonl")
    rebuild = CAMPAIGNS / "rebuild" / "evaluation_rebuild.jsonl"
    cpu = [
        CAMPAIGNS / "cpu-test-half" / "evaluation_cpu_test_half.jsonl",  # the test half of both draws
        CAMPAIGNS / "cpu-test-half-draw2" / "evaluation_cpu_test_half_draw2.jsonl",
    ]
    # GTSRB scanned again with the correction
    again = CAMPAIGNS / "cpu-test-half-gtsrb-freq" / "evaluation_cpu_test_half_gtsrb_freq.jsonl"
    parser.add_argument(
        "--rebuild",
        default=",".join(
            [str(rebuild), *map(str, cpu), "+".join(map(str, cpu)), "+".join(map(str, cpu)) + f"<{again}"]
        ),
        help="comma-separated scans of rebuilt zoos (secondary, test half only), a+b for "
        "several files as one, a+b<c for c's scans in place of the same scans in a or b; "
        "'' for none",
    )
    parser.add_argument("--split", type=Path, default=SPLIT_FILE)
    parser.add_argument(
        "--fresh",
        type=Path,
        default=CAMPAIGNS / "new-families" / "evaluation_new_families.jsonl",
        help="scans of families added after the rule was chosen (all out of sample)",
    )
    parser.add_argument("--max-fpr", type=float, default=0.05, help="FPR cap on the tuning half")
    parser.add_argument("--strict-fpr", type=float, default=0.0, help="the cap of the sensitivity check")
    parser.add_argument("--markdown", type=Path, default=Path(__file__).parent / "RULES.md")
    args = parser.parse_args(argv)
    split = load_split(args.split)  # the first draw: its tuning half is where the rule is chosen
    records = main_records(args.results)
    analysed = analyse(records, split, args.max_fpr)
    results = analysed[0]
    items = [item.split("<") for item in args.rebuild.split(",") if item.strip()]
    rebuilds = [[Path(p) for p in item[0].split("+")] for item in items]
    newer = [[Path(p) for p in item[1].split("+")] if len(item) > 1 else [] for item in items]
    root = Path(__file__).resolve().parents[1]
    source = args.results.resolve()
    source = source.relative_to(root) if source.is_relative_to(root) else source
    write_markdown(
        args.markdown,
        analysed,
        split,
        records,
        secondary_sources(args.results, rebuilds, newer),
        args.max_fpr,
        str(source),
        (args.strict_fpr, analyse(records, split, args.strict_fpr)[0]),
        (f"`{args.fresh.name}`", main_records(args.fresh)) if args.fresh.is_file() else None,
        load_split(args.split, ("second",)),
    )
    print_table(results)
    best = recommend(results)
    print(f"chosen on the tuning half: {best.name} > {best.threshold:.2f}; wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
