"""The batched search is the sequential search, G at a time."""

import threading

import numpy as np
import torch
from torch import nn

from nc_engine.detectors.neural_cleanse.schedule import ScheduleRules
from nc_engine.detectors.neural_cleanse.search import Job, SearchSettings, _SlotState, search_triggers


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(1 * 8 * 8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def run(group_size: int, jobs, steps=12):
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    outcomes, stats = {}, {}
    settings = SearchSettings(ScheduleRules(patience=2), batch_size=16, max_steps=steps)
    images, stopped = search_triggers(
        tiny_model(),
        x,
        jobs,
        settings,
        group_size,
        threading.Event(),
        lambda s, n: stats.setdefault((s.job.label, s.job.trial), []).append((s.loss, s.l1, s.attack_acc)),
        lambda o: outcomes.__setitem__((o.job.label, o.job.trial), o),
    )
    return outcomes, stats, images, stopped


def test_batched_and_sequential_follow_the_same_trajectory():
    jobs = [Job(label, 0, 100 + label) for label in range(4)] + [Job(1, 1, 555)]
    seq, seq_stats, seq_images, _ = run(1, jobs)
    bat, bat_stats, bat_images, _ = run(3, jobs)  # 3 slots for 5 jobs: exercises refilling a slot
    assert seq.keys() == bat.keys() == {(j.label, j.trial) for j in jobs}
    assert seq_images == bat_images
    for key in seq:
        np.testing.assert_allclose(np.array(seq_stats[key]), np.array(bat_stats[key]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(seq[key].mask, bat[key].mask, atol=1e-5)
        assert seq[key].steps == bat[key].steps


def test_group_adam_matches_torch_adam_per_row():
    group = _SlotState([1, 4, 4], torch.device("cpu"))
    for seed in (1, 2):
        group.add(Job(0, 0, seed))
    params = [group.raw_mask[i].clone().requires_grad_(True) for i in range(2)]
    opts = [torch.optim.Adam([p], lr=0.1, betas=(0.5, 0.9)) for p in params]
    for step in range(5):
        grads = torch.randn(2, 4, 4, generator=torch.Generator().manual_seed(step))
        group.raw_mask.grad = grads.clone()
        group.raw_pattern.grad = torch.zeros_like(group.raw_pattern)
        group.adam_step(0.1, (0.5, 0.9), 1e-8)
        for i in range(2):
            params[i].grad = grads[i].clone()
            opts[i].step()
    for i in range(2):
        torch.testing.assert_close(group.raw_mask[i], params[i].detach(), rtol=1e-5, atol=1e-6)


def test_stop_event_ends_the_search_without_reporting_unfinished_jobs():
    stop = threading.Event()
    x = torch.rand(64, 1, 8, 8)
    done = []

    def on_step(stats, images):
        if stats.step == 3:
            stop.set()

    settings = SearchSettings(ScheduleRules(), batch_size=16, max_steps=50)
    _, stopped = search_triggers(tiny_model(), x, [Job(0, 0, 1), Job(1, 0, 2)], settings, 2, stop, on_step, done.append)
    assert stopped and done == []


def test_nan_loss_ends_that_search_cleanly_and_keeps_the_others():
    x = torch.rand(64, 1, 8, 8)
    model = tiny_model()
    bad = model[3]
    done = {}

    def poison_label_one(module, inputs, output):
        output = output.clone()
        output[16:32] = output[16:32] * float("nan")  # the second slot's images: NaN gradients too
        return output

    bad.register_forward_hook(poison_label_one)
    settings = SearchSettings(ScheduleRules(), batch_size=16, max_steps=5)
    _, stopped = search_triggers(
        model,
        x,
        [Job(0, 0, 1), Job(1, 0, 2)],
        settings,
        2,
        threading.Event(),
        lambda s, n: None,
        lambda o: done.__setitem__(o.job.label, o),
    )
    assert not stopped and done[1].stop_reason == "nan" and done[1].steps == 0
    assert done[0].stop_reason == "max_steps" and done[0].steps == 5
    assert np.isfinite(done[1].mask).all()  # the kept trigger is the last finite one
