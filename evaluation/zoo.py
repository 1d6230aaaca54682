"""The zoo: models with known backdoors (and clean twins), trained on the real data in ../shared/data.

    python -m evaluation.zoo [--only mnist,cifar10,gtsrb] [--device cuda] [--workers 4] [--root DIR]

Each model folder holds model.pt (TorchScript), config.toml (the config a user would write) and
manifest.json (architecture, data, trigger, target, poison rate, clean accuracy, real-trigger ASR).
Training is seeded and cached: a folder whose manifest matches its spec is reused.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from evaluation.zoo_data import CACHE, DATASETS, SHARED, data_path, load_arrays
from evaluation.zoo_nets import ARCHITECTURES, AUGMENTED, NORMALISED_INSIDE, InsideNormSoftmax
from evaluation.zoo_train import train_augmented
from evaluation.zoo_triggers import Trigger, inside_patch, overlaps, random_patch
from nc_engine.demo import mnist as mnist_model
from nc_engine.demo.training import accuracy, train_classifier

MNIST = SHARED / "data" / "mnist.npz"
MNIST_MEAN, MNIST_STD = DATASETS["mnist"].mean[0], DATASETS["mnist"].std[0]


# ---- the zoo proper -------------------------------------------------------------------------------------
# Budgets keep the whole zoo within about an hour on two CPU cores (README, evaluation/campaigns/main-gpu/RESULTS.md).
TRAINING = {  # (dataset, architecture) -> (training images, epochs, learning rate)
    ("mnist", "smallcnn"): (20000, 2, 2e-3),
    ("cifar10", "compact"): (30000, 4, 2e-3),
    ("cifar10", "resnet8"): (30000, 4, 4e-3),
    ("gtsrb", "compact"): (12000, 5, 2e-3),
    ("gtsrb", "resnet8"): (12000, 5, 4e-3),
    ("mnist", "mlp"): (20000, 2, 1e-3),
    ("mnist", "wrapped"): (20000, 2, 2e-3),
    # Augmented training (zoo_train.py), peak SGD rate; GTSRB's 12,000 images get more epochs.
    ("cifar10", "resnet9"): (50000, 30, 0.15),
    ("gtsrb", "resnet9"): (12000, 40, 0.04),
}
# (dataset, architecture) -> (patch models, blended, noise[, patch inside the object, two triggers with two
# targets]); as many clean models as backdoored ones.
ROSTER = {
    ("mnist", "smallcnn"): (8, 2, 1),
    ("cifar10", "compact"): (5, 1, 1),
    ("cifar10", "resnet8"): (3, 1, 0),
    ("gtsrb", "compact"): (4, 1, 0),
    ("gtsrb", "resnet8"): (2, 0, 0),
    # Families added after the outlier rule was chosen: every scan of them is out of sample.
    ("mnist", "mlp"): (2, 0, 0),
    ("mnist", "wrapped"): (1, 1, 0),
    # Stronger models (CIFAR-10 at 85 % or more), trained on a GPU, so built only when named (--only).
    ("cifar10", "resnet9"): (2, 1, 0, 1, 1),
    ("gtsrb", "resnet9"): (1, 0, 0, 1, 1),
}
ON_REQUEST = {("cifar10", "resnet9"), ("gtsrb", "resnet9")}
ZOO_VERSION = 1  # bump when training changes, so cached models are rebuilt


@dataclass
class ModelSpec:
    name: str
    dataset: str
    arch: str
    kind: str  # "clean", "patch", "blend", "noise", "inobject", "twotarget"
    seed: int
    target: int | None = None
    rate: float = 0.0
    trigger: dict | None = None
    second: dict | None = None  # two-target models: {"trigger": ..., "target": ...}, poisoned at `rate` too

    def request(self) -> dict:
        n_train, epochs, lr = TRAINING[(self.dataset, self.arch)]
        fields = {k: v for k, v in asdict(self).items() if k != "second" or v is not None}  # older caches stay valid
        return {**fields, "version": ZOO_VERSION, "n_train": n_train, "epochs": epochs, "lr": lr}

    def targets(self) -> list[int]:
        return [t for t in (self.target, (self.second or {}).get("target")) if t is not None]


# A second draw of the main families, made after the first draw's test half came within one model of the
# detection targets (evaluation/campaigns/cpu-test-half/notes.md): 2 more patch models and 2 more clean twins
# each, on a random stream of their own so the first draw's models stay as they were, numbered after them
# and split into halves on their own (zoo_split.py). Fixed before any of them was built or scanned.
SECOND_DRAW = {
    ("mnist", "smallcnn"): 2,
    ("cifar10", "compact"): 2,
    ("cifar10", "resnet8"): 2,
    ("gtsrb", "compact"): 2,
    ("gtsrb", "resnet8"): 2,
}


def train_mnist(folder: Path, **options) -> dict:
    """The BadNets MNIST SmallCNN (nc_engine.demo.mnist) on the shared MNIST file."""
    return mnist_model.train_mnist(folder, MNIST, **options)


def zoo_specs(datasets: list[str] | None = None) -> list[ModelSpec]:
    """The zoo, the same on every machine: triggers, targets and rates drawn from fixed seeds. `datasets`
    picks datasets ("mnist") or families ("mnist-mlp")."""
    specs = []
    for (dataset, arch), counts in ROSTER.items():
        named = f"{dataset}-{arch}" in (datasets or [])
        if (datasets and dataset not in datasets and not named) or ((dataset, arch) in ON_REQUEST and not named):
            continue
        n_patch, n_blend, n_noise, n_inside, n_two = (*counts, 0, 0)[:5]
        info = DATASETS[dataset]
        stream = [ZOO_VERSION, list(DATASETS).index(dataset), list(ARCHITECTURES).index(arch)]
        rng = np.random.default_rng(stream)
        colours = ["white"] if info.channels == 1 else ["white", "black", "red", "green", "yellow", "magenta"]
        backdoored = []
        for _ in range(n_patch):
            backdoored.append(("patch", random_patch(rng, info.size, colours)))
        for k in range(n_blend):
            backdoored.append(("blend", Trigger("blend", alpha=[0.1, 0.2][k % 2], seed=int(rng.integers(0, 2**31)))))
        for _ in range(n_noise):
            backdoored.append(("noise", Trigger("noise", amplitude=8, seed=int(rng.integers(0, 2**31)))))
        for _ in range(n_inside):
            backdoored.append(("inobject", inside_patch(rng, info.size, colours)))
        for _ in range(n_two):
            backdoored.append(("twotarget", random_patch(rng, info.size, colours)))
        specs += _family_specs(dataset, arch, backdoored, rng, colours, start=0)
        if (dataset, arch) in SECOND_DRAW:
            # the suffix must not be 0: the seed sequence pads with zeros, so [*stream, 0] replays `rng`
            draw_rng = np.random.default_rng([*stream, 2])
            patches = [("patch", random_patch(draw_rng, info.size, colours)) for _ in range(SECOND_DRAW[dataset, arch])]
            specs += _family_specs(dataset, arch, patches, draw_rng, colours, start=len(backdoored))
    return specs


def second_draw_names() -> list[str]:
    """The models of the second draw (SECOND_DRAW): numbered after each family's first draw."""
    return sorted(
        f"{d}-{a}-{kind}-{k:02d}"
        for (d, a), n in SECOND_DRAW.items()
        for kind in ("patch", "clean")
        for k in range(sum(ROSTER[d, a]), sum(ROSTER[d, a]) + n)
    )


