"""A search stopped mid-way saves its running slots; continued from them it ends exactly where an
uninterrupted search ends (issue 14, item 2). Tiny linear model: each test takes about a second."""

import threading

import numpy as np
import pytest
import torch
from torch import nn

from nc_engine.detectors.neural_cleanse.schedule import ScheduleRules
from nc_engine.detectors.neural_cleanse.search import Job, SearchSettings, search_triggers
from nc_engine.run.inflight import Carry, CheckpointProblem, SlotCheckpoint
from nc_engine.run.plan import continued_first

JOBS = [Job(label, 0, 100 + label) for label in range(3)] + [Job(1, 1, 555)]
SETTINGS = SearchSettings(ScheduleRules(patience=2, early_stop_patience=6), batch_size=16, max_steps=16)


class CountingModel(nn.Module):
    """A frozen linear classifier that can set `stop` on its n-th forward pass (in the middle of a step)."""

    def __init__(self, stop_at: int | None = None, stop: threading.Event | None = None) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.calls, self.stop_at, self.stop = 0, stop_at, stop

    def forward(self, x):
        self.calls += 1
        if self.stop_at is not None and self.calls == self.stop_at:
            self.stop.set()
        return self.net(x)


def samples():
    return torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def search(jobs, group, stop=None, model=None, carry=None, stop_after_steps=None):
    stop = stop or threading.Event()
    outcomes, steps = {}, []

    def on_step(s, images):
        steps.append(s.step)
        if stop_after_steps is not None and len(steps) == stop_after_steps:
            stop.set()

    _, stopped = search_triggers(
        model or CountingModel(),
        samples(),
        jobs,
        SETTINGS,
        group,
        stop,
        on_step,
        lambda o: outcomes.__setitem__((o.job.label, o.job.trial), o),
        carry,
    )
    return outcomes, stopped


def saving_carry(store, restored=None):
    def save(checkpoints, stopping):  # through the on-disk form, as a resume reads it
        store.update({c.key: SlotCheckpoint.from_arrays(c.to_arrays(), [1, 8, 8]) for c in checkpoints})

    return Carry(dict(restored or {}), save, pytest.fail)


def stop_and_continue(group, stop=None, **stop_how):
    store = {}
    stop = stop or threading.Event()
    first, stopped = search(JOBS, group, stop=stop, carry=saving_carry(store), **stop_how)
    assert stopped and store, "the stop came while searches were running"
    left = continued_first([j for j in JOBS if (j.label, j.trial) not in first], store)
    second, stopped = search(left, group, carry=saving_carry({}, store))
    assert not stopped
    return {**first, **second}, store


@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("how", ["after 7 step events", "in the middle of a step"])
def test_a_stopped_search_continues_to_the_uninterrupted_result(group, how):
    whole, _ = search(JOBS, group)
    if how == "after 7 step events":
        both, store = stop_and_continue(group, stop_after_steps=7)
    else:
        stop = threading.Event()  # forward pass 22 of 4 per step: the 2nd mini-batch of step 6
        both, store = stop_and_continue(group, stop=stop, model=CountingModel(22, stop))
    assert any(c.schedule["steps"] > 0 for c in store.values())
    assert both.keys() == whole.keys()
    for key, out in whole.items():  # same groups, same inputs: the very same floats
        assert both[key].steps == out.steps and both[key].stop_reason == out.stop_reason
        assert both[key].l1_norm == out.l1_norm
        np.testing.assert_array_equal(both[key].mask, out.mask)
        np.testing.assert_array_equal(both[key].pattern, out.pattern)


def saved_one():
    store = {}
    search(JOBS[:2], 2, carry=saving_carry(store), stop_after_steps=6)
    return next(iter(store.values())).to_arrays()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda a: a.pop("m_mask"), "no array 'm_mask'"),
        (lambda a: a.update(raw_mask=a["raw_mask"][:4]), "raw_mask is float32 (4, 8)"),
        (lambda a: a.update(v_pattern=a["v_pattern"].astype(np.float64)), "v_pattern is float64"),
        (lambda a: a.update(v_mask=-a["v_mask"] - 1), "negative"),
        (lambda a: a.update(raw_pattern=a["raw_pattern"] * np.nan), "NaN"),
        (lambda a: a.update(meta=np.frombuffer(b"\xff\xfe", np.uint8)), "not JSON"),
        (lambda a: a.update(meta=np.frombuffer(b'{"version": 1, "label": "x"}', np.uint8)), "'label'"),
        (lambda a: a.update(meta=np.array(["{}"])), "not a UTF-8 JSON record"),
        (lambda a: a.update(best_history=a["best_history"][:-1]), "best_history"),
    ],
)
def test_a_damaged_checkpoint_is_refused_with_what_is_wrong(damage, message):
    arrays = saved_one()
    SlotCheckpoint.from_arrays(arrays, [1, 8, 8])  # the undamaged one reads back
    damage(arrays)
    with pytest.raises(CheckpointProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        SlotCheckpoint.from_arrays(arrays, [1, 8, 8])
    with pytest.raises(CheckpointProblem):
        SlotCheckpoint.from_arrays(saved_one(), [3, 8, 8])  # another input shape


def test_a_checkpoint_for_another_budget_restarts_its_search_with_one_warning():
    store = {}
    search(JOBS[:2], 2, carry=saving_carry(store), stop_after_steps=6)
    store[(0, 0, "trial")].seed += 1  # as if the job's seed had changed
    warned = []
    resumed, _ = search(continued_first(JOBS[:2], store), 2, carry=Carry(dict(store), lambda c, s: None, warned.append))
    whole, _ = search(JOBS[:2], 2)
    assert len(warned) == 1 and "seed" in warned[0] and "starts again" in warned[0]
    assert resumed[(0, 0)].steps == whole[(0, 0)].steps  # it ran from scratch, to the same end


def test_periodic_saves_let_a_killed_search_continue():
    """A process killed outright saves nothing when it dies: the saves made while it ran are what a resume has."""
    store = {}
    carry = saving_carry(store)
    carry.every = 1e-9  # after every step

    def killed(s, images):
        killed.steps += 1
        if killed.steps == 7:
            raise KeyboardInterrupt  # a kill: no stop, no last save

    killed.steps = 0
    with pytest.raises(KeyboardInterrupt):
        search_triggers(CountingModel(), samples(), JOBS, SETTINGS, 3, threading.Event(), killed, lambda o: None, carry)
    assert {c.schedule["steps"] for c in store.values()} == {2}  # the last whole step before the kill
    resumed, _ = search(continued_first(JOBS, store), 3, carry=saving_carry({}, store))
    whole, _ = search(JOBS, 3)
    for key, out in whole.items():
        assert resumed[key].l1_norm == out.l1_norm and resumed[key].steps == out.steps


def test_a_checkpoint_holds_every_field_of_the_schedule():
    """A counter added to CostSchedule must be saved too, or a resumed search would quietly diverge."""
    import dataclasses

    from nc_engine.detectors.neural_cleanse.schedule import CostSchedule
    from nc_engine.run.inflight import SCHEDULE_BOOLS, SCHEDULE_FLOATS, SCHEDULE_INTS

    saved = set(SCHEDULE_INTS + SCHEDULE_BOOLS + SCHEDULE_FLOATS) | {"rules", "best_history"}
    assert saved == {f.name for f in dataclasses.fields(CostSchedule)}
