"""Scan every zoo model through its own config file and score the verdicts.

    python -m evaluation.evaluate [--only mnist] [--half test] [--presets fast,default,thorough] [--seeds 0,1,2]
                                  [--device cuda] [--workers 4] [--results FILE.jsonl] [--markdown RESULTS.md]

Each scan is the config a user would write (the zoo's config.toml) with `scan.preset` and `scan.seed`
set. One JSON line per scan goes to --results as it finishes (a rerun skips what is there); the
tables in --markdown are built from all lines (evaluation/evaluate_report.py). A campaign keeps its records,
manifests/, notes.md and RESULTS.md in one folder (evaluation/campaigns/<campaign>/; evaluation/README.md).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
import tomllib
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from evaluation.evaluate_report import write_markdown
from evaluation.zoo import CACHE, build_zoo, second_draw_names
from evaluation.zoo_split import HALVES, load_split
from nc_engine import run_scan
from nc_engine.config.settings import config_from_dict

warnings.filterwarnings("ignore", category=FutureWarning)

MAIN_RESULTS = Path(__file__).parent / "campaigns" / "main-gpu" / "evaluation.jsonl"  # the first campaign


def scan_model(folder: Path, preset: str, seed: int, device: str = "cpu", scan_keys: dict | None = None) -> dict:
    """Scan one zoo model with a preset and seed; returns one scored record."""
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    source = folder / "config.toml"
    tables = tomllib.loads(source.read_text(encoding="utf-8"))
    tables.setdefault("scan", {}).update(preset=preset, seed=seed, device=device, **(scan_keys or {}))
    with tempfile.TemporaryDirectory() as out:
        tables["output"] = {"dir": out}
        cfg = config_from_dict(tables, source=str(source), base_dir=folder)
        started = time.perf_counter()
        report = run_scan(cfg)
        seconds = time.perf_counter() - started
        rows = {r.label: r for r in report.labels}
        spread = [mask_spread(Path(report.run_dir) / rows[k].trigger_npz) for k in sorted(rows)]
    target = manifest["target"]
    others = [r.anomaly_index or 0.0 for r in report.labels if r.label != target]
    record = {
        "model": manifest["name"],
        "training": manifest.get("training"),  # the draws' builds say how they trained (sealed_zoo.training_of)
        "dataset": manifest["dataset"],
        "arch": manifest["request"]["arch"],
        "kind": manifest["kind"],
        "backdoor": manifest["backdoor"],
        "target": target,
        "preset": preset,
        "seed": seed,
        "verdict": report.verdict,
        "flagged": report.flagged,
        "max_other_index": max(others) if others else None,
        "seconds": seconds,
        "labels": len(rows),
        "images": report.info.images,
        "scan_accuracy": report.info.clean_accuracy,
        "device": report.info.device,
        "real_l1": manifest["trigger_l1"],
        "real_asr": manifest["attack_success_rate"],
        "median_l1": report.median_l1,
        "l1": [rows[k].l1_norm for k in sorted(rows)],
        "index": [rows[k].anomaly_index for k in sorted(rows)],
        "converged": [rows[k].converged for k in sorted(rows)],
        "statistic": report.statistic,
        "threshold": report.threshold,
        "spread_floor": report.spread_floor,
        "frequency_correction": report.frequency_correction,
        "frequency_slope": report.frequency_slope,
        "label_share": report.info.label_share,
        "reasons": list(report.reasons),
        "screened": bool(report.screening),
        "stages": [rows[k].stage for k in sorted(rows)],  # screened scans: only "confirmed" labels can be flagged
        "asr": [rows[k].asr for k in sorted(rows)],
        "mask_spread": spread,  # for rules beyond L1 (tuning half)
        "fired": list(report.fired),  # the detectors that flagged a label
        "detectors": {name: _evidence(found) for name, found in report.detectors.items()},
    }
    if target is not None:
        row = rows[target]
        ranked = sorted(report.labels, key=lambda r: -(r.anomaly_index or 0.0))
        record.update(
            target_flagged=target in report.flagged,
            target_index=row.anomaly_index,
            target_rank=[r.label for r in ranked].index(target) + 1,
            target_l1=row.l1_norm,
            target_asr=row.asr,
        )
    if manifest.get("targets"):  # two triggers, two targets: found only when both are flagged
        record.update(
            targets=manifest["targets"], targets_flagged=all(t in report.flagged for t in manifest["targets"])
        )
    return record


def _evidence(result: dict) -> dict:
    """A detector's result without its bulky settings: what a record needs to judge it again."""
    return {k: v for k, v in result.items() if k not in ("settings",)}


def mask_spread(npz: Path) -> float | None:
    """How far a reversed mask spreads: its mass's radius of gyration over the image side. A BadNets patch
    gives a tight blob; a natural feature of a label, strokes spread over the object. None if unreadable."""
    try:
        with np.load(npz) as saved:
            mask = np.asarray(saved["mask"], dtype=np.float64)
    except (OSError, KeyError, ValueError):
        return None
    total = mask.sum()
    if mask.ndim != 2 or not total > 0:
        return None
    ys, xs = np.indices(mask.shape)
    cy, cx = (mask * ys).sum() / total, (mask * xs).sum() / total
    return float(np.sqrt((mask * ((ys - cy) ** 2 + (xs - cx) ** 2)).sum() / total) / max(mask.shape))


def write_results(results: Path, manifests: list[dict], markdown: Path, notes: Path, rejudge: bool = True) -> None:
    """The report: the tables from the records, after the hand-written notes (how and where)."""
    records = [json.loads(line) for line in results.read_text().splitlines()]
    preamble = notes.read_text(encoding="utf-8") if notes.is_file() else ""
    root = Path(__file__).resolve().parents[1]
    source = results.resolve().relative_to(root) if results.resolve().is_relative_to(root) else results
    write_markdown(records, manifests, markdown, preamble, source=str(source), rejudge=rejudge)