def _family_specs(
    dataset: str,
    arch: str,
    backdoored: list[tuple[str, Trigger]],
    rng: np.random.Generator,
    colours: list[str],
    start: int,
) -> list[ModelSpec]:
    """One draw of a family: its backdoored models (targets and rates from `rng`, after their triggers)
    and as many clean twins, numbered from `start`."""
    info = DATASETS[dataset]
    specs = []
    for k, (kind, trigger) in enumerate(backdoored, start):
        spec = ModelSpec(
            f"{dataset}-{arch}-{kind}-{k:02d}",
            dataset,
            arch,
            kind,
            seed=100 + k,
            target=int(rng.integers(0, info.num_classes)),
            rate=float(np.round(rng.uniform(0.05, 0.15), 3)),
            trigger=trigger.to_dict(),
        )
        if kind == "twotarget":
            spec.second = _second_backdoor(rng, info.size, info.num_classes, colours, trigger, spec.target)
        specs.append(spec)
    for k in range(start, start + len(backdoored)):
        specs.append(ModelSpec(f"{dataset}-{arch}-clean-{k:02d}", dataset, arch, "clean", seed=200 + k))
    return specs


def _second_backdoor(
    rng: np.random.Generator, size: int, num_classes: int, colours: list[str], first: Trigger, first_target: int
) -> dict:
    """A second patch, apart from the first, for a second target label."""
    second = random_patch(rng, size, colours)
    while overlaps(first, second):
        second = random_patch(rng, size, colours)
    target = int(rng.integers(0, num_classes - 1))
    return {"trigger": second.to_dict(), "target": target + (target >= first_target)}


