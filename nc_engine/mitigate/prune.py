"""Neuron pruning: silence the units of a layer that the reversed trigger excites far more than clean
inputs, in that order, until the trigger stops working or clean accuracy suffers too much."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nc_engine.detectors.neural_cleanse.asr import attack_success_rate, clean_accuracy
from nc_engine.mitigate import events as mev
from nc_engine.mitigate.common import Context, MitigationOptions, Probe, evaluate, save_repaired, stamp_others
from nc_engine.models.load import load_model
from nc_engine.run import events as ev


def rank_units(probe: Probe, ctx: Context, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Units ordered by how much more the reversed triggers excite them than clean inputs (max over labels)."""
    clean = probe.activations(x).mean(0)
    gap = torch.stack(
        [probe.activations(stamp_others(x, y, trig, label)).mean(0) - clean for label, trig in ctx.triggers.items()]
    ).amax(0)
    return torch.argsort(gap, descending=True).cpu().numpy()


def _measurer(
    probe: Probe, ctx: Context, x_val: torch.Tensor, y_val: torch.Tensor
) -> tuple[Callable[[], tuple[float, dict[int, float]]], int]:
    """(clean accuracy and each target's reversed-trigger ASR with the units silenced now, units per step)."""
    if probe.final:  # the layer feeds the output: silencing units only changes the last matrix product
        h_clean = probe.activations(x_val)
        h_stamped = {lb: probe.activations(stamp_others(x_val, y_val, t, lb)) for lb, t in ctx.triggers.items()}

        def head_only() -> tuple[float, dict[int, float]]:
            acc = float((probe.head(h_clean).argmax(1) == y_val).float().mean())
            return acc, {lb: float((probe.head(h).argmax(1) == lb).float().mean()) for lb, h in h_stamped.items()}

        return head_only, 1

    def full_forward() -> tuple[float, dict[int, float]]:
        return clean_accuracy(ctx.model, x_val, y_val), {
            lb: attack_success_rate(ctx.model, x_val, y_val, m.cpu().numpy(), p.cpu().numpy(), lb)
            for lb, (m, p) in ctx.triggers.items()
        }

    return full_forward, max(1, math.ceil(probe.units / 50))


def prune(ctx: Context, options: MitigationOptions, out: Path, emit: Callable[[ev.Event], None]) -> dict[str, Any]:
    probe = Probe(ctx.model, options.layer)
    # Half the clean draw ranks the units, the other half traces the curve and decides when to stop;
    # the reported before/after numbers come from the scan's held-out samples, used by neither.
    half = len(ctx.x_train) // 2
    x_rank, y_rank = ctx.x_train[:half], ctx.y_train[:half]
    x_val, y_val = ctx.x_train[half:], ctx.y_train[half:]
    probe.check_final(x_val)
    emit(mev.Stage(message=f"pruning layer: {probe.describe()}" + ("" if probe.final else " (full forward per step)")))
    order = rank_units(probe, ctx, x_rank, y_rank)
    measure, step = _measurer(probe, ctx, x_val, y_val)
    curve = []
    base_acc = None
    chosen, reason = 0, "all units pruned"
    for k in range(0, probe.units + 1, step):
        saved = probe.silence(order[:k])
        try:
            acc, asr = measure()
        finally:
            probe.restore(saved)
        base_acc = acc if base_acc is None else base_acc
        curve.append({"units": k, "fraction": k / probe.units, "accuracy": acc, "asr": asr})
        emit(mev.PruneStep(units=k, fraction=k / probe.units, accuracy=acc, asr=asr))
        if base_acc - acc > options.max_accuracy_drop:
            reason = f"clean accuracy would fall more than {options.max_accuracy_drop:.0%} points"
            break
        chosen = k
        if all(v < options.target_asr for v in asr.values()):
            reason = f"reversed-trigger ASR below {options.target_asr:.0%}"
            break

    units = [int(u) for u in order[:chosen]]
    emit(mev.Stage(message=f"pruned {chosen} of {probe.units} units ({chosen / probe.units:.0%}): {reason}"))
    model = load_model(ctx.cfg, ctx.device)  # a fresh copy to prune for good and save
    Probe(model, probe.name).silence(units)
    after = evaluate(model, ctx)
    model_path, config_path = save_repaired(ctx, model.net, out)
    return {
        "after": after,
        "model_path": str(model_path),
        "config_path": str(config_path),
        "layer": probe.name,
        "layer_units": probe.units,
        "pruned_units": units,
        "pruned_fraction": chosen / probe.units,
        "stop_reason": reason,
        "curve": curve,
    }