DRAWS = {"first": ("first",), "second": ("second",), "both": ("first", "second")}


def in_half(half: str, draw: str = "first") -> Callable[[str], bool]:
    """Whether a zoo model belongs to `half` of evaluation/zoo_split.json (models it does not list: no),
    among the models of `draw` ("first", "second" or "both"; evaluation/zoo.py, SECOND_DRAW)."""
    split = load_split(draws=DRAWS[draw])
    return lambda name: split.get(name) == half


def chosen(half: str | None, draw: str) -> Callable[[str], bool]:
    """The models a run builds and scans: one half of the split's `draw`, or without a half every model
    except those of the draws not asked for (families outside the split count as the first draw's)."""
    if half:
        return in_half(half, draw)
    if draw == "both":
        return lambda name: True
    second = set(second_draw_names())
    return lambda name: (name in second) == (draw == "second")


def _scan_job(args: tuple[str, str, int, str, int]) -> dict:
    folder, preset, seed, device, threads = args
    torch.set_num_threads(threads)
    warnings.filterwarnings("ignore")
    return scan_model(Path(folder), preset, seed, device)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Scan the zoo and write RESULTS.md.")
    parser.add_argument("--root", type=Path, default=CACHE / "zoo")
    parser.add_argument("--only", default="", help="comma-separated datasets (mnist) or families (mnist-mlp)")
    parser.add_argument("--presets", default="fast,default,thorough")
    parser.add_argument("--seeds", default="0,1,2", help="seeds for --seeded presets; others run the first")
    parser.add_argument("--seeded", default="default", help="comma-separated presets that run every seed")
    parser.add_argument(
        "--half", choices=HALVES, default=None, help="only the models of one half of evaluation/zoo_split.json"
    )
    parser.add_argument(
        "--draw",
        choices=list(DRAWS),
        default="first",
        help="the zoo's first draw, its second (zoo.py, SECOND_DRAW) or both",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--build-workers", type=int, default=0, help="processes for training (default --workers)")
    parser.add_argument(
        "--results",
        type=Path,
        default=MAIN_RESULTS,
        help="the campaign's records (default: the main zoo's, evaluation/campaigns/main-gpu/)",
    )
    parser.add_argument("--markdown", type=Path, default=None, help="the report (default: RESULTS.md beside --results)")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rewrite --markdown from --results and the saved manifests, scanning nothing",
    )
    parser.add_argument(
        "--manifests",
        type=Path,
        default=None,
        help="where the zoo's manifests are saved (default: manifests/ beside --results)",
    )
    parser.add_argument(
        "--notes", type=Path, default=None, help="hand-written part of the report (default: notes.md beside --results)"
    )
    parser.add_argument(
        "--engine-verdicts",
        action="store_true",
        help="report the verdicts the scans gave, not the default rule re-applied to their L1 norms",
    )
    return parser.parse_args()


def main() -> None:
    args = arguments()
    saved = args.manifests or args.results.parent / "manifests"
    notes = args.notes or args.results.parent / "notes.md"
    args.markdown = args.markdown or args.results.parent / "RESULTS.md"
    if args.report_only:
        write_results(
            args.results,
            [json.loads(p.read_text()) for p in sorted(saved.glob("*.json"))],
            args.markdown,
            notes,
            not args.engine_verdicts,
        )
        return
    datasets = [d for d in args.only.split(",") if d] or None
    started = time.perf_counter()
    keep = chosen(args.half, args.draw)
    manifests = build_zoo(args.root, datasets, args.device, args.build_workers or args.workers, keep=keep)
    print(f"zoo ready: {len(manifests)} models ({time.perf_counter() - started:.0f}s)", flush=True)
    saved.mkdir(parents=True, exist_ok=True)
    for m in manifests:
        (saved / f"{m['name']}.json").write_text(json.dumps(m, indent=1))

    seeds = [int(s) for s in args.seeds.split(",")]
    done = set()
    args.results.parent.mkdir(parents=True, exist_ok=True)
    if args.results.is_file():
        for line in args.results.read_text().splitlines():
            r = json.loads(line)
            done.add((r["model"], r["preset"], r["seed"]))
    threads = max(1, torch.get_num_threads() // args.workers)
    # Every preset's first seed before the default's extra seeds, so a cut-short run still compares presets.
    plan = [(p, seeds[0]) for p in args.presets.split(",")]
    plan += [(p, s) for p in args.seeded.split(",") for s in seeds[1:]]
    jobs = [
        (str(args.root / m["name"]), preset, seed, args.device, threads)
        for preset, seed in plan
        for m in manifests
        if (m["name"], preset, seed) not in done
    ]
    print(f"{len(jobs)} scans to run ({len(done)} already in {args.results})", flush=True)
    context = multiprocessing.get_context("spawn")  # CUDA cannot be forked
    with ProcessPoolExecutor(args.workers, mp_context=context) as pool, args.results.open("a") as out:
        for record in pool.map(_scan_job, jobs):
            out.write(json.dumps(record) + "\n")
            out.flush()
            index = record.get("target_index")
            print(
                f"{record['model']:<28} {record['preset']:<9} seed {record['seed']} {record['verdict']:<10} "
                f"flagged {record['flagged']} target index {index if index is None else round(index, 2)} "
                f"{record['seconds']:.1f}s",
                flush=True,
            )
    write_results(args.results, manifests, args.markdown, notes, not args.engine_verdicts)
    print(f"wrote {args.markdown} ({time.perf_counter() - started:.0f}s in all)")


if __name__ == "__main__":
    main()