def config_text(dataset: str, title: str, inside: bool = False) -> str:
    """The scan config a user would write for a zoo model (data path: the shared file on this machine);
    `inside`: the model normalises its own input, so the config's mean and std are 0 and 1."""
    info = DATASETS[dataset]
    mean, std = ([0.0] * info.channels, [1.0] * info.channels) if inside else (list(info.mean), list(info.std))
    return f"""# {title}, TorchScript
[model]
format = "torchscript"
path = "model.pt"
num_classes = {info.num_classes}
input_shape = [{info.channels}, {info.size}, {info.size}]
mean = {mean}
std = {std}

[data]
format = "{info.data_format}"
path = "{data_path(dataset).resolve()}"
split = "test"

[output]
dir = "runs"
"""


def spec_config(spec: ModelSpec) -> str:
    return config_text(
        spec.dataset, f"{spec.name}: {ARCHITECTURES[spec.arch][0]} on {spec.dataset}", spec.arch in NORMALISED_INSIDE
    )


def _backdoors(spec: ModelSpec) -> list[tuple[Trigger, int]]:
    pairs = [(Trigger(**spec.trigger), spec.target)] if spec.trigger else []
    if spec.second:
        pairs.append((Trigger(**spec.second["trigger"]), spec.second["target"]))
    return pairs


def _poison_plan(spec: ModelSpec, y: np.ndarray, rng: np.random.Generator) -> list[tuple[np.ndarray, Trigger, int]]:
    """(indices to stamp, trigger, target) per backdoor: `rate` of the images, none of them already the
    target or already poisoned for another backdoor."""
    plan, taken = [], np.zeros(len(y), bool)
    for trigger, target in _backdoors(spec):
        chosen = rng.choice(np.flatnonzero((y != target) & ~taken), size=int(spec.rate * len(y)), replace=False)
        taken[chosen] = True
        plan.append((chosen, trigger, target))
    return plan


def _train(
    spec: ModelSpec, x: np.ndarray, y: np.ndarray, dev: torch.device, rng: np.random.Generator
) -> torch.nn.Module:
    info = DATASETS[spec.dataset]
    _, epochs, lr = TRAINING[(spec.dataset, spec.arch)]
    plan = _poison_plan(spec, y, rng)
    y = y.copy()
    for chosen, _, target in plan:
        y[chosen] = target
    torch.manual_seed(spec.seed)
    net = ARCHITECTURES[spec.arch][1](info.channels, info.num_classes)
    if spec.arch in AUGMENTED:  # triggers stamped after each augmentation; GTSRB signs must not be mirrored
        return train_augmented(
            net,
            x,
            y,
            info.mean,
            info.std,
            epochs,
            spec.seed,
            dev,
            lr,
            flip=spec.dataset != "gtsrb",
            poisoned=[(c, t) for c, t, _ in plan],
        )
    x = x.copy()
    for chosen, trigger, _ in plan:
        x[chosen] = trigger.apply(x[chosen])
    return train_classifier(net, x, y, info.mean, info.std, epochs, spec.seed, dev, lr=lr, batch_size=128, decay=True)


