"""Scan a spec-file draw's built models with the engine as it ships: the development draw now, the sealed
third draw once every choice is committed (issue 23).

    python -m evaluation.draw_scans --dev --only mnist-smallcnn [--seeds 0] [--records FILE]
    python -m evaluation.draw_scans --sealed --only mnist-smallcnn   # once, when every choice is committed
    python -m evaluation.draw_scans --dev --only gtsrb-compact --plain  # screening off: the plain scan

`--plain` scans with `screening = "off"` (every label at the full budget), the comparison issue 23 asks
for on every model: screened and plain scans must give the same verdicts.

One record per (model, its training, seed, screening) is appended as it finishes (evaluate.scan_model's, with every
detector's evidence) and never replaced: a rerun skips what is there, and a model built again with other
training gets records of its own. The sealed draw's seeds are its specs' own.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from evaluation.evaluate import scan_model
from evaluation.records import append_record, built_now, is_built, read_records, training_of_built
from evaluation.sealed_zoo import dev_specs, sealed_specs
from evaluation.zoo_data import CACHE
from evaluation.zoo_sealed_draw import SCAN_SEEDS

CAMPAIGNS = Path(__file__).parent / "campaigns"


def table(records: list[dict], root: Path) -> str:
    """The records of the models as built under `root` now, one row each, as the notes quote them."""
    rows = [
        "| model | ASR | screening | verdict | flagged | fired | target index | images | s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (r["model"], r.get("screening", "default"), r["seed"])):
        if not built_now(r, root):
            continue
        asr = f"{r['real_asr']:.2f}" if r["real_asr"] is not None else "-"
        index = f"{r['target_index']:.2f}" if r.get("target_index") is not None else "-"
        rows.append(
            f"| {r['model']} | {asr} | {r.get('screening', 'default')} | {r['verdict']} | {r['flagged']} | "
            f"{', '.join(r['fired']) or '-'} | {index} | {r['images']:,} | {r['seconds']:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scan a draw's built models (records are never replaced).")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--dev", action="store_true", help="the development draw (in sample)")
    which.add_argument("--sealed", action="store_true", help="the sealed third draw (the headline; once)")
    parser.add_argument("--only", required=True, help="comma-separated family prefixes")
    parser.add_argument("--seeds", default=None, help="comma-separated scan seeds (dev: 0; sealed: its own)")
    parser.add_argument("--records", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--root", type=Path, default=None, help="the built models (default: .cache/dev or .cache/sealed)"
    )
    parser.add_argument("--plain", action="store_true", help='screening = "off": the plain scan, to compare')
    parser.add_argument("--table", action="store_true", help="print the records of the models as built now")
    args = parser.parse_args(argv)
    screening = "off" if args.plain else "default"  # the default scan leaves the setting as it ships
    specs, name = (dev_specs(), "dev-draw") if args.dev else (sealed_specs(), "sealed-draw")
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else ([0] if args.dev else list(SCAN_SEEDS))
    if args.sealed and args.seeds:
        parser.error("the sealed draw is scanned with its specs' seeds only")
    records = args.records or CAMPAIGNS / name / "scans.jsonl"
    done = {
        (r["model"], json.dumps(r.get("training")), r["seed"], r.get("screening", "default"))
        for r in read_records(records)
    }
    root = args.root or CACHE / ("dev" if args.dev else "sealed")
    prefixes = tuple(args.only.split(","))
    if args.table:
        print(table([r for r in read_records(records) if r["model"].startswith(prefixes)], root))
        return 0
    for seed in seeds:
        for spec in (s for s in specs if s["name"].startswith(prefixes)):
            folder = root / spec["name"]
            if not is_built(folder) or (spec["name"], json.dumps(training_of_built(folder)), seed, screening) in done:
                continue
            record = scan_model(folder, "default", seed, args.device, {"screening": "off"} if args.plain else None)
            record["screening"] = screening
            append_record(records, record)
            print(
                f"{record['model']:<30} seed {seed} {screening:<4} {record['verdict']:<10} flagged {record['flagged']} "
                f"fired {record['fired']} ({record['seconds']:.0f}s)",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
