"""A probe toward a second detector (issue 23): adversarial weight noise, after ANP (Wu and Wang, NeurIPS
2021) and BAN (Xu et al., NeurIPS 2024). Not a detector yet: no decision rule is fixed.

A backdoor is a shortcut the model keeps in a few weights. Noise on the weights chosen to hurt the model
on clean images (signed gradient ascent on their cross-entropy, each weight moved by at most `eps` of
itself) may open a backdoored model's shortcut, so that its errors pile onto the target whatever the
trigger looked like, while a clean model's errors wander. It needs the weights and a few clean images, and
one optimisation for the whole model, not one per label. What the demo models showed is in
evaluation/campaigns/weight-noise-probe/notes.md.

    python -m evaluation.weight_noise CONFIG [CONFIG ...]   # each bound: clean accuracy, top error label, its share
    python -m evaluation.weight_noise --tuning mnist        # the zoo's tuning-half models, into records.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.margin_tuning import cost_rank, current_commit
from evaluation.zoo import build_model, zoo_specs
from evaluation.zoo_data import CACHE
from evaluation.zoo_split import load_split
from nc_engine.config.settings import load_config
from nc_engine.data.load import open_data
from nc_engine.models.load import load_model

RECORDS = Path(__file__).parent / "campaigns" / "weight-noise-probe" / "records.jsonl"


@dataclass(frozen=True)
class NoiseSettings:
    # noise bounds, smallest first: a factor of sqrt(2) apart, from below what breaks the most fragile
    # tuning-half model (GTSRB CompactCNN: 20% accuracy left at 0.025) to past what breaks MNIST's
    ladder: tuple[float, ...] = tuple(round(0.0025 * 2 ** (k / 2), 4) for k in range(14))
    steps: int = 20  # signed-gradient steps per bound
    step_fraction: float = 0.2  # each step moves the noise by this share of the bound
    samples: int = 256  # clean images
    seed: int = 0
    stop_below: float = 0.5  # climb no further once clean accuracy is below this


@dataclass(frozen=True)
class Rung:
    eps: float
    accuracy: float  # clean accuracy under the noise
    top_label: int  # the label most misclassified images went to
    share: float  # its share of them


def _weights(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.is_floating_point()]


def perturbed_predictions(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, settings: NoiseSettings
) -> torch.Tensor:
    """The model's labels for x under the worst noise of bound `eps` the ascent finds; the weights are put
    back as they were, whatever happens."""
    weights = _weights(model)
    original = [p.detach().clone() for p in weights]
    wanted = [p.requires_grad for p in weights]
    generator = torch.Generator().manual_seed(settings.seed)
    noise = [((torch.rand(p.shape, generator=generator) * 2 - 1) * eps).to(p.device) for p in weights]
    try:
        for p in weights:
            p.requires_grad_(True)
        for _ in range(settings.steps):
            with torch.no_grad():
                for p, w, n in zip(weights, original, noise, strict=True):
                    p.copy_(w * (1 + n))
            for p in weights:
                p.grad = None
            F.cross_entropy(model(x).float(), y).backward()
            with torch.no_grad():
                for p, w, n in zip(weights, original, noise, strict=True):
                    if p.grad is not None:
                        n.add_(torch.sign(p.grad * w), alpha=settings.step_fraction * eps).clamp_(-eps, eps)
        with torch.no_grad():
            for p, w, n in zip(weights, original, noise, strict=True):
                p.copy_(w * (1 + n))
            return model(x).argmax(1)
    finally:
        with torch.no_grad():
            for p, w, keep in zip(weights, original, wanted, strict=True):
                p.copy_(w)
                p.grad = None
                p.requires_grad_(keep)


def error_shares(predicted: torch.Tensor, y: torch.Tensor, num_classes: int) -> list[float]:
    """Per label, the share of the misclassified images predicted as it (all zero when none is wrong)."""
    wrong = predicted != y
    counts = torch.bincount(predicted[wrong], minlength=num_classes).float()
    total = float(wrong.sum())
    return [float(c) / total if total else 0.0 for c in counts[:num_classes]]


def ladder(model: nn.Module, x: torch.Tensor, y: torch.Tensor, num_classes: int, settings: NoiseSettings) -> list[Rung]:
    """Every bound of the ladder: where the clean images' errors went. x: images as the model takes them."""
    rungs = []
    for eps in settings.ladder:
        predicted = perturbed_predictions(model, x, y, eps, settings)
        shares = error_shares(predicted, y, num_classes)
        top = max(range(num_classes), key=lambda k: shares[k])
        rungs.append(Rung(eps, float((predicted == y).float().mean()), top, shares[top]))
        if rungs[-1].accuracy < settings.stop_below:
            break
    return rungs


def clean_images(config: str, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` images of a config's data (a seeded draw), in [0, 1], and their labels."""
    source = open_data(load_config(config))
    pick = np.sort(
        np.random.default_rng(seed).choice(len(source.labels), min(count, len(source.labels)), replace=False)
    )
    x, kept = source.load(pick, lambda message: None)
    return x, torch.from_numpy(source.labels[kept].astype(np.int64))


def _describe(name: str, rungs: list[Rung]) -> str:
    return f"{name} " + " ".join(f"{r.eps}:{r.accuracy:.2f}/{r.top_label}:{r.share:.2f}" for r in rungs)


def probe_tuning(prefixes: tuple[str, ...], root: Path, settings: NoiseSettings) -> None:
    """Build the zoo's tuning-half models whose names start with `prefixes` (as the zoo builds them, cached)
    and append each one's ladder to RECORDS once; models already recorded are skipped."""
    tuning = {n for n, half in load_split().items() if half == "tuning"}
    kept = [json.loads(line) for line in RECORDS.read_text().splitlines()] if RECORDS.exists() else []
    done = {r["name"] for r in kept if r["settings"] == json.loads(json.dumps(asdict(settings)))}
    specs = [s for s in zoo_specs() if s.name in tuning and s.name.startswith(prefixes) and s.name not in done]
    for spec in sorted(specs, key=lambda s: (cost_rank(s.name), s.name)):
        manifest = build_model(spec, root)
        config = str(root / spec.name / "config.toml")
        cfg = load_config(config)
        x, y = clean_images(config, settings.samples, settings.seed)
        started = time.perf_counter()
        rungs = ladder(load_model(cfg, torch.device("cpu")), x, y, cfg.model.num_classes, settings)
        record = {
            "name": spec.name,
            "targets": spec.targets(),
            "clean_accuracy": manifest["clean_accuracy"],
            "rungs": [asdict(r) for r in rungs],
            "seconds": time.perf_counter() - started,
            "settings": asdict(settings),
            "commit": current_commit(),
            "device": "cpu",
        }
        with RECORDS.open("a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")
        print(_describe(f"{spec.name} (targets {spec.targets()})", rungs), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Where clean images' errors go under adversarial weight noise.")
    parser.add_argument("configs", nargs="*", help="scan configs (the model and its clean data)")
    parser.add_argument("--tuning", default="", help="zoo tuning-half name prefixes to build and record")
    parser.add_argument("--root", type=Path, default=CACHE / "zoo")
    args = parser.parse_args(argv)
    settings = NoiseSettings()
    for config in args.configs:
        cfg = load_config(config)
        x, y = clean_images(config, settings.samples, settings.seed)
        rungs = ladder(load_model(cfg, torch.device("cpu")), x, y, cfg.model.num_classes, settings)
        print(_describe(config, rungs), flush=True)
    if args.tuning:
        probe_tuning(tuple(p for p in args.tuning.split(",") if p), args.root, settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
