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

import numpy as np

from evaluation.margin_tuning import current_commit
from evaluation.sealed_zoo import dev_specs
from evaluation.zoo_data import CACHE
from nc_engine.config.settings import load_config
from nc_engine.detectors.transform_search import STRENGTHS, TransformSettings, search
from nc_engine.run.prepare import prepare

RECORDS = Path(__file__).parent / "campaigns" / "dev-draw" / "transform-records.jsonl"


def log_index(costs: list[float | None], ceiling: float) -> tuple[int, float, float]:
    """(the cheapest label, its anomaly index on log cost, the others' median over its cost); a label the
    search never turned counts at the ceiling."""
    c = np.log([ceiling if v is None else v for v in costs])
    top = int(np.argmin(c))
    median = float(np.median(c))
    spread = 1.4826 * float(np.median(np.abs(c - median)))
    others = np.median(np.delete(c, top))
    return top, (median - c[top]) / max(spread, 1e-12), float(math.exp(others - c[top]))


def measure(folder: Path, settings: TransformSettings) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    cfg = load_config(folder / "config.toml")
    prep = prepare(cfg, warn=lambda message: None)
    result = search(prep.model, prep.data.x_opt, prep.data.y_opt, prep.model.num_classes, settings)
    summary = {}
    for kind, costs in result.costs.items():
        top, index, lead = log_index(costs, 2 * STRENGTHS[kind][1])
        summary[kind] = {"top": top, "index": round(index, 3), "lead": round(lead, 3)}
    targets = manifest["targets"] or ([manifest["target"]] if manifest["target"] is not None else [])
    return {
        "model": manifest["name"],
        "kind": manifest["kind"],
        "targets": targets,
        "asr": manifest["attack_success_rates"],
        "clean_accuracy": manifest["clean_accuracy"],
        "costs": result.costs,
        "summary": summary,
        "images": result.images,
        "seconds": round(result.seconds, 2),
        "settings": asdict(settings),
        "commit": current_commit(),
    }


def table(records: list[dict]) -> str:
    """Per model and kind: the cheapest label (* = a true target), its index and lead; backdoors whose own
    trigger failed (attack rate under 90%) are marked, as the zoo scores only working ones."""
    kinds = sorted({k for r in records for k in r["costs"]}, key=list(STRENGTHS).index)
    lines = ["| model | targets | ASR | " + " | ".join(kinds) + " |", "|---" * (3 + len(kinds)) + "|"]
    for r in sorted(records, key=lambda r: (r["kind"] == "clean", r["model"])):
        asr = "-" if not r["asr"] else "/".join(f"{a:.2f}" for a in r["asr"])
        cells = [
            f"{v['top']}{'*' if v['top'] in r['targets'] else ''} {v['index']:.1f} / {v['lead']:.1f}x" if v else "-"
            for v in (r["summary"].get(k) for k in kinds)
        ]
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
        cells = "  ".join(
            f"{k}: {v['top']}{'*' if v['top'] in record['targets'] else ''} {v['index']:.1f}/{v['lead']:.1f}x"
            for k, v in record["summary"].items()
        )
        print(f"{record['model']:<30} t={record['targets']} {cells}  ({record['seconds']:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
