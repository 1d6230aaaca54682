"""TrojanZoo's Neural Cleanse (PyPI `trojanzoo`, module `trojanvision`) on a TorchScript model and an npz of
images, for bench_peer.py. Runs with the peer's own virtual environment's Python, never nc-tui's: it
imports nothing from this repository.

    PEER_PYTHON bench/peer_trojanzoo.py --model model.pt --data data.npz --mean 0.13 --std 0.31 --out r.json

data.npz holds x (N, C, H, W float32 in [0, 1]) and y (N,) int64: the images nc-tui's scan reads. The
defence runs with its own defaults (10 re-mask epochs over the training loader, lr 0.1, init cost 1e-3)
and the batch size trojanvision gives MNIST (512). It reports no verdict of its own, so the paper's rule is
applied to its L1 norms: anomaly index (|L1 - median| / (1.4826 MAD)) above 2, below the median.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import matplotlib
import matplotlib.cm
import numpy as np
import torch

if not hasattr(matplotlib.cm, "get_cmap"):  # trojanvision imports it; matplotlib 3.9 removed it
    matplotlib.cm.get_cmap = matplotlib.colormaps.get_cmap

import trojanvision.environ  # noqa: E402
from trojanvision.attacks import BadNet  # noqa: E402
from trojanvision.datasets.imageset import ImageSet  # noqa: E402
from trojanvision.defenses.backdoor.model_inspection.neural_cleanse import NeuralCleanse  # noqa: E402
from trojanvision.marks import Watermark  # noqa: E402
from trojanvision.models.imagemodel import ImageModel, _ImageModel  # noqa: E402

SEEN = {"images": 0}  # images through the model during the defence


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--mean", type=float, nargs="+", required=True)
    p.add_argument("--std", type=float, nargs="+", required=True)
    p.add_argument("--batch-size", type=int, default=512)  # trojanvision's configs/dataset.yml for mnist
    p.add_argument("--epochs", type=int, default=10)  # NeuralCleanse's defense_remask_epoch default
    p.add_argument("--work", default="peer-work")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    started = time.perf_counter()
    trojanvision.environ.create(device="cpu", seed=0, data_seed=0)
    arrays = np.load(args.data)
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"]).long()
    classes, shape = int(y.max()) + 1, list(x.shape[1:])
    scripted = torch.jit.load(args.model, map_location="cpu").eval()
    mean = torch.tensor(args.mean).view(1, -1, 1, 1)
    std = torch.tensor(args.std).view(1, -1, 1, 1)

    class Data(ImageSet):
        name = "bench"
        num_classes = classes
        data_shape = shape

        def _get_org_dataset(self, mode: str, transform=None, **kwargs):
            return torch.utils.data.TensorDataset(x, y)  # the same images for the search and its ASR

    class Wrapped(_ImageModel):
        """The TorchScript model behind trojanvision's model class, with the scan's normalisation."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.net = scripted

        def forward(self, batch: torch.Tensor, **kwargs) -> torch.Tensor:
            SEEN["images"] += batch.shape[0]
            return self.net((batch - mean) / std)

    dataset = Data(batch_size=args.batch_size, valid_batch_size=args.batch_size, num_workers=0,
                   folder_path=os.path.join(args.work, "data"))  # fmt: skip
    model = ImageModel(name="bench", model=Wrapped, dataset=dataset, folder_path=os.path.join(args.work, "model"))
    mark = Watermark(mark_path="square_white.png", data_shape=shape, mark_height=3, mark_width=3)
    # the attack is a container the defence asks for; original=True: nothing is attacked or loaded
    attack = BadNet(mark=mark, dataset=dataset, model=model, target_class=0, folder_path=f"{args.work}/attack")
    defense = NeuralCleanse(
        attack=attack, original=True, dataset=dataset, model=model, defense_remask_epoch=args.epochs,
        folder_path=f"{args.work}/defense",
    )  # fmt: skip
    ready = time.perf_counter()
    SEEN["images"] = 0
    defense.detect()
    done = time.perf_counter()
    marks = torch.from_numpy(np.load(os.path.join(defense.folder_path, defense.get_filename() + ".npz"))["mark_list"])
    l1 = marks[:, -1].flatten(1).norm(p=1, dim=1)
    median = l1.median()
    mad = 1.4826 * (l1 - median).abs().median()
    index = ((median - l1) / mad).tolist()
    flagged = [k for k in range(classes) if index[k] > 2]
    result = {
        "package": "trojanzoo", "l1": l1.tolist(), "anomaly_index": index, "flagged": flagged,
        "images": SEEN["images"], "detect_seconds": done - ready, "setup_seconds": ready - started,
        "batch_size": args.batch_size, "epochs": args.epochs, "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }  # fmt: skip
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
