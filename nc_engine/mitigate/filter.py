"""Input filter: score an input by how strongly it excites the units the reversed trigger excites;
the threshold is set on clean held-out inputs at a chosen false-positive rate."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from nc_engine.config.settings import load_config
from nc_engine.data.source import to_input_shape
from nc_engine.detectors.neural_cleanse.asr import predict
from nc_engine.errors import MitigationError
from nc_engine.files import parse_json
from nc_engine.mitigate import events as mev
from nc_engine.mitigate.common import Context, MitigationOptions, Probe, stamp_others
from nc_engine.models.load import load_model
from nc_engine.models.scan_model import ScanModel, resolve_device
from nc_engine.run import events as ev
from nc_engine.run.runfolder import write_json

DETECTOR_KIND = "nc-tui input filter"


class Detector:
    """Per flagged label, the watched units; an input's score is the largest mean z-score over them."""

    def __init__(
        self,
        probe: Probe,
        units: dict[int, list[int]],
        mean: torch.Tensor,
        std: torch.Tensor,
        threshold: float = math.inf,
    ) -> None:
        self.probe, self.units, self.mean, self.std, self.threshold = probe, units, mean, std, threshold

    def scores_of(self, h: torch.Tensor) -> torch.Tensor:
        z = (h - self.mean) / self.std
        return torch.stack([z[:, u].mean(1) for u in self.units.values()]).amax(0)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.scores_of(self.probe.activations(x))

    def to_dict(self, config: str, model: str) -> dict[str, Any]:
        return {
            "kind": DETECTOR_KIND,
            "version": 1,
            "config": config,
            "model": model,
            "layer": self.probe.name,
            "units": {str(k): v for k, v in self.units.items()},
            "mean": self.mean.cpu().tolist(),
            "std": self.std.cpu().tolist(),
            "threshold": self.threshold,
        }


def build_detector(probe: Probe, ctx: Context, x: torch.Tensor, y: torch.Tensor, top_fraction: float) -> Detector:
    h = probe.activations(x)
    # A floor on the spread: near-dead units (std ~0) would turn any flicker into a huge z-score.
    mean, std = h.mean(0), h.std(0).clamp_min(0.1 * float(h.std(0).mean()) + 1e-6)
    k = max(1, round(top_fraction * probe.units))
    units = {}
    for label, trig in ctx.triggers.items():
        gap = probe.activations(stamp_others(x, y, trig, label)).mean(0) - mean  # the paper: most excited units
        units[label] = [int(u) for u in torch.argsort(gap, descending=True)[:k].cpu()]
    return Detector(probe, units, mean, std)


def build_filter(
    ctx: Context, options: MitigationOptions, out: Path, emit: Callable[[ev.Event], None]
) -> dict[str, Any]:
    probe = Probe(ctx.model, options.layer)
    probe.check_final(ctx.x_train)
    emit(mev.Stage(message=f"filter layer: {probe.describe()}"))
    # Half the clean draw picks units and their statistics, the other half sets the threshold;
    # FPR and FNR are then measured on the scan's held-out samples, used by neither.
    half = len(ctx.x_train) // 2
    det = build_detector(probe, ctx, ctx.x_train[:half], ctx.y_train[:half], options.top_fraction)
    calib = det.scores(ctx.x_train[half:])
    det.threshold = float(torch.quantile(calib.float().cpu(), 1 - options.fpr))
    emit(
        mev.Stage(
            message=f"threshold {det.threshold:.3f} at {options.fpr:.0%} false positives on {len(calib)} clean "
            f"images; watching units {det.units}"
        )
    )
    clean_flag = det.scores(ctx.x_eval) > det.threshold
    pred = predict(ctx.model, ctx.x_eval)
    fnr, asr_after = {}, {}
    for label, trig in ctx.triggers.items():
        xs = stamp_others(ctx.x_eval, ctx.y_eval, trig, label)
        flagged = det.scores(xs) > det.threshold
        fnr[label] = float((~flagged).float().mean())
        # what still reaches the model and works: stamped inputs the filter lets through and that hit the label
        asr_after[label] = float(((~flagged) & (predict(ctx.model, xs) == label)).float().mean())
    path = out / "detector.json"
    model_path = str(ctx.cfg.resolve_path(ctx.cfg.model.path))
    write_json(path, det.to_dict(str(ctx.folder.config_path.resolve()), model_path))
    accepted_correct = float(((~clean_flag) & (pred == ctx.y_eval)).float().mean())
    return {
        "after": {"accuracy": accepted_correct, "asr": asr_after},
        "detector": str(path),
        "layer": probe.name,
        "units": det.units,
        "threshold": det.threshold,
        "fpr_target": options.fpr,
        "fpr": float(clean_flag.float().mean()),
        "fnr": fnr,
    }


