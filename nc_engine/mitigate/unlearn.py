"""Unlearning (the paper's main repair): fine-tune on clean data, part of it stamped with the reversed
triggers but keeping its true label, so the model learns the trigger means nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .. import events as ev
from ..models import load_model
from ..trigger import stamp
from . import events as mev
from .common import Context, MitigationOptions, evaluate, save_repaired


def stamp_batch(x: torch.Tensor, y: torch.Tensor, triggers: dict[int, tuple[torch.Tensor, torch.Tensor]],
                fraction: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Stamp about `fraction` of the images, each with one flagged label's trigger, and return the batch
    and the label whose trigger each image got (-1: none).

    An image whose true label is the flagged label is never stamped with that label's trigger: kept
    with its true label it would teach the backdoor again (IBM ART gets this wrong)."""
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
    out = x.clone()
    for label, (mask, pattern) in triggers.items():
        sel = (applied == label).to(x.device)
        if bool(sel.any()):
            out[sel] = stamp(x[sel], mask, pattern)
    return out, applied


def unlearn(ctx: Context, options: MitigationOptions, out: Path, emit: Callable[[ev.Event], None]) -> dict[str, Any]:
    model = load_model(ctx.cfg, ctx.device)  # a second copy: ctx.model stays the original
    for p in model.net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.Adam([p for p in model.net.parameters()], lr=options.lr)
    gen = torch.Generator().manual_seed(options.seed)
    n = len(ctx.x_train)
    batches = (n + options.batch_size - 1) // options.batch_size
    stamped = 0
    emit(mev.Stage(f"fine-tuning {options.epochs} epoch(s) on {n} clean images, {options.stamp_fraction:.0%} "
                   f"stamped with the reversed trigger of label(s) {', '.join(map(str, ctx.labels))} "
                   "(true labels kept)"))
    for epoch in range(options.epochs):
        model.train()
        order = torch.randperm(n, generator=gen).to(ctx.device)
        for b, idx in enumerate(order.split(options.batch_size)):
            x, applied = stamp_batch(ctx.x_train[idx], ctx.y_train[idx], ctx.triggers, options.stamp_fraction, gen)
            stamped += int((applied >= 0).sum())
            opt.zero_grad()
            loss = F.cross_entropy(model(x), ctx.y_train[idx])
            loss.backward()
            opt.step()
            if (b + 1) % max(1, batches // 10) == 0 or b + 1 == batches:
                emit(mev.TrainProgress(epoch + 1, b + 1, batches, float(loss)))
    model.eval()
    after = evaluate(model, ctx)
    model_path, config_path = save_repaired(ctx, model.net, out)
    return {"after": after, "model_path": str(model_path), "config_path": str(config_path), "train_images": n,
            "stamped_images": stamped, "epochs": options.epochs, "lr": options.lr,
            "stamp_fraction": options.stamp_fraction}
