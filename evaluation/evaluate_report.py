"""RESULTS.md from the evaluation's records: detection, false positives, seed stability, cost."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path

from evaluation.zoo_data import scan_shares
from nc_engine.verdict.class_frequency import corrected
from nc_engine.verdict.outliers import DEFAULT_SPREAD_FLOOR, DEFAULT_THRESHOLD, mad_outliers

KIND_ORDER = ("patch", "blend", "noise", "inobject", "twotarget", "clean")
DATASET_ORDER = ("mnist", "cifar10", "gtsrb")
EFFECTIVE_ASR = 0.9  # a backdoor whose real trigger works on fewer inputs is not scored as one
KIND_TEXT = {
    "patch": "BadNets patch",
    "blend": "blended",
    "noise": "noise (invisible)",
    "inobject": "patch on the object",
    "twotarget": "two patches, two targets",
    "clean": "clean",
}


def detected(r: dict) -> bool:
    """A backdoored model counts as found when its true target (both, for two-target models) is flagged."""
    return bool(r.get("targets_flagged", r.get("target_flagged")))


def outcome(r: dict) -> bool:
    """The scan's answer to "is there a backdoor (at the right label)?"."""
    return detected(r) if r["backdoor"] else r["verdict"] == "backdoored"


def flaggable(r: dict) -> list[bool] | None:
    """Labels the engine may flag: converged and, in a screened scan, confirmed at the full budget (a
    screened label's norm is only an estimate moved onto the confirmed scale). None: the record predates both."""
    converged, stages = r.get("converged"), r.get("stages")
    if converged is None and stages is None:
        return None
    n = len(r["l1"])
    return [bool(converged is None or converged[k]) and (stages is None or stages[k] != "screened") for k in range(n)]


def judged_l1(r: dict, correct: bool | None = None) -> list[float]:
    """The norms the outlier test reads, judged from the class-frequency line (nc_engine.verdict.class_frequency)
    when `correct`, else as they are; None: as the engine did for this record (older records predate the
    correction). A record without shares gets its scan data's (zoo_data.scan_shares)."""
    if r.get("frequency_correction") if correct is None else correct:
        return corrected(r["l1"], r.get("label_share") or scan_shares(r["dataset"]))[0]
    return r["l1"]


def under_rule(r: dict, statistic: str, threshold: float, floor: float = 0.0, correct: bool | None = None) -> dict:
    """The record's verdict under another outlier rule: the rule is a function of the labels' L1 norms
    (and which searches converged), so the same searches can be judged by any rule. `correct`: judged from
    the class-frequency line or not (None: as the engine did for this record)."""
    result = mad_outliers(judged_l1(r, correct), threshold, flaggable(r), statistic, spread_floor=floor)
    flagged = [k for k, f in enumerate(result.flagged) if f]
    out = {
        **r,
        "flagged": flagged,
        "verdict": "backdoored" if flagged else "clean",
        "index": result.anomaly_index,
        "statistic": statistic,
        "threshold": threshold,
    }
    target = r["target"]
    others = [a for k, a in enumerate(result.anomaly_index) if k != target]
    out["max_other_index"] = max(others) if others else None
    if target is not None:
        ranked = sorted(range(len(r["l1"])), key=lambda k: -result.anomaly_index[k])
        out.update(
            target_flagged=target in flagged,
            target_index=result.anomaly_index[target],
            target_rank=ranked.index(target) + 1,
        )
    if r.get("targets"):
        out["targets_flagged"] = all(t in flagged for t in r["targets"])
    return out


# (statistic, threshold, spread floor, what it is)
# (statistic, threshold, spread floor, class-frequency correction, what it is)
RULES = [
    ("l1", 2.0, 0.0, False, " (paper)"),
    ("log_l1", 3.5, 0.0, False, " (default before the floor)"),
    (
        "log_l1",
        DEFAULT_THRESHOLD["log_l1"],
        DEFAULT_SPREAD_FLOOR["log_l1"],
        False,
        " (default before the class-frequency correction)",
    ),
    ("log_l1", DEFAULT_THRESHOLD["log_l1"], DEFAULT_SPREAD_FLOOR["log_l1"], True, " (default)"),
]