# ---------------------------------------------------------------- `nc-tui filter DETECTOR IMAGES...`


NOT_A_DETECTOR = "not a detector (expected detector.json from nc-tui mitigate --method filter)"


def _detector_fields(path: Path) -> dict[str, Any]:
    """detector.json's fields, each of the type the filter writes; anything else is one line naming the key."""
    try:
        data = parse_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        raise MitigationError(f"{path}: {NOT_A_DETECTOR}") from None
    if not isinstance(data, dict) or data.get("kind") != DETECTOR_KIND:
        raise MitigationError(f"{path}: {NOT_A_DETECTOR}")
    numbers = (int, float)
    expected = {
        "config": (lambda v: isinstance(v, str) and v != "", "the path of the scan's config.toml"),
        "layer": (lambda v: isinstance(v, str), "a layer name"),
        "units": (lambda v: isinstance(v, dict) and all(isinstance(u, list) for u in v.values()), "label -> units"),
        "mean": (lambda v: isinstance(v, list) and all(isinstance(x, numbers) for x in v), "a list of numbers"),
        "std": (lambda v: isinstance(v, list) and all(isinstance(x, numbers) for x in v), "a list of numbers"),
        "threshold": (lambda v: isinstance(v, numbers) and not isinstance(v, bool), "a number"),
    }
    for key, (fits, what) in expected.items():
        if key not in data or not fits(data[key]):
            raise MitigationError(f"{path}: {key!r} missing or not {what}; {NOT_A_DETECTOR}")
    try:
        data["units"] = {int(k): v for k, v in data["units"].items()}
    except ValueError:
        raise MitigationError(f"{path}: 'units' keys must be labels (integers); {NOT_A_DETECTOR}") from None
    return data


def load_detector(
    path: str | Path, device: str = "cpu", trust_pickle: bool = False
) -> tuple[Detector, ScanModel, list[int]]:
    """The detector and the model it watches. The config it names is a run folder's: its trust_pickle = true
    counts only with `trust_pickle` (the user's say-so) given again."""
    path = Path(path)
    if not path.is_file():
        raise MitigationError(f"{path}: detector file not found")
    data = _detector_fields(path)
    cfg = load_config(data["config"])
    if cfg.model.trust_pickle and not trust_pickle:
        raise MitigationError(
            f"{path}: its config {data['config']} says trust_pickle = true, so loading the model runs code from "
            "the model file; add --trust-pickle if you trust the detector and its model"
        )
    dev = resolve_device(device)
    model = load_model(cfg, dev)
    probe = Probe(model, data["layer"])
    det = Detector(
        probe,
        data["units"],
        torch.tensor(data["mean"], device=dev),
        torch.tensor(data["std"], device=dev),
        float(data["threshold"]),
    )
    return det, model, list(cfg.model.input_shape)


def read_images(paths: list[str | Path], shape: list[int], resize: str = "bilinear") -> torch.Tensor:
    """Image files -> (N, C, H, W) in [0, 1] at the model's input shape."""
    out = []
    for p in paths:
        try:
            with Image.open(p) as img:
                arr = np.asarray(img.convert("L" if shape[0] == 1 else "RGB"), dtype=np.uint8).copy()
        except FileNotFoundError:
            raise MitigationError(f"{p}: image not found") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise MitigationError(f"{p}: not a readable image ({exc})") from None
        t = torch.from_numpy(arr).float() / 255.0
        t = t[None] if t.dim() == 2 else t.permute(2, 0, 1)
        out.append(to_input_shape(t[None], shape, resize)[0])
    return torch.stack(out)


def filter_images(
    detector: str | Path, images: list[str | Path], trust_pickle: bool = False
) -> list[tuple[str, float, bool]]:
    """(path, score, triggered) for each image."""
    if not images:
        raise MitigationError("nc-tui filter: expected one or more IMAGE files")
    det, _, shape = load_detector(detector, trust_pickle=trust_pickle)
    x = read_images(images, shape)
    scores = det.scores(x.to(det.mean.device)).cpu().tolist()
    return [(str(p), s, s > det.threshold) for p, s in zip(images, scores, strict=True)]
