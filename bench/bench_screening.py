"""Screen, then confirm, against today's plain scan: stamped images, time and verdict, in one run.

    python -m bench.bench_screening [--models gtsrb-compact-patch-00,...] [--device cpu|cuda]

Each model (default: GTSRB CompactCNN models of the zoo's test half, 43 labels, and a 10-label MNIST
one) is scanned twice with the default preset and the same seed: `screening = "off"` (every label at
the full budget, as before screening existed) and the default `screening = "auto"` (screening for 16
labels or more). Printed: images and wall time of each, their ratios, and both verdicts. Ratios are
taken within this run, since the machine is shared and timings drift. The screening settings were
fixed before these models were scanned (see nc_engine/detectors/neural_cleanse/screening.py); none of them
was tuned on them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from nc_engine.compute.process_tuning import tune_process

tune_process()  # as nc-tui does, before torch loads (the imports below load it, hence their E402)
warnings.filterwarnings("ignore", category=FutureWarning)

from evaluation.zoo import CACHE, build_model, train_mnist, zoo_specs  # noqa: E402
from evaluation.zoo_split import load_split  # noqa: E402
from nc_engine import load_config, run_scan  # noqa: E402

DEFAULT_MODELS = "gtsrb-compact-patch-00,gtsrb-compact-patch-01,gtsrb-compact-clean-01,mnist-legacy-patch"


def model_config(name: str, root: Path, device: str) -> tuple[Path, dict]:
    """(config path, manifest) of a zoo model, trained (cached) if needed."""
    if name == "mnist-legacy-patch":
        manifest = train_mnist(root / name, backdoor=True, seed=0)
        return root / name / "config.toml", manifest
    spec = next(s for s in zoo_specs() if s.name == name)
    return root / name / "config.toml", build_model(spec, root, device)


def timed(config: Path, out: str, device: str, screening: str, overrides: dict | None = None):
    cfg = load_config(config)
    cfg.output.dir, cfg.scan.device, cfg.scan.screening = out, device, screening
    for key, value in (overrides or {}).items():
        setattr(cfg.scan, key, value)
    screen_images = []
    started = time.perf_counter()
    report = run_scan(cfg, lambda e: screen_images.append(e.images) if e.kind == "screening_finished" else None)
    report.screen_images = screen_images[0] if screen_images else 0
    return report, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--root", type=Path, default=CACHE / "zoo")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=NUMBER",
        help="a [scan] screening key for the screened scan, e.g. screen_steps=30",
    )
    args = parser.parse_args()
    overrides = {k: float(v) if "." in v else int(v) for k, v in (item.split("=", 1) for item in args.set)}
    split = load_split()
    print(
        f"{'model':<26}{'half':>7}{'labels':>7}{'plain img':>11}{'auto img':>10}{'ratio':>7}"
        f"{'plain s':>9}{'auto s':>8}{'ratio':>7}  verdicts (plain / auto; target)"
    )
    for name in args.models.split(","):
        config, manifest = model_config(name, args.root, args.device)
        with tempfile.TemporaryDirectory() as out:
            plain, plain_s = timed(config, out, args.device, "off")
            auto, auto_s = timed(config, out, args.device, "auto", overrides)
        target = manifest.get("target")
        same = (plain.verdict, plain.flagged) == (auto.verdict, auto.flagged)
        print(
            f"{name:<26}{split.get(name, '-'):>7}{len(plain.labels):>7}{plain.info.images:>11}"
            f"{auto.info.images:>10}{auto.info.images / plain.info.images:>7.2f}{plain_s:>9.1f}{auto_s:>8.1f}"
            f"{auto_s / plain_s:>7.2f}  {plain.verdict} {plain.flagged} / {auto.verdict} {auto.flagged}; "
            f"{target}{'' if same else '  DIFFERENT VERDICT'}",
            flush=True,
        )
        if auto.screening:
            confirmed = sorted(set(auto.screening["candidates"]) | set(auto.screening["references"]))
            print(
                f"{'':<26}screen {auto.screen_images} images; confirmed {confirmed}"
                f" (candidates {auto.screening['candidates']}), log shift {auto.screening['log_shift']:.2f}"
            )


if __name__ == "__main__":
    main()
