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
from dataclasses import asdict
from pathlib import Path

from evaluation.margin_tuning import current_commit
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Transform-search costs on the development draw (in sample).")
    parser.add_argument("--only", required=True, help="comma-separated family prefixes")
    parser.add_argument("--records", type=Path, default=RECORDS)
    parser.add_argument("--root", type=Path, default=CACHE / "dev")
    parser.add_argument("--steps", type=int, default=TransformSettings.steps)
    parser.add_argument("--images", type=int, default=TransformSettings.images)
    parser.add_argument("--table", action="store_true", help="print the records as a table and stop")
    args = parser.parse_args(argv)
    settings = TransformSettings(steps=args.steps, images=args.images)
    if args.table:  # the records measured with these settings
        records = [json.loads(line) for line in args.records.read_text().splitlines()]
        print(table([r for r in records if r["settings"] == json.loads(json.dumps(asdict(settings)))]))
        return 0
    args.records.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.records.is_file():
        for line in args.records.read_text().splitlines():
            r = json.loads(line)
            done.add((r["model"], json.dumps(r["settings"], sort_keys=True)))
    key = json.dumps(asdict(settings), sort_keys=True)
    prefixes = tuple(args.only.split(","))
    for spec in (s for s in dev_specs() if s["name"].startswith(prefixes)):
        folder = args.root / spec["name"]
        if (spec["name"], key) in done or not (folder / "model.pt").is_file():
            continue
        record = measure(folder, settings)
        with args.records.open("a") as f:
            f.write(json.dumps(record) + "\n")
        found = TransformResult.judged(record["costs"], 0, 0.0, {}).findings
        cells = "  ".join(f"{f.kind}: {cell(f, record['targets'])}" for f in found)
        print(f"{record['model']:<30} t={record['targets']} {cells}  ({record['seconds']:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
