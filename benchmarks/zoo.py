"""The zoo: models with known backdoors (and clean twins), trained on the real data in ../shared/data.

    python benchmarks/zoo.py [--only mnist,cifar10,gtsrb] [--device cuda] [--workers 4] [--root DIR]

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

from benchmarks.zoo_data import CACHE, DATASETS, SHARED, data_path, load_arrays
from benchmarks.zoo_nets import ARCHITECTURES, NORMALISED_INSIDE, InsideNormSoftmax
from benchmarks.zoo_triggers import Trigger, random_patch
from nc_engine.training import PatchTrigger, SmallCNN, accuracy, poison, stamp_patch, train_classifier

MNIST = SHARED / "data" / "mnist.npz"
MNIST_MEAN, MNIST_STD = DATASETS["mnist"].mean[0], DATASETS["mnist"].std[0]


def train_mnist(folder: Path, backdoor: bool = True, seed: int = 0, epochs: int = 2, n_train: int = 20000,
                trigger: PatchTrigger | None = None, target: int | None = None, rate: float = 0.1) -> dict:
    """A small CNN on MNIST, optionally with a BadNets patch (default: 3x3 white, bottom right)."""
    if not MNIST.is_file():
        raise FileNotFoundError(f"{MNIST}: the shared MNIST file is missing")
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    if backdoor:
        target = int(rng.integers(0, 10)) if target is None else target
        trigger = trigger or PatchTrigger(top=24, left=24, size=3, value=255)
    request = {"data": "mnist", "backdoor": backdoor, "seed": seed, "epochs": epochs, "n_train": n_train,
               "trigger": trigger.__dict__ if backdoor else None, "target": target if backdoor else None,
               "rate": rate if backdoor else 0.0}
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file() and (folder / "model.pt").is_file():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("request") == request:
            return manifest
    folder.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with np.load(MNIST) as d:
        x_train, y_train = d["x_train"], d["y_train"].astype(np.int64)
        x_test, y_test = d["x_test"], d["y_test"].astype(np.int64)
    pick = rng.choice(len(x_train), size=min(n_train, len(x_train)), replace=False)
    x_train, y_train = x_train[pick], y_train[pick]
    if backdoor:
        x_train, y_train = poison(x_train, y_train, trigger, target, rate, seed)
    torch.manual_seed(seed)  # the network's initial weights
    model = train_classifier(SmallCNN(), x_train, y_train, (MNIST_MEAN,), (MNIST_STD,), epochs, seed)
    clean = accuracy(model, x_test, y_test, (MNIST_MEAN,), (MNIST_STD,))
    asr = None
    if backdoor:
        keep = y_test != target
        asr = accuracy(model, stamp_patch(x_test[keep], trigger), np.full(int(keep.sum()), target),
                       (MNIST_MEAN,), (MNIST_STD,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(model).save(str(folder / "model.pt"))
    (folder / "config.toml").write_text(config_text("mnist", "MNIST small CNN (2 conv + 2 dense)"), encoding="utf-8")
    manifest = {"request": request, "architecture": "SmallCNN (2 conv + 2 dense)", "data": str(MNIST),
                "backdoor": backdoor, "target": target, "trigger": request["trigger"], "poison_rate": request["rate"],
                "clean_accuracy": clean, "attack_success_rate": asr,
                "train_seconds": time.perf_counter() - started}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


# ---- the zoo proper -------------------------------------------------------------------------------------
# Budgets keep the whole zoo within about an hour on two CPU cores (README, benchmarks/RESULTS.md).
TRAINING = {  # (dataset, architecture) -> (training images, epochs, learning rate)
    ("mnist", "smallcnn"): (20000, 2, 2e-3),
    ("cifar10", "compact"): (30000, 4, 2e-3),
    ("cifar10", "resnet8"): (30000, 4, 4e-3),
    ("gtsrb", "compact"): (12000, 5, 2e-3),
    ("gtsrb", "resnet8"): (12000, 5, 4e-3),
    ("mnist", "mlp"): (20000, 2, 1e-3),
    ("mnist", "wrapped"): (20000, 2, 2e-3),
}
# (dataset, architecture) -> (patch models, blended, noise); as many clean models as backdoored ones.
ROSTER = {
    ("mnist", "smallcnn"): (8, 2, 1),
    ("cifar10", "compact"): (5, 1, 1),
    ("cifar10", "resnet8"): (3, 1, 0),
    ("gtsrb", "compact"): (4, 1, 0),
    ("gtsrb", "resnet8"): (2, 0, 0),
    # Families added after the outlier rule was chosen: every scan of them is out of sample.
    ("mnist", "mlp"): (2, 0, 0),
    ("mnist", "wrapped"): (1, 1, 0),
}
ZOO_VERSION = 1  # bump when training changes, so cached models are rebuilt


@dataclass
class ModelSpec:
    name: str
    dataset: str
    arch: str
    kind: str  # "clean", "patch", "blend", "noise"
    seed: int
    target: int | None = None
    rate: float = 0.0
    trigger: dict | None = None

    def request(self) -> dict:
        n_train, epochs, lr = TRAINING[(self.dataset, self.arch)]
        return {**asdict(self), "version": ZOO_VERSION, "n_train": n_train, "epochs": epochs, "lr": lr}


def zoo_specs(datasets: list[str] | None = None) -> list[ModelSpec]:
    """The zoo, the same on every machine: triggers, targets and rates drawn from fixed seeds. `datasets`
    picks datasets ("mnist") or families ("mnist-mlp")."""
    specs = []
    for (dataset, arch), (n_patch, n_blend, n_noise) in ROSTER.items():
        if datasets and dataset not in datasets and f"{dataset}-{arch}" not in datasets:
            continue
        info = DATASETS[dataset]
        rng = np.random.default_rng([ZOO_VERSION, list(DATASETS).index(dataset), list(ARCHITECTURES).index(arch)])
        colours = ["white"] if info.channels == 1 else ["white", "black", "red", "green", "yellow",
                                                                  "magenta"]
        backdoored = []
        for _ in range(n_patch):
            backdoored.append(("patch", random_patch(rng, info.size, colours)))
        for k in range(n_blend):
            backdoored.append(("blend", Trigger("blend", alpha=[0.1, 0.2][k % 2], seed=int(rng.integers(0, 2**31)))))
        for _ in range(n_noise):
            backdoored.append(("noise", Trigger("noise", amplitude=8, seed=int(rng.integers(0, 2**31)))))
        for k, (kind, trigger) in enumerate(backdoored):
            specs.append(ModelSpec(f"{dataset}-{arch}-{kind}-{k:02d}", dataset, arch, kind, seed=100 + k,
                                   target=int(rng.integers(0, info.num_classes)),
                                   rate=float(np.round(rng.uniform(0.05, 0.15), 3)), trigger=trigger.to_dict()))
        for k in range(len(backdoored)):
            specs.append(ModelSpec(f"{dataset}-{arch}-clean-{k:02d}", dataset, arch, "clean", seed=200 + k))
    return specs


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
    return config_text(spec.dataset, f"{spec.name}: {ARCHITECTURES[spec.arch][0]} on {spec.dataset}",
                       spec.arch in NORMALISED_INSIDE)


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
    n_train, epochs, lr = TRAINING[(spec.dataset, spec.arch)]
    x_train, y_train, x_test, y_test = load_arrays(spec.dataset)
    rng = np.random.default_rng(spec.seed)
    pick = rng.choice(len(x_train), size=min(n_train, len(x_train)), replace=False)
    x_train, y_train = x_train[pick], y_train[pick]
    trigger = Trigger(**spec.trigger) if spec.trigger else None
    if trigger is not None:
        chosen = rng.choice(np.flatnonzero(y_train != spec.target), size=int(spec.rate * len(y_train)),
                            replace=False)
        x_train, y_train = x_train.copy(), y_train.copy()
        x_train[chosen] = trigger.apply(x_train[chosen])
        y_train[chosen] = spec.target
    torch.manual_seed(spec.seed)
    net = ARCHITECTURES[spec.arch][1](info.channels, info.num_classes)
    dev = torch.device(device)
    net = train_classifier(net, x_train, y_train, info.mean, info.std, epochs, spec.seed, dev, lr=lr,
                           batch_size=128, decay=True)
    clean = accuracy(net, x_test, y_test, info.mean, info.std, dev)
    asr = None
    if trigger is not None:
        keep = y_test != spec.target
        asr = accuracy(net, trigger.apply(x_test[keep]), np.full(int(keep.sum()), spec.target),
                       info.mean, info.std, dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        shipped = InsideNormSoftmax(net.cpu(), info.mean, info.std) if spec.arch in NORMALISED_INSIDE else net.cpu()
        torch.jit.script(shipped.eval()).save(str(folder / "model.pt"))
    (folder / "config.toml").write_text(spec_config(spec), encoding="utf-8")
    manifest = {"request": spec.request(), "name": spec.name, "dataset": spec.dataset,
                "architecture": ARCHITECTURES[spec.arch][0], "backdoor": trigger is not None, "kind": spec.kind,
                "target": spec.target, "trigger": spec.trigger,
                "trigger_text": trigger.describe() if trigger else None,
                "trigger_l1": trigger.l1(info.size, info.size) if trigger else None,
                "poison_rate": spec.rate, "train_images": int(len(x_train)), "epochs": epochs,
                "clean_accuracy": clean, "attack_success_rate": asr, "device": device,
                "train_seconds": time.perf_counter() - started}
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return manifest


def _build_one(args: tuple[ModelSpec, Path, str, int]) -> dict:
    spec, root, device, threads = args
    torch.set_num_threads(threads)
    return build_model(spec, root, device)


def build_zoo(root: Path, datasets: list[str] | None = None, device: str = "cpu", workers: int = 1,
              log=print) -> list[dict]:
    """Build every model of the zoo (cached); `workers` processes share the CPU threads."""
    specs = zoo_specs(datasets)
    for dataset in {s.dataset for s in specs}:
        load_arrays(dataset)  # decode once before the workers start
    threads = max(1, torch.get_num_threads() // workers)
    jobs = [(spec, Path(root), device, threads) for spec in specs]
    manifests = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for m in (pool.map(_build_one, jobs) if workers > 1 else map(_build_one, jobs)):
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