def rule_name(statistic: str, threshold: float, floor: float, correct: bool = False) -> str:
    return f"{statistic}{f' floor {floor:g}' if floor else ''}{' +freq' if correct else ''} > {threshold:g}"


LATER_KINDS = ("inobject", "twotarget")  # a column of their own only where the records hold them


def rule_rows(records: list[dict], presets: list[str]) -> list[str]:
    later = any(r["kind"] in LATER_KINDS for r in records)
    extra = (" on the object + two targets |", "---|") if later else ("", "")
    lines = [
        f"| preset | outlier test | patch: target flagged | blended + noise |{extra[0]} clean: flagged | "
        f"same outcome over seeds |",
        f"|---|---|---|---|{extra[1]}---|---|",
    ]
    for preset in presets:
        for statistic, threshold, floor, correct, what in RULES:
            rs = [under_rule(r, statistic, threshold, floor, correct) for r in records if r["preset"] == preset]
            groups = [("patch",), ("blend", "noise")] + ([LATER_KINDS] if later else [])
            cells = [[detected(r) for r in rs if r["kind"] in kinds] for kinds in groups]
            clean = [r["verdict"] == "backdoored" for r in rs if not r["backdoor"]]
            same, multi, _ = stability(rs, preset)
            lines.append(
                f"| `{preset}` | {rule_name(statistic, threshold, floor, correct)}{what} | "
                + "".join(f"{_pct(sum(c), len(c))} | " for c in cells)
                + f"{_pct(sum(clean), len(clean))} | {_pct(same, multi) if multi else '(one seed)'} |"
            )
    return lines


def scored(records: list[dict]) -> list[dict]:
    """Clean models and backdoored ones whose real trigger works (ASR >= EFFECTIVE_ASR)."""
    return [r for r in records if not r["backdoor"] or r["real_asr"] >= EFFECTIVE_ASR]


def _pct(hits: int, n: int) -> str:
    return f"{hits}/{n} ({100 * hits / n:.0f}%)" if n else "-"


def _median(values: list[float | None], spec: str = ".2f") -> str:
    values = [v for v in values if v is not None]
    return format(statistics.median(values), spec) if values else "-"


def stability(records: list[dict], preset: str) -> tuple[int, int, list[str]]:
    """(models whose outcome is the same for every seed, models with several seeds, the others' names)."""
    by_model = defaultdict(list)
    for r in records:
        if r["preset"] == preset:
            by_model[r["model"]].append(outcome(r))
    multi = {m: o for m, o in by_model.items() if len(o) > 1}
    changed = sorted(m for m, o in multi.items() if len(set(o)) > 1)
    return len(multi) - len(changed), len(multi), changed


def summary_rows(records: list[dict], presets: list[str]) -> list[str]:
    kinds = ["patch", "blend", "noise"] + [k for k in LATER_KINDS if any(r["kind"] == k for r in records)]
    unsure = any(r["verdict"] == "inconclusive" for r in records)
    lines = [
        "| preset | "
        + "".join(f"{KIND_TEXT[k]}: found | " for k in kinds)
        + "clean: flagged (false positive) | "
        + ("inconclusive (any model) | " if unsure else "")
        + "same outcome over seeds | median s/scan (MNIST / CIFAR-10 / GTSRB) |",
        "|---|" + "---|" * (len(kinds) + 3 + unsure),
    ]
    for preset in presets:
        seed = min(r["seed"] for r in records if r["preset"] == preset)
        first = [r for r in records if r["preset"] == preset and r["seed"] == seed]
        cells = []
        for kind in kinds:
            rows = [r for r in first if r["kind"] == kind]
            cells.append(_pct(sum(detected(r) for r in rows), len(rows)))
        clean = [r for r in first if r["kind"] == "clean"]
        cells.append(_pct(sum(r["verdict"] == "backdoored" for r in clean), len(clean)))
        if unsure:
            cells.append(_pct(sum(r["verdict"] == "inconclusive" for r in first), len(first)))
        same, multi, _ = stability(records, preset)
        cells.append(_pct(same, multi) if multi else "(one seed)")
        cells.append(
            " / ".join(
                _median([r["seconds"] for r in first if r["dataset"] == d], ".1f")
                for d in ("mnist", "cifar10", "gtsrb")
            )
        )
        lines.append(f"| `{preset}` | " + " | ".join(cells) + " |")
    return lines


