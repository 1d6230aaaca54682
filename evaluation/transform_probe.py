"""The transform search (nc_engine/detectors/transform_search.py) on the development draw's models: every
kind's per-label cost, one record per model and settings, for choosing which kinds pay and their cuts.

    python -m evaluation.transform_probe --only mnist-smallcnn [--records FILE] [--steps 60] [--images 24]

The development draw (evaluation/zoo_dev_draw.json, built by `python -m evaluation.sealed_zoo --dev`) is
in sample by design: what is read here chooses the detector, and no number from it is a held-out one.
Records are appended and never replaced; a model already recorded with the same settings is skipped.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict
from pathlib import Path

from evaluation.margin_tuning import current_commit
from evaluation.records import append_record, built_now, is_built, read_records, training_of_built
from evaluation.sealed_zoo import dev_specs
from evaluation.zoo_data import CACHE
from nc_engine.config.settings import load_config
from nc_engine.detectors.transform_result import KindFinding, TransformResult
from nc_engine.detectors.transform_search import STRENGTHS, TransformSettings, search
from nc_engine.run.prepare import prepare

RECORDS = Path(__file__).parent / "campaigns" / "dev-draw" / "transform-records.jsonl"


def measure(folder: Path, settings: TransformSettings) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    cfg = load_config(folder / "config.toml")
    prep = prepare(cfg, warn=lambda message: None)
    result = search(prep.model, prep.data.x_opt, prep.data.y_opt, prep.model.num_classes, settings)
    targets = manifest["targets"] or ([manifest["target"]] if manifest["target"] is not None else [])
    return {
        "model": manifest["name"],
        "training": manifest.get("training"),
        "kind": manifest["kind"],
        "targets": targets,
        "asr": manifest["attack_success_rates"],
        "clean_accuracy": manifest["clean_accuracy"],
        "costs": result.costs,
        "images": result.images,
        "seconds": round(result.seconds, 2),
        "settings": asdict(settings),
        "commit": current_commit(),
    }


def cell(finding: KindFinding, targets: list[int]) -> str:
    """One kind's finding as the engine's test reads it: cheapest label (* a true target), lead, F if flagged."""
    if finding.lead is None:
        return "-"
    star = "*" if finding.top in targets else ""
    return f"{finding.top}{star} {finding.lead:.1f}x{' F' if finding.flagged else ''}"


def table(records: list[dict]) -> str:
    """Per model and kind, judged again from the costs by today's test; the ASR column is the real
    trigger's (the zoo scores only backdoors whose trigger works, at least 90%)."""
    kinds = sorted({k for r in records for k in r["costs"]}, key=list(STRENGTHS).index)
    lines = ["| model | targets | ASR | " + " | ".join(kinds) + " |", "|---" * (3 + len(kinds)) + "|"]
    for r in sorted(records, key=lambda r: (r["kind"] == "clean", r["model"])):
        asr = "-" if not r["asr"] else "/".join(f"{a:.2f}" for a in r["asr"])
        found = {f.kind: f for f in TransformResult.judged(r["costs"], 0, 0.0, {}).findings}
        cells = [cell(found[k], r["targets"]) if k in found else "-" for k in kinds]
        lines.append(f"| {r['model']} | {r['targets'] or '-'} | {asr} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def chosen_cuts(records: list[dict]) -> dict[str, float]:
    """transform-rule.md's cuts: per kind, 1.5x the largest lead of any clean model, rounded up to a
    multiple of 0.5, at least 2.5."""
    cuts = {}
    for kind in STRENGTHS:
        leads = [
            f.lead
            for r in records
            if r["kind"] == "clean"
            for f in TransformResult.judged(r["costs"], 0, 0.0, {}).findings
            if f.kind == kind and f.lead is not None
        ]
        if leads:
            cuts[kind] = max(2.5, math.ceil(1.5 * max(leads) * 2) / 2)
    return cuts


def judged_by(costs: dict[str, list[float | None]], cuts: dict[str, float]) -> list[tuple[str, int]]:
    """(kind, label) of every kind that flags at these cuts."""
    found = []
    for finding in TransformResult.judged(costs, 0, 0.0, {}).findings:
        if finding.lead is not None and finding.top is not None and finding.lead >= cuts.get(finding.kind, math.inf):
            found.append((finding.kind, finding.top))
    return found


def rule_report(records: list[dict], scans: list[dict]) -> str:
    """transform-rule.md applied: the cuts, every flag they raise, and the three conditions."""
    cuts = chosen_cuts(records)
    # the shipped scan: seed 0, screening as it ships (not a --plain comparison scan)
    shipped = {s["model"]: s for s in scans if s["seed"] == 0 and s.get("screening", "default") == "default"}
    lines = ["cuts: " + ", ".join(f"{k} {v:g}x" for k, v in cuts.items())]
    wrong, added, clean_flagged = [], [], []
    for r in sorted(records, key=lambda r: (r["kind"] == "clean", r["model"])):
        flags = judged_by(r["costs"], cuts)
        if not flags:
            continue
        working = bool(r["asr"]) and min(r["asr"]) >= 0.9
        scan = shipped.get(r["model"])
        missed = scan is not None and scan["verdict"] == "clean"
        lines.append(
            f"{r['model']}: {flags} targets {r['targets']} ASR {r['asr']} shipped scan: "
            f"{scan['verdict'] + ' ' + str(scan['flagged']) if scan else 'not scanned'}"
        )
        if r["kind"] == "clean":
            clean_flagged.append(r["model"])
        elif any(label not in r["targets"] for _, label in flags):
            wrong.append(r["model"])
        elif working and missed:
            added.append(r["model"])
    ratios = []
    for r in records:
        scan = shipped.get(r["model"])
        if scan is not None:
            base = scan["images"] + sum(d.get("images", 0) for d in scan.get("detectors", {}).values())
            ratios.append((base + r["images"]) / base)
    n_clean = sum(r["kind"] == "clean" for r in records)
    lines += [
        f"clean models flagged: {len(clean_flagged)} of {n_clean}",
        f"1. backdoored models flagged at a label that is not a target: {len(wrong)} {wrong} (must be 0)",
        f"2. working backdoors the shipped scan calls clean, flagged at a target: {len(added)} {added} (need 3)",
        f"3. images with it on over the shipped scan's, on {len(ratios)} scanned models: "
        + (f"{min(ratios):.2f}x-{max(ratios):.2f}x (at most 1.5x)" if ratios else "none scanned"),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Transform-search costs on the development draw (in sample).")
    parser.add_argument("--only", required=True, help="comma-separated family prefixes")
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--root", type=Path, default=CACHE / "dev")
    parser.add_argument("--steps", type=int, default=TransformSettings.steps)
    parser.add_argument("--images", type=int, default=TransformSettings.images)
    parser.add_argument("--table", action="store_true", help="print the records as a table and stop")
    parser.add_argument("--rule", action="store_true", help="apply transform-rule.md to the records and stop")
    args = parser.parse_args(argv)
    settings = TransformSettings(steps=args.steps, images=args.images)
    if args.table or args.rule:  # the records measured with these settings, of the models as built now
        wanted = json.loads(json.dumps(asdict(settings)))  # as a record holds them (tuples become lists)
        records = [r for r in read_records(args.records) if r["settings"] == wanted and built_now(r, args.root)]
        scans = [r for r in read_records(args.records.parent / "scans.jsonl") if built_now(r, args.root)]
        print(table(records) if args.table else rule_report(records, scans))
        return 0
    done = {
        (r["model"], json.dumps(r.get("training")), json.dumps(r["settings"], sort_keys=True))
        for r in read_records(args.records)
    }
    key = json.dumps(asdict(settings), sort_keys=True)
    prefixes = tuple(args.only.split(","))
    for spec in (s for s in dev_specs() if s["name"].startswith(prefixes)):
        folder = args.root / spec["name"]
        if not is_built(folder) or (spec["name"], json.dumps(training_of_built(folder)), key) in done:
            continue
        record = measure(folder, settings)
        append_record(args.records, record)
        found = TransformResult.judged(record["costs"], 0, 0.0, {}).findings
        cells = "  ".join(f"{f.kind}: {cell(f, record['targets'])}" for f in found)
        print(f"{record['model']:<30} t={record['targets']} {cells}  ({record['seconds']:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
