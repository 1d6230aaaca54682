"""Unlearning (the paper's main repair): fine-tune on clean data, part of it stamped with the reversed
triggers but keeping its true label, so the model learns the trigger means nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from nc_engine.detectors.neural_cleanse.asr import clean_accuracy
from nc_engine.detectors.neural_cleanse.trigger import stamp
from nc_engine.mitigate import events as mev
from nc_engine.mitigate.common import Context, MitigationOptions, evaluate, save_repaired
from nc_engine.models.load import load_model
from nc_engine.models.scan_model import ScanModel
from nc_engine.run import events as ev


def shifted(t: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """t (..., H, W) moved by (dy, dx) pixels; what moves in is zero (no wrap-around)."""
    if dy == 0 and dx == 0:
        return t
    h, w = t.shape[-2:]
    p = max(abs(dy), abs(dx))
    padded = F.pad(t, (p, p, p, p))
    return padded[..., p - dy : p - dy + h, p - dx : p - dx + w]


def stamp_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    triggers: dict[int, tuple[torch.Tensor, torch.Tensor]],
    fraction: float,
    gen: torch.Generator,
    jitter: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp about `fraction` of the images, each with one flagged label's trigger, and return the batch
    and the label whose trigger each image got (-1: none).

    An image whose true label is the flagged label is never stamped with that label's trigger: kept
    with its true label it would teach the backdoor again (IBM ART gets this wrong). With `jitter`, each
    stamp moves by up to that many pixels: the reversed trigger only approximates the real one, and
    unlearning its exact pixels alone leaves the real trigger partly working."""
    labels = torch.tensor(list(triggers), dtype=torch.long)
    n, k = len(x), len(labels)
    chosen = torch.rand(n, generator=gen) < fraction
    pick = torch.randint(0, k, (n,), generator=gen)
    y_cpu = y.detach().cpu()
    clash = labels[pick] == y_cpu
    if k > 1:  # move a clashing image to another flagged label's trigger
        pick[clash] = (pick[clash] + torch.randint(1, k, (int(clash.sum()),), generator=gen)) % k
    else:
        chosen &= ~clash
    applied = torch.where(chosen, labels[pick], torch.full((n,), -1))
    shift = torch.randint(-jitter, jitter + 1, (n, 2), generator=gen)
    out = x.clone()
    for label, (mask, pattern) in triggers.items():
        for dy, dx in {tuple(v) for v in shift[applied == label].tolist()}:
            sel = (applied == label) & (shift[:, 0] == dy) & (shift[:, 1] == dx)
            sel = sel.to(x.device)
            out[sel] = stamp(x[sel], shifted(mask, dy, dx), shifted(pattern, dy, dx))
    return out, applied


LR_BACKOFFS = 3  # halvings of the learning rate tried after the first fine-tuning ruined clean accuracy


def _fine_tune(
    ctx: Context, options: MitigationOptions, lr: float, emit: Callable[[ev.Event], None]
) -> tuple[ScanModel, int]:
    """A fresh copy of the scanned model fine-tuned at `lr` (same seed each time); returns it and the
    number of stamped images it saw."""
    model = load_model(ctx.cfg, ctx.device)  # a second copy: ctx.model stays the original
    for p in model.net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam([p for p in model.net.parameters()], lr=lr)
    gen = torch.Generator().manual_seed(options.seed)
    n = len(ctx.x_train)
    batches = (n + options.batch_size - 1) // options.batch_size
    stamped = 0
    for epoch in range(options.epochs):
        model.train()
        order = torch.randperm(n, generator=gen).to(ctx.device)
        for b, idx in enumerate(order.split(options.batch_size)):
            x, applied = stamp_batch(
                ctx.x_train[idx], ctx.y_train[idx], ctx.triggers, options.stamp_fraction, gen, options.jitter
            )
            stamped += int((applied >= 0).sum())
            opt.zero_grad()
            loss = F.cross_entropy(model(x), ctx.y_train[idx])
            loss.backward()
            opt.step()
            if (b + 1) % max(1, batches // 10) == 0 or b + 1 == batches:
                emit(mev.TrainProgress(epoch=epoch + 1, batch=b + 1, batches=batches, loss=float(loss.detach())))
    model.eval()
    return model, stamped


def unlearn(ctx: Context, options: MitigationOptions, out: Path, emit: Callable[[ev.Event], None]) -> dict[str, Any]:
    """Fine-tune; while clean accuracy falls more than max_accuracy_drop, halve the learning rate and start
    again from the scanned model (LR_BACKOFFS times at most). A model that still falls too far is not
    saved: calling a ruined model "repaired" is worse than no repair."""
    n = len(ctx.x_train)
    emit(
        mev.Stage(
            message=f"fine-tuning {options.epochs} epoch(s) on {n} clean images, {options.stamp_fraction:.0%} "
            f"stamped with the reversed trigger of label(s) {', '.join(map(str, ctx.labels))} "
            "(true labels kept)"
        )
    )
    before = clean_accuracy(ctx.model, ctx.x_eval, ctx.y_eval)  # the same images as the report's table
    attempts: list[dict[str, Any]] = []
    lr = options.lr
    for attempt in range(LR_BACKOFFS + 1):
        model, stamped = _fine_tune(ctx, options, lr, emit)
        after = evaluate(model, ctx)
        drop = before - after["accuracy"]
        attempts.append({"lr": lr, "accuracy": after["accuracy"], "drop": drop})
        if drop <= options.max_accuracy_drop:
            break
        if attempt < LR_BACKOFFS:
            emit(
                mev.Stage(
                    message=f"clean accuracy fell {drop:.1%} points with lr {lr:g} (limit "
                    f"{options.max_accuracy_drop:.0%}): again from the scanned model with lr {lr / 2:g}"
                )
            )
            lr /= 2
    result: dict[str, Any] = {
        "after": after,
        "train_images": n,
        "stamped_images": stamped,
        "epochs": options.epochs,
        "lr": lr,
        "attempts": attempts,
        "stamp_fraction": options.stamp_fraction,
        "jitter": options.jitter,
        "accepted": drop <= options.max_accuracy_drop,
    }
    if not result["accepted"]:
        result["rejected"] = (
            f"clean accuracy fell {drop:.1%} points even with lr {lr:g} (limit "
            f"max_accuracy_drop = {options.max_accuracy_drop:.0%}); no repaired model saved"
        )
        emit(ev.ScanWarning(message=result["rejected"]))
        return result
    model_path, config_path = save_repaired(ctx, model.net, out)
    return {**result, "model_path": str(model_path), "config_path": str(config_path)}