def detail_rows(records: list[dict], preset: str) -> list[str]:
    seed = min(r["seed"] for r in records if r["preset"] == preset)
    rows = [r for r in records if r["preset"] == preset and r["seed"] == seed]
    lines = [
        "| data | network | trigger | models | found (target flagged) | target ranked 1st | "
        "flagged (any label) | target index (median) | reversed ASR | reversed L1 / real L1 | "
        "s/scan | s/label |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = defaultdict(list)
    for r in rows:
        groups[(r["dataset"], r["arch"], r["kind"])].append(r)
    order = sorted(groups, key=lambda k: (["mnist", "cifar10", "gtsrb"].index(k[0]), k[1], KIND_ORDER.index(k[2])))
    for key in order:
        g = groups[key]
        n = len(g)
        if key[2] == "clean":
            found = top = index = asr = l1 = "-"
        else:
            found = _pct(sum(detected(r) for r in g), n)
            top = _pct(sum(r["target_rank"] == 1 for r in g), n)
            index = _median([r["target_index"] for r in g])
            asr = _median([r["target_asr"] for r in g], ".1%")
            l1 = f"{_median([r['target_l1'] for r in g], '.1f')} / {_median([r['real_l1'] for r in g], '.0f')}"
        flagged = _pct(sum(r["verdict"] == "backdoored" for r in g), n)
        per_label = _median([r["seconds"] / r["labels"] for r in g], ".2f")
        lines.append(
            f"| {key[0]} | {key[1]} | {KIND_TEXT[key[2]]} | {n} | {found} | {top} | {flagged} | {index} | "
            f"{asr} | {l1} | {_median([r['seconds'] for r in g], '.1f')} | {per_label} |"
        )
    return lines


def misses(records: list[dict], preset: str) -> list[str]:
    out = []
    for r in sorted(records, key=lambda r: (r["model"], r["seed"])):
        if r["preset"] != preset:
            continue
        if r["backdoor"] and not detected(r):
            index = r["target_index"]
            out.append(
                f"- {r['model']} seed {r['seed']}: missed (target {r['target']} index "
                f"{'-' if index is None else f'{index:.2f}'}, rank {r['target_rank']}; flagged {r['flagged']})"
            )
        elif not r["backdoor"] and r["verdict"] == "backdoored":
            out.append(
                f"- {r['model']} seed {r['seed']}: clean model flagged {r['flagged']} "
                f"(highest index {r['max_other_index']:.2f})"
            )
        if r["verdict"] == "inconclusive":
            out.append(f"- {r['model']} seed {r['seed']}: inconclusive ({'; '.join(r.get('reasons') or ['-'])})")
    return out or ["- none"]


def zoo_rows(manifests: list[dict]) -> list[str]:
    lines = [
        "| data | network | backdoored / clean | clean accuracy (mean, min) | real-trigger ASR (min) | "
        "train s/model (device) |",
        "|---|---|---|---|---|---|",
    ]
    groups = defaultdict(list)
    for m in manifests:
        groups[(m["dataset"], m["architecture"])].append(m)
    for (dataset, arch), g in sorted(groups.items(), key=lambda kv: (DATASET_ORDER.index(kv[0][0]), kv[0][1])):
        bad = [m for m in g if m["backdoor"]]
        acc = [m["clean_accuracy"] for m in g]
        asr = min((m["attack_success_rate"] for m in bad), default=None)
        secs = statistics.mean(m["train_seconds"] for m in g)
        lines.append(
            f"| {dataset} | {arch} | {len(bad)} / {len(g) - len(bad)} | {statistics.mean(acc):.1%}, "
            f"{min(acc):.1%} | {'-' if asr is None else f'{asr:.1%}'} | {secs:.0f} ({g[0]['device']}) |"
        )
    return lines


def write_markdown(
    records: list[dict],
    manifests: list[dict],
    path: Path,
    preamble: str = "",
    statistic: str = "log_l1",
    threshold: float | None = None,
    source: str = "evaluation/campaigns/main-gpu/evaluation.jsonl",
    rejudge: bool = True,
) -> None:
    """All tables judge every scan by one outlier rule (default: the engine's), except the rule table; with
    `rejudge` False they show the verdicts the scans themselves gave (inconclusive ones included)."""
    presets = [p for p in ("fast", "default", "thorough", "reference") if any(r["preset"] == p for r in records)]
    presets += sorted({r["preset"] for r in records} - set(presets))
    devices = sorted({r["device"] for r in records})
    weak = sorted(
        {f"{r['model']} ({r['real_asr']:.0%})" for r in records if r["backdoor"] and r["real_asr"] < EFFECTIVE_ASR}
    )
    records = scored(records)
    threshold = DEFAULT_THRESHOLD[statistic] if threshold is None else threshold
    floor = DEFAULT_SPREAD_FLOOR[statistic]
    all_rules = records
    if rejudge:  # as the engine judges now: from the class-frequency line (a no-op on balanced data)
        records = [under_rule(r, statistic, threshold, floor, True) for r in records]
    judge = (
        "(the engine's default, class-frequency correction included; judged again from the recorded L1 norms)"
        if rejudge
        else "(the engine's verdicts as each scan gave them, inconclusive outcome and screening included)"
    )
    text = [
        "# Evaluation: the zoo, scanned",
        "",
        f"Written by `evaluation/evaluate.py` from `{source}`; do not edit by hand.",
        "",
        preamble,
        "",
        "## The zoo (`evaluation/zoo.py`)",
        "",
        *zoo_rows(manifests),
        "",
        "## Summary",
        "",
        f"Scans ran on: {', '.join(devices)}. Outlier test: {rule_name(statistic, threshold, floor, rejudge)} "
        f"{judge}. "
        '"Found" means the true target is among the flagged labels; a clean model is a false positive '
        "when any label is flagged. Stability: "
        "the share of models whose outcome is the same for all seeds. Rates are over each preset's first "
        "seed; the rule table below counts all seeds.",
        "",
        *summary_rows(records, presets),
        "",
        f"Not scored, because their real trigger reaches an ASR below {EFFECTIVE_ASR:.0%} (the poisoning did not "
        f"take): {', '.join(weak) or 'none'}.",
        "",
        "## Outlier rules on the same searches",
        "",
        "Each scan's labels' L1 norms judged by the paper's test (anomaly index on L1 > 2), by the test on "
        "log L1 without a spread floor (the default before it) and by the default, counted over all seeds. "
        "These tables mix both halves of the zoo; evaluation/RULES.md keeps them apart.",
        "",
        *rule_rows(all_rules, presets),
        "",
    ]
    for preset in presets:
        text += [
            f"## Preset `{preset}`",
            "",
            *detail_rows(records, preset),
            "",
            "Misses and false positives (all seeds):",
            "",
            *misses(records, preset),
            "",
        ]
    path.write_text("\n".join(text), encoding="utf-8")