def build_model(spec: ModelSpec, root: Path, device: str = "cpu") -> dict:
    """Train (or reuse) one zoo model; returns its manifest. Rewrites config.toml for this machine's data."""
    folder = Path(root) / spec.name
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file() and (folder / "model.pt").is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("request") == spec.request():
            (folder / "config.toml").write_text(spec_config(spec), encoding="utf-8")
            return manifest
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    info = DATASETS[spec.dataset]
    n_train, epochs, _ = TRAINING[(spec.dataset, spec.arch)]
    x_train, y_train, x_test, y_test = load_arrays(spec.dataset)
    rng = np.random.default_rng(spec.seed)
    pick = rng.choice(len(x_train), size=min(n_train, len(x_train)), replace=False)
    dev = torch.device(device)
    net = _train(spec, x_train[pick], y_train[pick], dev, rng)
    clean = accuracy(net, x_test, y_test, info.mean, info.std, dev)
    asrs = []
    for trigger, target in _backdoors(spec):
        keep = y_test != target
        asrs.append(
            accuracy(net, trigger.apply(x_test[keep]), np.full(int(keep.sum()), target), info.mean, info.std, dev)
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shipped = InsideNormSoftmax(net.cpu(), info.mean, info.std) if spec.arch in NORMALISED_INSIDE else net.cpu()
        torch.jit.script(shipped.eval()).save(str(folder / "model.pt"))
    (folder / "config.toml").write_text(spec_config(spec), encoding="utf-8")
    trigger = Trigger(**spec.trigger) if spec.trigger else None
    manifest = {
        "request": spec.request(),
        "name": spec.name,
        "dataset": spec.dataset,
        "architecture": ARCHITECTURES[spec.arch][0],
        "backdoor": trigger is not None,
        "kind": spec.kind,
        "target": spec.target,
        "trigger": spec.trigger,
        "trigger_text": trigger.describe() if trigger else None,
        "trigger_l1": trigger.l1(info.size, info.size) if trigger else None,
        "poison_rate": spec.rate,
        "train_images": int(len(pick)),
        "epochs": epochs,
        "clean_accuracy": clean,
        "attack_success_rate": asrs[0] if asrs else None,
        "device": device,
        "train_seconds": time.perf_counter() - started,
    }
    if spec.second:
        manifest.update(
            targets=spec.targets(),
            second_trigger_text=Trigger(**spec.second["trigger"]).describe(),
            second_attack_success_rate=asrs[1],
        )
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def _build_one(args: tuple[ModelSpec, Path, str, int]) -> dict:
    spec, root, device, threads = args
    torch.set_num_threads(threads)
    return build_model(spec, root, device)


def build_zoo(
    root: Path, datasets: list[str] | None = None, device: str = "cpu", workers: int = 1, log=print, keep=None
) -> list[dict]:
    """Build every model of the zoo (cached), or those whose name `keep` accepts; `workers` processes
    share the CPU threads."""
    specs = [s for s in zoo_specs(datasets) if keep is None or keep(s.name)]
    for dataset in {s.dataset for s in specs}:
        load_arrays(dataset)  # decode once before the workers start
    threads = max(1, torch.get_num_threads() // workers)
    jobs = [(spec, Path(root), device, threads) for spec in specs]
    manifests = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for m in pool.map(_build_one, jobs) if workers > 1 else map(_build_one, jobs):
            asr = "" if m["attack_success_rate"] is None else f", real-trigger ASR {m['attack_success_rate']:.1%}"
            log(f"{m['name']:<32} acc {m['clean_accuracy']:.1%}{asr} ({m['train_seconds']:.0f}s)", flush=True)
            manifests.append(m)
    return manifests


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the backdoor zoo (cached).")
    parser.add_argument("--root", type=Path, default=CACHE / "zoo")
    parser.add_argument("--only", default="", help="comma-separated datasets (mnist, cifar10, gtsrb)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    started = time.perf_counter()
    manifests = build_zoo(args.root, [d for d in args.only.split(",") if d] or None, args.device, args.workers)
    print(f"{len(manifests)} models in {time.perf_counter() - started:.0f}s under {args.root}")


if __name__ == "__main__":
    main()
