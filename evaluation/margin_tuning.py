"""The max-margin detector on the zoo's tuning half (first draw, CPU families), to decide whether it is on
by default. Fixed before any tuning model was measured with it:

- settings: nc_engine.detectors.max_margin.MarginSettings() as shipped (8 starts, 200 steps, alpha 0.05,
  the MM-BD paper's level), seed 0; no setting is changed after reading these records;
- rule for turning it on by default (`[detect].max_margin = true`): it flags at most 1 of the tuning
  half's clean models, and on every backdoored model it flags, the flagged label is a true target.

    python -m evaluation.margin_tuning [--root DIR] [--only mnist,gtsrb]   # resumable: done models are kept

Each model is built as the zoo builds it (cached) and measured once; records go to
evaluation/campaigns/max-margin-tuning/records.jsonl, one line per model, never replaced.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

import torch

from evaluation.records import append_record, read_records
from evaluation.zoo import build_model, zoo_specs
from evaluation.zoo_data import CACHE
from evaluation.zoo_split import load_split
from nc_engine.config.settings import load_config
from nc_engine.detectors.margin_result import MarginResult
from nc_engine.detectors.max_margin import MarginSettings, detect
from nc_engine.models.load import load_model

RECORDS = Path(__file__).parent / "campaigns" / "max-margin-tuning" / "records.jsonl"
ORDER = ("mnist", "gtsrb-compact", "cifar10-compact", "gtsrb-resnet8", "cifar10-resnet8")  # cheapest first


def current_commit() -> str:
    out = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    )
    return out.stdout.strip()


def cost_rank(name: str) -> int:
    return next((i for i, prefix in enumerate(ORDER) if name.startswith(prefix)), len(ORDER))


def measure(spec, root: Path) -> dict:
    manifest = build_model(spec, root)
    cfg = load_config(str(root / spec.name / "config.toml"))
    model = load_model(cfg, torch.device("cpu"))
    result = detect(model, cfg.model.num_classes, cfg.model.input_shape, torch.device("cpu"), MarginSettings())
    return {
        "name": spec.name,
        "kind": spec.kind,
        "targets": spec.targets(),
        "clean_accuracy": manifest["clean_accuracy"],
        "attack_success_rate": manifest["attack_success_rate"],
        **result.to_dict(),
        "commit": current_commit(),
        "device": "cpu",
    }


def summary(records: list[dict]) -> str:
    """The records as a markdown table, each judged by today's statistic (margin_result: the anomaly index
    of the largest log margin, rule-2.md, or its lead over the others' median, rule-3.md), and the rule's
    tally. The records keep what was measured."""
    lines = [
        "| model | targets | top label | lead over the others' median | anomaly index | flagged |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    judged = [MarginResult.judged(r["margins"], 0, 0.0, {}) for r in records]
    for r, j in zip(records, judged, strict=True):
        lead = j.lead if j.lead is not None else float("nan")
        targets = ", ".join(map(str, r["targets"])) or "-"
        flagged = ", ".join(map(str, j.flagged)) or "-"
        index = f"{j.index:.2f}" if j.index is not None else "-"
        lines.append(f"| {r['name']} | {targets} | {j.top_label} | {lead:.2f}x | {index} | {flagged} |")
    pairs = list(zip(records, judged, strict=True))
    clean = [j for r, j in pairs if not r["targets"]]
    backdoored = [(r, j) for r, j in pairs if r["targets"]]
    found = sum(bool(j.flagged) and set(j.flagged) <= set(r["targets"]) for r, j in backdoored)
    wrong = sum(bool(set(j.flagged) - set(r["targets"])) for r, j in backdoored)
    lines.append("")
    lines.append(
        f"{len(records)} models: {found}/{len(backdoored)} backdoored flagged at a true target "
        f"({wrong} at another label), {sum(bool(j.flagged) for j in clean)}/{len(clean)} clean flagged."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Max-margin statistic on the zoo's tuning half.")
    parser.add_argument("--root", type=Path, default=CACHE / "zoo")
    parser.add_argument("--only", default="", help="comma-separated name prefixes (mnist, gtsrb-compact, ...)")
    parser.add_argument("--summary", action="store_true", help="print the records as a table, measure nothing")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(read_records(RECORDS)))
        return 0
    tuning = {n for n, half in load_split().items() if half == "tuning"}
    prefixes = [p for p in args.only.split(",") if p]
    wanted = [s for s in zoo_specs() if s.name in tuning and (not prefixes or s.name.startswith(tuple(prefixes)))]
    specs = sorted(wanted, key=lambda s: (cost_rank(s.name), s.name))
    done = {r["name"] for r in read_records(RECORDS)}
    for spec in specs:
        if spec.name in done:
            continue
        started = time.perf_counter()
        record = measure(spec, args.root)
        append_record(RECORDS, record)
        print(
            f"{spec.name:<28} targets {record['targets']} top {record['top_label']} flagged {record['flagged']} "
            f"index {record['index']} ({time.perf_counter() - started:.0f}s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
