"""How much a label's training frequency explains the size of its reversed trigger (tuning half only).

    python -m evaluation.prior_effect [--results FILE.jsonl ...] [--dataset gtsrb]

A classifier trained on imbalanced data favours its frequent classes, so their triggers come out small on
clean models too: the false positives of the zoo's test half are GTSRB's commonest signs
(evaluation/campaigns/cpu-test-half-draw2/RESULTS.md). This prints, for each tuning-half scan of the dataset, the rank
correlation between a label's share of the training set and how small its trigger is, and the anomaly
indices (log L1, spread floor, as the engine computes them) before and after removing the engine's
class-frequency line (Theil-Sen, leave-one-out) in training frequency. Then the engine's own test on
the same recorded norms, without and with its class-frequency correction (on the scan data's shares), at
the engine's threshold: the tuning-half evidence on which the correction was turned on. It reads the tuning half only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from evaluation.decision_rules import auc, choose_threshold, scan_score
from evaluation.evaluate import in_half
from evaluation.evaluate_report import scored
from evaluation.zoo_data import load_arrays, scan_shares, write_scan_shares
from nc_engine.verdict.class_frequency import corrected
from nc_engine.verdict.outliers import DEFAULT_SPREAD_FLOOR, DEFAULT_THRESHOLD, anomaly_scores

CAMPAIGNS = Path(__file__).parent / "campaigns"
DEFAULT_FILES = [
    CAMPAIGNS / "main-gpu" / "evaluation.jsonl",
    CAMPAIGNS / "rebuild" / "evaluation_rebuild.jsonl",
    CAMPAIGNS / "cpu-tuning-half-gtsrb" / "evaluation_cpu_tuning_half_gtsrb.jsonl",
]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Rank correlation (ties broken by order, enough for continuous L1 norms)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def adjusted_index(l1: list[float], log_freq: np.ndarray, floor: float) -> tuple[list[float], float]:
    """The engine's floored log-L1 anomaly index once its class-frequency line (nc_engine.verdict.class_frequency)
    is taken out, here with the training set's frequencies, and the line's slope."""
    values, slope = corrected(list(l1), np.exp(log_freq).tolist())
    return anomaly_scores(values, "log_l1", spread_floor=floor), slope


def rows_for(records: list[dict], log_freq: np.ndarray, floor: float) -> list[dict]:
    """One row per scan: correlation, slope, the target's and the strongest other label's index, plain and
    adjusted (for a clean model the strongest label of all)."""
    out = []
    for r in records:
        plain = np.array(anomaly_scores(r["l1"], "log_l1", spread_floor=floor))
        adjusted, slope = adjusted_index(r["l1"], log_freq, floor)
        adjusted = np.array(adjusted)
        target = r["target"]
        others = np.ones(len(plain), bool)
        if target is not None:
            others[target] = False
        out.append(
            {
                "model": r["model"],
                "seed": r["seed"],
                "target": target,
                "slope": slope,
                "rho": spearman(log_freq, -np.log(r["l1"])),
                "plain_target": None if target is None else float(plain[target]),
                "adjusted_target": None if target is None else float(adjusted[target]),
                "plain_other": float(plain[others].max()),
                "adjusted_other": float(adjusted[others].max()),
            }
        )
    return out


def tuning_records(paths: list[Path], dataset: str, preset: str = "default") -> list[dict]:
    """The dataset's scans of the tuning half (both draws) in `paths`; test-half scans are never read."""
    tuning = in_half("tuning", "both")
    records = []
    for path in paths:
        if path.is_file():
            for line in path.read_text().splitlines():
                r = json.loads(line)
                if r["dataset"] == dataset and r["preset"] == preset and tuning(r["model"]):
                    records.append({**r, "source": path.name})
    return records


def engine_outcomes(records: list[dict], share: list[float], floor: float, threshold: float) -> dict[str, dict]:
    """The engine's test without and with its class-frequency correction (class_frequency.corrected) on the
    same recorded norms: patch targets and clean scans flagged at `threshold`, the patch ROC-AUC, and the
    threshold the tuning criterion (decision_rules) would choose. No re-scan: the screened candidates stay
    those the plain test chose."""
    records = [{**r, "frequency_correction": False} for r in scored(records)]  # judged raw, then each way
    out = {}
    for name, fix in (("plain", lambda v: v), ("corrected", lambda v: corrected(v, share)[0])):

        def rule(v: list[float], fix=fix) -> list[float]:
            return anomaly_scores(fix(v), "log_l1", spread_floor=floor)

        patch = [scan_score(r, rule) for r in records if r["kind"] == "patch"]
        clean = [scan_score(r, rule) for r in records if not r["backdoor"]]
        out[name] = {
            "patch": (sum(s > threshold for s in patch), len(patch)),
            "clean": (sum(s > threshold for s in clean), len(clean)),
            "auc": auc(patch, clean),
            "chosen": choose_threshold(patch, clean, 0.05) if patch and clean else None,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, nargs="*", default=DEFAULT_FILES)
    parser.add_argument("--dataset", default="gtsrb")
    parser.add_argument("--write-shares", action="store_true", help="write evaluation/scan_shares.json and stop")
    args = parser.parse_args(argv)
    if args.write_shares:
        print(f"wrote {write_scan_shares()}")
        return 0
    _, y_train, _, _ = load_arrays(args.dataset)
    counts = np.bincount(y_train, minlength=int(y_train.max()) + 1).astype(np.float64)
    log_freq = np.log(counts / counts.sum())
    floor = DEFAULT_SPREAD_FLOOR["log_l1"]
    records = tuning_records(args.results, args.dataset)
    print(
        f"{'scan (tuning half)':<44}{'rho':>6}{'slope':>7}  target plain -> adjusted   "
        "strongest other plain -> adjusted"
    )
    rows = rows_for(records, log_freq, floor)
    for row, r in zip(rows, records, strict=True):
        target = "   -" if row["target"] is None else f"{row['plain_target']:5.2f} -> {row['adjusted_target']:5.2f}"
        print(
            f"{r['source'][:18] + ' ' + row['model'] + ' s' + str(row['seed']):<44}{row['rho']:6.2f}"
            f"{row['slope']:7.2f}  {target:<24} {row['plain_other']:5.2f} -> {row['adjusted_other']:5.2f}"
        )
    print(summary(rows))
    threshold = DEFAULT_THRESHOLD["log_l1"]
    for name, o in engine_outcomes(records, scan_shares(args.dataset), floor, threshold).items():
        print(
            f"engine test, {name:<9} at {threshold:g}: patch targets {o['patch'][0]}/{o['patch'][1]}, clean scans "
            f"flagged {o['clean'][0]}/{o['clean'][1]}, patch AUC {o['auc']:.3f}; tuning criterion's threshold "
            f"{o['chosen']:.2f}"
        )
    return 0


def summary(rows: list[dict]) -> str:
    """The margin a threshold has to work in: lowest backdoor target against highest clean-model label."""

    def margin(kind: str) -> str:
        targets = [r[f"{kind}_target"] for r in rows if r["target"] is not None]
        clean = [r[f"{kind}_other"] for r in rows if r["target"] is None]
        if not targets or not clean:
            return f"{kind}: -"
        return f"{kind}: lowest target {min(targets):.2f}, highest clean {max(clean):.2f}"

    return f"{len(rows)} tuning-half scans; " + "; ".join(margin(k) for k in ("plain", "adjusted"))


if __name__ == "__main__":
    sys.exit(main())
